"""Shared world files: found by id beside the personas, problems at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.personas import PersonaFileError, check_paths, find_persona_files, load_persona

from .conftest import VALID

ENTRY = "entries:\n  - name: {name}\n    keys: [{key}]\n    text: About {name}.\n"


def setup(tmp_path: Path, worlds: dict[str, str], uses: str) -> Path:
    (tmp_path / "worlds").mkdir(exist_ok=True)
    for world_id, body in worlds.items():
        (tmp_path / "worlds" / f"{world_id}.yaml").write_bytes(body.encode("utf-8"))
    persona = tmp_path / "alice.yaml"
    persona.write_text(VALID + f"lore:\n  worlds: {uses}\n", encoding="utf-8")
    return persona


def world(world_id: str, includes: str = "[]") -> str:
    return f"id: {world_id}\nworlds: {includes}\n" + ENTRY.format(name=world_id, key=world_id)


def test_worlds_and_their_includes_load_once_each(tmp_path: Path) -> None:
    path = setup(
        tmp_path,
        {"sea": world("sea", "[shore]"), "shore": world("shore"), "sky": world("sky", "[shore]")},
        "[sea, sky]",
    )
    loaded = load_persona(path)
    assert [w.id for w in loaded.worlds] == ["shore", "sea", "sky"]


def test_world_files_are_not_persona_files(tmp_path: Path) -> None:
    path = setup(tmp_path, {"sea": world("sea")}, "[sea]")
    files, problems = find_persona_files([tmp_path])
    assert files == [path] and problems == []
    assert check_paths([tmp_path]) == []


@pytest.mark.parametrize(
    ("worlds", "uses", "where", "says"),
    [
        ({}, "[nowhere]", ("alice.yaml", 8, 12, "lore.worlds.0"), "no world 'nowhere'"),
        (
            {"a": world("a", "[b]"), "b": world("b", "[a]")},
            "[a]",
            ("b.yaml", 2, 10, "worlds.0"),
            "worlds include each other: a → b → a",
        ),
        ({"a": world("a", "[a]")}, "[a]", ("a.yaml", 2, 10, "worlds.0"), "a → a"),
        (
            {"a": "id: b\n" + ENTRY.format(name="x", key="x")},
            "[a]",
            ("a.yaml", 1, 5, "id"),
            "its id is 'b'",
        ),
        (
            {"a": "id: a\nentries:\n  - keys: ['/(a+)+$/']\n    text: t\n"},
            "[a]",
            ("a.yaml", 3, 12, "entries.0.keys.0"),
            "takes too long",
        ),
        ({"a": "id: a\nentries: [\n"}, "[a]", ("a.yaml", None, None, "(root)"), ""),
    ],
)
def test_world_problems_point_at_their_line(
    tmp_path: Path,
    worlds: dict[str, str],
    uses: str,
    where: tuple[str, int | None, int | None, str],
    says: str,
) -> None:
    path = setup(tmp_path, worlds, uses)
    with pytest.raises(PersonaFileError) as info:
        load_persona(path)
    [problem] = info.value.problems
    name, line, column, field = where
    assert problem.path.name == name and problem.field == field
    if line is not None:
        assert (problem.line, problem.column) == (line, column)
    assert says in problem.message
    assert check_paths([path])  # `bot personas check` reports it too


def test_a_world_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = setup(tmp_path, {}, "[bad]")
    (tmp_path / "worlds" / "bad.yaml").write_bytes(b"id: bad\n\xff\xfe")
    with pytest.raises(PersonaFileError) as info:
        load_persona(path)
    assert "not valid UTF-8" in str(info.value)


def test_a_world_file_named_by_itself_is_checked_as_a_world(tmp_path: Path) -> None:
    setup(tmp_path, {"a": world("a", "[b, a]"), "b": world("b", "[zz]"), "ok": world("ok")}, "[]")
    assert check_paths([tmp_path / "worlds" / "ok.yaml"]) == []
    problems = check_paths([tmp_path / "worlds" / "a.yaml"])
    assert [(p.path.name, p.line, p.column, p.field) for p in problems] == [
        ("a.yaml", 2, 13, "worlds.1"),
        ("b.yaml", 2, 10, "worlds.0"),
    ]
    assert "a → a" in problems[0].message and "no world 'zz'" in problems[1].message
