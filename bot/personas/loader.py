"""Loading persona files: bytes → YAML nodes → a validated `Persona`, or every problem.

The loader never stops at the first problem: encoding, YAML syntax, duplicate keys,
schema errors and template errors are all reported as `Problem`s with the line and
column of the offending value, found by walking the composed YAML node tree along
each pydantic error location.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import types
import typing
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode

from bot.personas._sampling import ValidatedAs
from bot.personas._yaml import Loc, field_path, locate, parse_yaml, problem_at_mark
from bot.personas.lorebook.schema import World
from bot.personas.lorebook.worlds import WORLDS_DIR, check_world, load_worlds
from bot.personas.problems import ROOT_FIELD, PersonaFileError, Problem
from bot.personas.render import TrialFailure, trial_render
from bot.personas.schema import TEMPLATE_ERROR, Persona

__all__ = [
    "MAX_FILE_BYTES",
    "LoadedPersona",
    "check_paths",
    "find_persona_files",
    "is_persona_file",
    "load_persona",
    "parse_persona",
    "problem_at",
]

#: Persona files larger than this are refused unread.
MAX_FILE_BYTES = 1024 * 1024

PERSONA_SUFFIXES = frozenset({".yaml", ".yml"})

# YAML 1.1 integers and floats in base 60 ("sexagesimal"): how 22:00 becomes 1320.
_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


@dataclass(frozen=True, slots=True)
class LoadedPersona:
    """One version of a persona: the validated model and the file it came from.

    `content_hash` is the SHA-256 (hex) of the file's raw bytes; together with
    `persona.id` it names this version in storage and in training-data manifests.
    """

    persona: Persona
    path: Path
    content_hash: str
    source: str
    #: The shared world files `persona.lore.worlds` names, read at load.
    worlds: tuple[World, ...] = ()


def is_persona_file(path: Path) -> bool:
    """True for `*.yaml` / `*.yml` files that are not hidden (editor locks, swap files)
    and not shared world files (`worlds/`)."""
    return (
        path.suffix in PERSONA_SUFFIXES
        and not path.name.startswith(".")
        and path.parent.name != WORLDS_DIR
    )


def find_persona_files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """The persona files named by `paths`: files as given, directories searched recursively.

    Hidden files and directories inside a searched directory are skipped. A path
    that does not exist is a problem.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                found
                for found in sorted(path.rglob("*"))
                if found.is_file()
                and is_persona_file(found)
                and not any(part.startswith(".") for part in found.relative_to(path).parts)
            )
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem(path, 1, 1, ROOT_FIELD, "no such file or directory"))
    return list(dict.fromkeys(files)), problems


def load_persona(path: Path) -> LoadedPersona:
    """Read and validate one persona file; raise `PersonaFileError` with every problem.

    Blocking: async callers run it in a thread.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PersonaFileError(
            [Problem(path, 1, 1, ROOT_FIELD, f"cannot read: {reason}")]
        ) from None
    loaded = parse_persona(data, path)
    if not loaded.persona.lore.worlds:
        return loaded
    worlds, problems = load_worlds(path, loaded.source, loaded.persona.lore.worlds)
    if problems:
        raise PersonaFileError(problems)
    return dataclasses.replace(loaded, worlds=worlds)


def parse_persona(data: bytes, path: Path) -> LoadedPersona:
    """Validate the raw bytes of a persona file named `path` (used in problem reports).

    Validation includes the trial: every template is compiled and rendered with
    sample variables under the bounds of every turn (`trial_render`), so a version
    that would fail or run away at render time is never served. Pure: reads
    nothing from disk. Raises `PersonaFileError` listing every problem, and nothing
    else, whatever the bytes.
    """
    try:
        return _parse_persona(data, path)
    except (RecursionError, MemoryError) as exc:
        # The YAML and template checks bound nesting and size well before these; a
        # file must still never become a traceback.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        raise PersonaFileError(
            [Problem(path, 1, 1, ROOT_FIELD, f"the file cannot be read: it is {reason}")]
        ) from None


def _parse_persona(data: bytes, path: Path) -> LoadedPersona:
    if len(data) > MAX_FILE_BYTES:
        raise PersonaFileError(
            [Problem(path, 1, 1, ROOT_FIELD, f"file is larger than {MAX_FILE_BYTES} bytes")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PersonaFileError([_encoding_problem(path, data, exc)]) from None
    document, problems = parse_yaml(text, path)
    if document is None:
        raise PersonaFileError(problems)
    if not isinstance(document.root, MappingNode):
        problems.append(
            problem_at_mark(
                path,
                document.root.start_mark,
                (),
                f"a persona file is a mapping of fields (id: ..., name: ...), "
                f"not {_describe(document.data)}",
            )
        )
        raise PersonaFileError(problems)
    try:
        persona = Persona.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(
            _validation_problem(path, document.root, text, e)
            for e in exc.errors()
            # Keys that are not text were reported while composing, at the key.
            if not (problems and (e["type"] == "invalid_key" or e["loc"][-1:] == ("[key]",)))
        )
        raise PersonaFileError(problems) from None
    if problems:
        raise PersonaFileError(problems)
    failures = trial_render(persona)
    if failures:
        raise PersonaFileError(
            _trial_problem(path, document.root, text, failure) for failure in failures
        )
    return LoadedPersona(persona, path, hashlib.sha256(data).hexdigest(), text)


def _trial_problem(path: Path, root: Node, text: str, failure: TrialFailure) -> Problem:
    loc = (failure.field,)
    node, _ = locate(root, loc)
    problem = problem_at_mark(
        path, node.start_mark, loc, f"fails when rendered with sample values: {failure.message}"
    )
    return _template_problem(problem, node, text, failure.line or 1)


def problem_at(loaded: LoadedPersona, loc: Loc, message: str) -> Problem:
    """A problem about the value at `loc` of a loaded persona, at that value's line."""
    document, _ = parse_yaml(loaded.source, loaded.path)
    if document is None:  # pragma: no cover - a loaded persona parsed once already
        return Problem(loaded.path, 1, 1, field_path(loc), message)
    node, _ = locate(document.root, loc)
    return problem_at_mark(loaded.path, node.start_mark, loc, message)


