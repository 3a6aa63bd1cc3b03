"""Loading persona files: every problem, at the right file:line:column and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import PersonaError
from bot.personas import PersonaFileError, Problem, check_paths, load_persona, parse_persona
from bot.personas.loader import MAX_FILE_BYTES

from .conftest import VALID, persona_text, sha

Write = Callable[..., Path]


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(PersonaFileError) as info:
        load_persona(path)
    return info.value.problems


def where(problem: Problem) -> tuple[int, int, str]:
    return problem.line, problem.column, problem.field


def test_valid_file_loads_with_hash_and_source(write: Write) -> None:
    path = write("alice.yaml", VALID)
    loaded = load_persona(path)
    assert loaded.persona.id == "alice"
    assert loaded.path == path
    assert loaded.content_hash == sha(VALID)
    assert loaded.source == VALID


def test_problem_str_is_file_line_column_field_message() -> None:
    problem = Problem(Path("p/a.yaml"), 3, 7, "sampling.top_p", "too high")
    assert str(problem) == "p/a.yaml:3:7: sampling.top_p: too high"


def test_persona_file_error_is_a_persona_error(write: Write) -> None:
    path = write("bad.yaml", "id: x\n")
    with pytest.raises(PersonaError):
        load_persona(path)


def test_yaml_syntax_error_at_parser_mark(write: Write) -> None:
    path = write(
        "syntax.yaml",
        """\
        id: alice
        name: Alice
          system_prompt: hi
        """,
    )
    [problem] = problems_of(path)
    assert where(problem) == (3, 16, "(root)")
    assert problem.message == "YAML syntax error: mapping values are not allowed here"
    assert str(problem) == f"{path}:3:16: (root): {problem.message}"


def test_unknown_field_at_its_key_with_suggestion(write: Write) -> None:
    path = write(
        "unknown.yaml",
        VALID
        + """\
sampling:
  temprature: 0.5
""",
    )
    [problem] = problems_of(path)
    assert where(problem) == (8, 3, "sampling.temprature")
    assert "unknown field" in problem.message
    assert "did you mean 'temperature'" in problem.message


def test_wrong_type_at_the_value(write: Write) -> None:
    path = write("type.yaml", VALID + "sampling:\n  max_tokens: lots\n")
    [problem] = problems_of(path)
    assert where(problem) == (8, 15, "sampling.max_tokens")
    assert "valid integer" in problem.message
    assert "'lots'" in problem.message


def test_missing_id_at_the_enclosing_mapping(write: Write) -> None:
    path = write("missing.yaml", "\n# comment\nname: Alice\nsystem_prompt: hi\n")
    [problem] = problems_of(path)
    assert where(problem) == (3, 1, "id")
    assert problem.message == "required field is missing"


def test_missing_field_in_nested_mapping(write: Write) -> None:
    path = write("nested.yaml", VALID + "examples:\n  - - user: hi\n    - {}\n")
    [problem] = problems_of(path)
    assert where(problem) == (9, 7, "examples.0.1")
    assert "exactly one key" in problem.message


def test_bad_id_pattern(write: Write) -> None:
    path = write("badid.yaml", VALID.replace("id: alice", "id: Alice Smith"))
    [problem] = problems_of(path)
    assert where(problem) == (1, 5, "id")


def test_duplicate_key_at_the_second_key(write: Write) -> None:
    path = write("dup.yaml", VALID + "style:\n  tone: calm\n  tone: loud\n")
    [problem] = problems_of(path)
    assert where(problem) == (9, 3, "style.tone")
    assert "duplicate key 'tone' (first at line 8)" in problem.message


def test_yaml_merge_keys_are_not_duplicates(write: Write) -> None:
    path = write(
        "merge.yaml",
        VALID
        + """\
platforms:
  base: &base {mention_only: true, prefix: "!"}
  discord:
    <<: *base
    prefix: "?"
