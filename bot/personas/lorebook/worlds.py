"""Shared world files: `personas/worlds/ID.yaml`, lore entries several personas use.

A persona names its worlds in `lore.worlds`; a world may name further worlds. They are
read when the persona is loaded: a world that does not exist, does not validate, or
includes itself through others is a problem at the persona's (or the including
world's) `worlds.N` line, so a bad world is caught where the persona is checked.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from bot.personas._yaml import Loc, field_path, locate, parse_yaml, problem_at_mark
from bot.personas.lorebook.schema import World
from bot.personas.problems import ROOT_FIELD, Problem

__all__ = ["MAX_WORLD_BYTES", "WORLDS_DIR", "check_world", "load_worlds", "world_path"]

#: Where world files live, beside the persona files.
WORLDS_DIR = "worlds"

#: World files larger than this are refused unread.
MAX_WORLD_BYTES = 1024 * 1024

#: Most worlds one persona may pull in, includes counted.
MAX_WORLDS = 64


def world_path(persona_path: Path, world_id: str) -> Path:
    """The file of world `world_id` for a persona file at `persona_path`."""
    return persona_path.parent / WORLDS_DIR / f"{world_id}.yaml"


def check_world(path: Path) -> list[Problem]:
    """Every problem of one world file given by itself (`bot personas check FILE`):
    its own and those of the worlds it includes."""
    world, text, problems = _read_world(path, path.stem)
    if world is None:
        return problems or [Problem(path, 1, 1, ROOT_FIELD, "cannot be read")]
    # Resolved as if a persona beside the worlds directory named it.
    beside = path.parent.parent / path.name
    _, found = load_worlds(beside, text, world.worlds, names_at=(), first=path)
    return found


def load_worlds(
    persona_path: Path,
    source: str,
    ids: tuple[str, ...],
    *,
    names_at: tuple[str, ...] = ("lore",),
    first: Path | None = None,
) -> tuple[tuple[World, ...], list[Problem]]:
    """The worlds a persona file (its `source` text) names, includes first resolved
    depth-first, each once; and the problems found (then the worlds are incomplete).
    `names_at` is where the names are in that file; `first`, the file itself when it is a
    world (so that including itself is a cycle)."""
    loaded: dict[str, World] = {}
    problems: list[Problem] = []
    worlds_dir = persona_path.parent / WORLDS_DIR

    def at(path: Path, text: str, loc: Loc, message: str) -> Problem:
        document, _ = parse_yaml(text, path)
        if document is None:
            return Problem(path, 1, 1, field_path(loc), message)
        node, _ = locate(document.root, loc)
        return problem_at_mark(path, node.start_mark, loc, message)

    def visit(
        path: Path, text: str, loc_prefix: tuple[str, ...], names: tuple[str, ...], chain: list[str]
    ) -> None:
        for i, world_id in enumerate(names):
            loc: tuple[str | int, ...] = (*loc_prefix, "worlds", i)
            if world_id in chain:
                cycle = " → ".join([*chain[chain.index(world_id) :], world_id])
                problems.append(at(path, text, loc, f"worlds include each other: {cycle}"))
                continue
            if world_id in loaded:
                continue
            if len(loaded) >= MAX_WORLDS:
                problems.append(at(path, text, loc, f"more than {MAX_WORLDS} worlds"))
                return
            file = worlds_dir / f"{world_id}.yaml"
            world, world_text, found = _read_world(file, world_id)
            problems.extend(found)
            if world is None:
                if not found:
                    problems.append(
                        at(path, text, loc, f"no world {world_id!r}: {file} does not exist")
                    )
                continue
            visit(file, world_text, (), world.worlds, [*chain, world_id])
            loaded[world_id] = world

    visit(first or persona_path, source, names_at, ids, [first.stem] if first else [])
    return tuple(loaded.values()), problems


def _read_world(file: Path, world_id: str) -> tuple[World | None, str, list[Problem]]:
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_WORLD_BYTES + 1)
    except FileNotFoundError:
        return None, "", []
    except OSError as exc:
        return None, "", [Problem(file, 1, 1, ROOT_FIELD, f"cannot read: {exc.strerror or exc}")]
    if len(data) > MAX_WORLD_BYTES:
        return None, "", [Problem(file, 1, 1, ROOT_FIELD, f"larger than {MAX_WORLD_BYTES} bytes")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, "", [Problem(file, 1, 1, ROOT_FIELD, f"not valid UTF-8: {exc.reason}")]
    document, problems = parse_yaml(text, file)
    if document is None or problems:
        return None, text, problems or [Problem(file, 1, 1, ROOT_FIELD, "empty world file")]
    try:
        world = World.model_validate(document.data)
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            node, _ = locate(document.root, loc)
            out.append(problem_at_mark(file, node.start_mark, loc, error["msg"]))
        return None, text, out
    if world.id != world_id:
        node, _ = locate(document.root, ("id",))
        message = f"the file is {world_id}.yaml but its id is {world.id!r}"
        return None, text, [problem_at_mark(file, node.start_mark, ("id",), message)]
    return world, text, []