def check_paths(paths: Iterable[Path]) -> list[Problem]:
    """Every problem in the persona files under `paths`, including ids used twice.

    A persona id defined in more than one file is a problem in each of those files,
    naming the others. Returns problems ordered by file and position; none means
    every file is usable.
    """
    files, problems = find_persona_files(paths)
    by_id: defaultdict[str, list[LoadedPersona]] = defaultdict(list)
    for file in files:
        if file.parent.name == WORLDS_DIR:  # a world file named by itself
            problems.extend(check_world(file))
            continue
        try:
            loaded = load_persona(file)
        except PersonaFileError as exc:
            problems.extend(exc.problems)
        except Exception as exc:  # a bug must not hide the other files' problems
            problems.append(Problem(file, 1, 1, ROOT_FIELD, f"cannot be checked: {exc!r}"))
        else:
            by_id[loaded.persona.id].append(loaded)
    for persona_id, holders in by_id.items():
        if len(holders) < 2:
            continue
        for loaded in holders:
            others = ", ".join(str(o.path) for o in holders if o is not loaded)
            message = f"duplicate persona id {persona_id!r}: also defined in {others}"
            problems.append(problem_at(loaded, ("id",), message))
    return sorted(problems, key=lambda p: p.sort_key)


def _encoding_problem(path: Path, data: bytes, exc: UnicodeDecodeError) -> Problem:
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
    byte = data[exc.start]
    return Problem(
        path,
        line,
        column,
        ROOT_FIELD,
        f"not valid UTF-8 (byte 0x{byte:02x}: {exc.reason}); save the file as UTF-8",
    )


def _validation_problem(path: Path, root: Node, text: str, error: ErrorDetails) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        node, _ = locate(root, loc[:-1])
        return problem_at_mark(path, node.start_mark, loc, "required field is missing")
    if kind == "extra_forbidden":
        node, _ = locate(root, loc, key=True)
        return problem_at_mark(path, node.start_mark, loc, _unknown_field_message(loc))
    node, _ = locate(root, loc)
    problem = problem_at_mark(path, node.start_mark, loc, _message(error) + _base60_hint(node))
    if kind == TEMPLATE_ERROR:
        template_line = int((error.get("ctx") or {}).get("template_line", 1))
        return _template_problem(problem, node, text, template_line)
    return problem


def _template_problem(problem: Problem, node: Node, text: str, template_line: int) -> Problem:
    # In a literal block scalar (`|`) the template's lines are the file's lines, so
    # the problem can point at the exact line; other styles fold or re-flow lines.
    if not (isinstance(node, ScalarNode) and node.style == "|"):
        return problem
    line = node.start_mark.line + 1 + template_line
    lines = text.splitlines()
    if line > len(lines):
        return problem
    content = lines[line - 1]
    column = len(content) - len(content.lstrip(" ")) + 1
    return Problem(problem.path, line, column, problem.field, problem.message)


def _base60_hint(node: Node) -> str:
    """The fix for a value that YAML 1.1 read as a base-60 number (`22:00` → 1320)."""
    if (
        isinstance(node, ScalarNode)
        and node.style is None
        and node.tag in _NUMBER_TAGS
        and _BASE60.match(node.value)
    ):
        return (
            f"; YAML reads an unquoted {node.value} as a number (base 60): quote it, '{node.value}'"
        )
    return ""


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    if error["type"] == "literal_error" and tuple(error["loc"]) == ("version",):
        return f"this bot reads persona schema version 1 (got {error['input']!r})"
    if error["type"].startswith("persona_") or error["type"] == "value_error":
        return message.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        return f"{message} (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    return f"{message} (got {_describe(value)})"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty value"
    return f"a {type(value).__name__} ({value!r:.40})"


def _unknown_field_message(loc: tuple[str | int, ...]) -> str:
    name = str(loc[-1])
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown field"
    allowed = list(model.model_fields)
    hint = difflib.get_close_matches(name, allowed, n=1)
    suggestion = f"did you mean {hint[0]!r}? " if hint else ""
    return f"unknown field; {suggestion}allowed: {', '.join(allowed)}"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` (list indexes skipped)."""
    model: type[BaseModel] | None = Persona
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        hints = [hint.model for hint in info.metadata if isinstance(hint, ValidatedAs)]
        model = hints[0] if hints else _find_model(info.annotation)
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:
        return _find_model(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None