""",
    )
    assert load_persona(path).persona.platforms["discord"] == {"mention_only": True, "prefix": "?"}


def test_template_syntax_error_in_block_at_the_exact_line(write: Write) -> None:
    path = write(
        "tpl.yaml",
        """\
        id: alice
        name: Alice
        system_prompt: |
          line one
          line two {{ user.display_name }
          line three
        """,
    )
    [problem] = problems_of(path)
    assert where(problem) == (5, 3, "system_prompt")
    assert "Jinja2 syntax error" in problem.message
    assert "template line 2" in problem.message


def test_template_syntax_error_in_quoted_greeting_at_the_field(write: Write) -> None:
    path = write("greet.yaml", VALID.replace("greeting: Hi", 'greeting: "{% if %}Hi'))
    path.write_text(path.read_text().replace("!\n", '!"\n'))
    [problem] = problems_of(path)
    assert where(problem) == (6, 11, "greeting")
    assert "Jinja2 syntax error" in problem.message


def test_template_unknown_variable_found_at_load(write: Write) -> None:
    path = write("var.yaml", VALID.replace("user.display_name }}.", "usr.name }}."))
    [problem] = problems_of(path)
    assert where(problem) == (5, 3, "system_prompt")
    assert "unknown variable 'usr'" in problem.message


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "cycler.__init__.__globals__",
        "self.__init__",
        "()|attr('__class__')",
        "user['__class__']",
    ],
)
def test_template_private_names_refused_at_load(write: Write, expression: str) -> None:
    path = write("escape.yaml", VALID.replace("{{ persona.name }}", "{{ " + expression + " }}"))
    [problem] = problems_of(path)
    assert where(problem) == (4, 3, "system_prompt")
    assert "names starting with '_' are private" in problem.message


def test_template_include_refused_at_load(write: Write) -> None:
    path = write("inc.yaml", VALID.replace("{{ persona.name }}", "{% include '/etc/passwd' %}"))
    [problem] = problems_of(path)
    assert "'include' is not available" in problem.message


def test_non_utf8_file_points_at_the_bad_byte(write: Write) -> None:
    path = write("latin1.yaml", "id: alice\nname: Caf\xe9\n".encode("latin-1"))
    [problem] = problems_of(path)
    assert where(problem) == (2, 10, "(root)")
    assert "not valid UTF-8" in problem.message
    assert "0xe9" in problem.message


def test_utf8_bom_is_accepted(write: Write) -> None:
    path = write("bom.yaml", b"\xef\xbb\xbf" + VALID.encode())
    assert load_persona(path).persona.id == "alice"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("- a\n- b\n", "not a list"),
        ("just text\n", "not a str"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
    ],
)
def test_non_mapping_top_level(write: Write, content: str, expected: str) -> None:
    [problem] = problems_of(write("top.yaml", content))
    assert (problem.line, problem.column, problem.field) == (1, 1, "(root)")
    assert expected in problem.message


def test_every_problem_in_a_file_is_reported(write: Write) -> None:
    path = write(
        "many.yaml",
        """\
        id: Not Valid
        name: 42
        colour: blue
        system_prompt: |
          Hello {{ user.display_name }
        sampling:
          temperature: 9
          top_p: 0.5
          top_p: 0.6
        style:
          reply_length: huge
        examples:
          - - assistant: I speak first
            - user: nope
        version: 2
        """,
    )
    problems = problems_of(path)
    assert [where(p) for p in problems] == [
        (1, 5, "id"),
        (2, 7, "name"),
        (3, 1, "colour"),
        (5, 3, "system_prompt"),
        (7, 16, "sampling.temperature"),
        (9, 3, "sampling.top_p"),
        (11, 17, "style.reply_length"),
        (13, 5, "examples.0"),
        (15, 10, "version"),
    ]
    assert "schema version 1" in problems[-1].message
    message = str(PersonaFileError(problems))
    assert message.count(str(path)) == len(problems)


def test_problems_from_yaml_constructor_have_positions(write: Write) -> None:
    path = write("tag.yaml", VALID + "schedule: !!python/object:os.system {}\n")
    [problem] = problems_of(path)
    assert (problem.line, problem.field) == (7, "(root)")
    assert "could not determine a constructor" in problem.message


def test_recursive_alias_refused(write: Write) -> None:
    [problem] = problems_of(write("rec.yaml", VALID + "schedule: &a {x: *a}\n"))
    assert problem.line == 7
    assert "recursive alias" in problem.message


def test_alias_bomb_refused_without_expanding(write: Write) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    [problem] = problems_of(write("bomb.yaml", "schedule:\n  " + "\n  ".join(lines) + "\n"))
    assert "aliases expand" in problem.message


def test_file_too_large_refused_unread(write: Write) -> None:
    path = write("big.yaml", VALID + "# " + "x" * MAX_FILE_BYTES + "\n")
    [problem] = problems_of(path)
    assert "larger than" in problem.message


def test_unreadable_path_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "nope.yaml")
    assert "cannot read" in problem.message


def test_check_paths_reports_duplicate_ids_on_each_file(write: Write, tmp_path: Path) -> None:
    first = write("a/one.yaml", VALID)
    second = write("b/two.yml", "# a copy\n" + VALID)
    problems = check_paths([tmp_path])
    assert [(p.path, p.line, p.column, p.field) for p in problems] == [
        (first, 1, 5, "id"),
        (second, 2, 5, "id"),
    ]
    assert str(second) in problems[0].message
    assert str(first) in problems[1].message


def test_check_paths_walks_dirs_skipping_hidden_and_other_files(
    write: Write, tmp_path: Path
) -> None:
    write("ok.yaml", VALID)
    write("sub/deeper/bad.yml", "id: 1\n")
    write(".hidden.yaml", "broken: [")
    write(".git/x.yaml", "broken: [")
    write("notes.txt", "broken: [")
    problems = check_paths([tmp_path])
    assert {p.path.name for p in problems} == {"bad.yml"}


def test_check_paths_accepts_files_and_reports_missing_paths(write: Write, tmp_path: Path) -> None:
    good = write("good.yaml", VALID)
    problems = check_paths([good, tmp_path / "missing"])
    assert [p.message for p in problems] == ["no such file or directory"]


def test_check_paths_is_quiet_for_valid_files(write: Write, tmp_path: Path) -> None:
    write("a.yaml", persona_text("a"))
    write("b.yaml", persona_text("b"))
    assert check_paths([tmp_path]) == []


def _assert_well_formed(data: bytes) -> None:
    try:
        parse_persona(data, Path("fuzz.yaml"))
    except PersonaFileError as exc:
        text = data.decode("utf-8", errors="replace")
        for problem in exc.problems:
            assert problem.path == Path("fuzz.yaml")
            assert 1 <= problem.line <= text.count("\n") + 2
            assert problem.column >= 1
            assert problem.field
            assert problem.message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_problems_not_crashes(data: bytes) -> None:
    _assert_well_formed(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=len(VALID)),
    st.integers(min_value=0, max_value=5),
    st.text(alphabet=":-[]{}&*!|>'\"#%@ \n\tabc{}0", max_size=8),
)
def test_mangled_personas_give_problems_not_crashes(at: int, cut: int, insert: str) -> None:
    _assert_well_formed((VALID[:at] + insert + VALID[at + cut :]).encode())


@pytest.mark.parametrize(
    ("line", "kind"), [("1: x", "int"), ("on: x", "bool"), ("null: x", "null")]
)
def test_keys_that_yaml_reads_as_non_text_are_reported_at_the_key(
    write: Write, line: str, kind: str
) -> None:
    [problem] = problems_of(write("keys.yaml", VALID + line + "\n"))
    assert (problem.line, problem.column) == (7, 1)
    assert f"is read as {kind}, but keys are text" in problem.message
