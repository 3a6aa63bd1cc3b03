"""The persona pages' logic without HTTP: the same problems as `bot personas check`,
preview, diff, save with last-good semantics, versions and rollback, cards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db import Database
from bot.personas import PersonaRegistry, check_paths
from bot.web.dashboard.persona_cards import (
    clean_upload_name,
    export_card_bytes,
    import_upload,
    serve_imported,
)
from bot.web.dashboard.persona_service import PersonaService, parse_history

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
id: tess
name: Tess
description: A test persona.
language: en
system_prompt: |
  You are Tess, talking with {{ user.display_name }}.
lore:
  entries:
    - name: the cat
      keys: [cat]
      text: Tess has a cat called Soot.
"""


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _service(tmp_path: Path, url: str) -> AsyncIterator[PersonaService]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tess.yaml").write_text(GOOD, encoding="utf-8")
    db = await asyncio.to_thread(Database.open, url)
    registry = PersonaRegistry([personas])
    assert await registry.load_all() == []
    svc = PersonaService(registry, db)
    await svc.record(registry.get("tess"))
    yield svc
    await db.aclose()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[PersonaService]:
    """Over SQLite: checks, previews and cards touch the database only to record."""
    async for svc in _service(tmp_path, f"sqlite:///{tmp_path}/bot.db"):
        yield svc


@pytest.fixture
async def stored(tmp_path: Path, database_url: str) -> AsyncIterator[PersonaService]:
    """Over SQLite and PostgreSQL: saving, versions and rollback."""
    async for svc in _service(tmp_path, database_url):
        yield svc


async def test_check_reports_the_same_lines_as_bot_personas_check(
    service: PersonaService, tmp_path: Path
) -> None:
    bad = GOOD.replace("name: Tess", "name: Tess\ntemprature: 2").replace(
        "{{ user.display_name }}", "{{ user.display_name "
    )
    checked = await service.check(bad, "tess")
    assert not checked.ok
    on_disk = tmp_path / "elsewhere" / "personas" / "tess.yaml"
    on_disk.parent.mkdir(parents=True)
    on_disk.write_text(bad, encoding="utf-8")
    expected = [
        str(p).replace(str(on_disk.parent.parent) + "/", "") for p in check_paths([on_disk])
    ]
    assert [p.text for p in checked.problems] == expected
    unknown = next(p for p in checked.problems if p.field == "temprature")
    assert (unknown.line, unknown.column) == (4, 1)
    assert unknown.message.startswith("unknown field;")
    assert any(p.field == "system_prompt" and p.line == 8 for p in checked.problems)


async def test_check_good_text_and_the_id_rules(service: PersonaService) -> None:
    assert (await service.check(GOOD, "tess")).ok
    moved = await service.check(GOOD.replace("id: tess", "id: other"), "tess")
    assert [(p.field, p.line) for p in moved.problems] == [("id", 2)]
    assert "cannot change" in moved.problems[0].message
    taken = await service.check(GOOD, None)
    assert "already exists" in taken.problems[0].text
    assert (await service.check(GOOD.replace("id: tess", "id: newbie"), None)).ok


@pytest.mark.parametrize(
    "text",
    [
        "",
        "- a list",
        "\ud800",
        "a: [" * 10_000,
        "x" * (1024 * 1024 + 1),
        "id: &a [*a]",
        "version: 1\nid: t\nname: T\nsystem_prompt: '{{ \"x\" * 10**9 }}'\n",
        "version: 1\nid: t\nname: T\nsystem_prompt: '{% for i in range(10**8) %}{% endfor %}'\n",
    ],
)
async def test_hostile_text_is_problems_never_an_exception(
    service: PersonaService, text: str
) -> None:
    checked = await service.check(text, None)
    assert not checked.ok and checked.problems
    assert all(p.text.startswith("personas/new.yaml:") for p in checked.problems)


async def test_missing_world_is_a_problem_at_its_line(service: PersonaService) -> None:
    text = GOOD.replace("lore:\n", "lore:\n  worlds: [nowhere]\n")
    checked = await service.check(text, "tess")
    assert [p.field for p in checked.problems] == ["lore.worlds.0"]


async def test_preview_shows_lore_fired_and_tokens(service: PersonaService) -> None:
    history = parse_history("user: hello\nBob (assistant): hi there")
    assert not isinstance(history, str)
    checked, shown = await service.preview(
        GOOD.replace("Soot", "Smudge"), "tess", "how is your cat?", history, user="Ann"
    )
    assert checked.ok and shown is not None
    assert shown["messages"][0]["role"] == "system"
    assert "Ann" in shown["messages"][0]["content"]
    assert shown["messages"][-1]["content"].endswith("how is your cat?")
    assert [f["entry"] for f in shown["lore"]["fired"]] == ["the cat"]
    assert "Smudge" in json.dumps(shown)
    assert shown["prompt_tokens"] > 0
    broken, none = await service.preview("id: [", "tess", "hi", [])
    assert none is None and broken.problems


def test_history_lines_are_bounded_and_explained() -> None:
    assert parse_history("robot: hi") == "history line 1: start it with 'user:' or 'assistant:'"
    assert isinstance(parse_history("user: x\n" * 201), str)
    assert parse_history("") == []


def test_diff_marks_added_and_removed_lines() -> None:
    lines = PersonaService.diff("a\nb\nc\n", "a\nB\nc\nd\n")
    assert lines is not None
    kinds = [(d.kind, d.text) for d in lines]
    assert ("removed", "b") in kinds and ("added", "B") in kinds and ("added", "d") in kinds
    assert kinds[0][0] == "hunk"
    assert PersonaService.diff("same", "same") == []
    assert PersonaService.diff("x\n" * 20_001, "") is None


async def test_save_serves_the_new_version_and_records_it(stored: PersonaService) -> None:
    path = stored.path_for("tess")
    text, base = await stored.editor_text("tess")
    assert base == _hash(GOOD)
    new = text.replace("Soot", "Pepper")
    saved = await stored.save("tess", new, base)
    assert saved.outcome == "saved", saved
    assert (saved.before, saved.after) == (GOOD, new)
    assert path.read_text() == new
    assert "Pepper" in stored.registry.get("tess").source
    versions = await stored.versions("tess")
    assert [v.content_hash for v in versions] == [_hash(new), _hash(GOOD)]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tess")]  # no temp left


async def test_a_bad_version_is_never_written_and_the_last_good_serves(
    stored: PersonaService,
) -> None:
    path = stored.path_for("tess")
    saved = await stored.save("tess", GOOD.replace("{{ user", "{{ user."), _hash(GOOD))
    assert saved.outcome == "problems" and saved.problems
    assert path.read_text() == GOOD
    assert stored.registry.get("tess").content_hash == _hash(GOOD)


async def test_a_file_changed_meanwhile_is_a_conflict(service: PersonaService) -> None:
    path = service.path_for("tess")
    path.write_text(GOOD.replace("Tess has", "Tess had"), encoding="utf-8")
    saved = await service.save("tess", GOOD.replace("Soot", "Pip"), _hash(GOOD))
    assert saved.outcome == "conflict" and "changed since you opened it" in saved.message
    assert "Tess had" in path.read_text()


async def test_rollback_serves_an_old_version(stored: PersonaService) -> None:
    new = GOOD.replace("Soot", "Pepper")
    assert (await stored.save("tess", new, _hash(GOOD))).outcome == "saved"
    back = await stored.rollback("tess", _hash(GOOD), _hash(new))
    assert back.outcome == "saved" and back.after == GOOD
    assert stored.registry.get("tess").content_hash == _hash(GOOD)
    assert (await stored.version("tess", "../../etc")) is None
    missing = await stored.rollback("tess", "0" * 64, _hash(GOOD))
    assert missing.outcome == "problems"


async def test_new_persona_is_written_beside_the_others(stored: PersonaService) -> None:
    text = GOOD.replace("id: tess", "id: newbie")
    saved = await stored.save(None, text, "")
    assert saved.outcome == "saved" and saved.before is None
    assert stored.path_for("newbie") == stored.registry.dirs[0] / "newbie.yaml"
    assert stored.registry.get("newbie").persona.name == "Tess"
    again = await stored.save(None, text, "")
    assert again.outcome == "problems"


async def test_card_import_and_export_round_trip(service: PersonaService) -> None:
    card = await export_card_bytes(service, "tess", "png")
    assert card.filename == "tess.png" and card.body.startswith(b"\x89PNG")
    for fmt in ("json", "charx"):
        assert (await export_card_bytes(service, "tess", fmt)).body
    with pytest.raises(KeyError):
        await export_card_bytes(service, "tess", "exe")
    # The card comes back as the same id: replacing it needs force.
    refused = await import_upload(service, "tess.png", card.body, may_write=lambda k, i: True)
    assert refused.error == (
        "tess.png: out: personas/tess.yaml exists (choose to replace files that exist)"
    )
    # Under another name (and without our extension) it is a new persona.
    json_card = json.loads((await export_card_bytes(service, "tess", "json")).body)
    json_card["data"]["name"] = "Zoë Two"
    json_card["data"]["extensions"].pop("personabot", None)
    body = json.dumps(json_card).encode()
    denied = await import_upload(service, "z.json", body, may_write=lambda k, i: False)
    assert "may not change persona 'zoe-two'" in denied.error
    done = await import_upload(service, "../../z.json", body, may_write=lambda k, i: True)
    assert not done.error, done.error
    assert [(i.kind, i.id, i.before) for i in done.items] == [("persona", "zoe-two", None)]
    assert await serve_imported(service, done) == []
    assert service.registry.get("zoe-two").persona.name == "Zoë Two"


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("evil.exe", b"x", "expected a .png, .json or .charx card"),
        ("empty.png", b"", "the file is empty"),
        ("bad.png", b"\x89PNG\r\n\x1a\nnope", "bad.png: "),
        ("bad.json", b"{" * 100, "bad.json: "),
        ("bad.charx", b"PK\x03\x04garbage", "bad.charx: "),
    ],
)
async def test_bad_uploads_are_one_line_and_write_nothing(
    service: PersonaService, name: str, data: bytes, error: str
) -> None:
    before = sorted(p.name for p in service.registry.dirs[0].iterdir())
    outcome = await import_upload(service, name, data, may_write=lambda k, i: True)
    assert error in outcome.error and "\n" not in outcome.error
    assert "/tmp" not in outcome.error
    assert sorted(p.name for p in service.registry.dirs[0].iterdir()) == before


def test_upload_names_are_cleaned() -> None:
    assert clean_upload_name("../../etc/passwd") == "passwd"
    assert clean_upload_name("C:\\x\\card 1.png") == "card-1.png"
    assert clean_upload_name(None) == "card"
    assert clean_upload_name("...") == "card"


async def test_shipped_personas_check_clean(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    registry = PersonaRegistry([personas])
    await registry.load_all()
    svc = PersonaService(registry)
    for loaded in svc.serving():
        text, _ = await svc.editor_text(loaded.persona.id)
        assert (await svc.check(text, loaded.persona.id)).ok


async def test_preview_counts_with_the_configured_tokenizer(
    service: PersonaService, tiny_model_dir: Path
) -> None:
    service.tokenizer = str(tiny_model_dir)

    async def approximate(loaded: object) -> object:
        from bot.llm.tokens import ApproxTokenCounter

        return ApproxTokenCounter()  # a local model before its first turn

    service.tokens_for = approximate  # type: ignore[assignment]
    checked, shown = await service.preview(GOOD, "tess", "hello", [])
    assert checked.ok and shown is not None
    assert shown["tokenizer"] == str(tiny_model_dir)
    assert shown["prompt_tokens"] > 0


async def test_a_folder_that_cannot_be_written_is_a_message(
    stored: PersonaService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.web.dashboard import persona_service

    def refuse(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(persona_service, "_write_atomically", refuse)
    saved = await stored.save("tess", GOOD.replace("Soot", "Pip"), _hash(GOOD))
    assert saved.outcome == "problems"
    assert saved.message == "cannot write personas/tess.yaml: Permission denied"
    assert stored.registry.get("tess").content_hash == _hash(GOOD)


async def test_a_charx_upload_replaces_its_persona_only_with_force(service: PersonaService) -> None:
    charx = await export_card_bytes(service, "tess", "charx")
    assert charx.body.startswith(b"PK")
    kept = await import_upload(service, "tess.charx", charx.body, may_write=lambda k, i: True)
    assert "exists" in kept.error
    replaced = await import_upload(
        service, "tess.charx", charx.body, may_write=lambda k, i: True, force=True
    )
    assert not replaced.error, replaced.error
    [item] = replaced.items
    assert (item.kind, item.id, item.before) == ("persona", "tess", GOOD)
    assert await serve_imported(service, replaced) == []
    served = service.registry.get("tess")
    assert served.persona.name == "Tess" and "Soot" in served.source
