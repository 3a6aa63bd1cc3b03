"""YAML with positions: compose the node tree, check it, and find a value's line.

PyYAML's `compose` keeps a start mark (0-based line and column) on every node, which
is what turns a pydantic error location like `("sampling", "temperature")` into a
line an editor can jump to. The checks here cover what YAML itself lets through:
duplicate keys (the last one silently wins) and aliases that expand without bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.personas.problems import ROOT_FIELD, Problem

__all__ = ["Document", "Loc", "field_path", "locate", "parse_yaml"]

Loc = Sequence[str | int]

# A file that expands to more nodes than this through aliases is refused ("billion
# laughs"): everything that later walks or serializes the data would expand it too.
MAX_EXPANDED_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True, slots=True)
class Document:
    """A composed YAML document: its node tree and the plain data built from it."""

    root: Node
    data: Any


def field_path(loc: Loc) -> str:
    """`("examples", 0, 1, "user")` as `examples.0.1.user`; the empty path is `(root)`."""
    return ".".join(str(part) for part in loc) or ROOT_FIELD


def problem_at_mark(path: Path, mark: yaml.Mark | None, loc: Loc, message: str) -> Problem:
    """A problem at a PyYAML mark (0-based), or at 1:1 when there is none."""
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Problem(path, line, column, field_path(loc), message)


def parse_yaml(text: str, path: Path) -> tuple[Document | None, list[Problem]]:
    """Compose and construct one YAML document, reporting every problem found.

    Returns no document when the text cannot be turned into data at all (syntax
    errors, recursive or exploding aliases, unknown tags). Duplicate keys and keys
    that are not text are reported, but the document is still returned, so that
    validation can report the rest of the file too.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return None, [_marked_problem(path, exc)]
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        reason = f"character {exc.character!r} is not allowed in YAML ({exc.reason})"
        return None, [Problem(path, line, column, ROOT_FIELD, reason)]
    except RecursionError:
        return None, [Problem(path, 1, 1, ROOT_FIELD, "the YAML is nested too deeply")]
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        return None, [
            Problem(
                path,
                1,
                1,
                ROOT_FIELD,
                "the file is empty; a persona needs id, name and system_prompt",
            )
        ]
    problems = _check_structure(root, path)
    if problems:
        return None, problems
    problems = _check_keys(root, path)
    constructor = yaml.SafeLoader("")
    try:
        data = constructor.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        return None, [*problems, _marked_problem(path, exc)]
    except RecursionError:
        return None, [Problem(path, 1, 1, ROOT_FIELD, "the YAML is nested too deeply")]
    finally:
        constructor.dispose()
    return Document(root, data), problems


def locate(root: Node, loc: Loc, *, key: bool = False) -> tuple[Node, int]:
    """The node at `loc`, or the deepest existing node on the way, and its depth.

    With `key=True` a location that ends at a mapping key gives the key node rather
    than the value (where an unknown field should be reported). When a key occurs
    more than once the last one is used, as the YAML constructor does.
    """
    node = root
    for depth, part in enumerate(loc):
        child: Node | None = None
        if isinstance(node, MappingNode):
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                    if key and depth == len(loc) - 1:
                        return key_node, depth + 1
                    child = value_node
                    break
        elif (
            isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            return node, depth
        node = child
    return node, len(loc)


def _marked_problem(path: Path, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or "invalid YAML"
    if exc.context:
        message = f"{message} ({exc.context})"
    return problem_at_mark(path, mark, (), f"YAML syntax error: {message}")


def _line_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_structure(root: Node, path: Path) -> list[Problem]:
    """Refuse recursive aliases and alias expansion beyond `MAX_EXPANDED_NODES`."""
    sizes: dict[int, int] = {}
    on_stack: set[int] = set()
    # Iterative post-order walk: the size of a node counts every alias expansion,
    # memoized per node, so an exploding file is measured without being expanded.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            on_stack.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[id(node)] > MAX_EXPANDED_NODES:
                return [
                    problem_at_mark(
                        path,
                        node.start_mark,
                        (),
                        f"aliases expand this document to more than {MAX_EXPANDED_NODES} values",
                    )
                ]
            continue
        if id(node) in sizes:
            continue
        on_stack.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_stack:
                return [
                    problem_at_mark(
                        path, child.start_mark, (), "recursive alias: a value contains itself"
                    )
                ]
            if id(child) not in sizes:
                stack.append((child, False))
    return []


def _check_keys(root: Node, path: Path) -> list[Problem]:
    """A problem at each repeated key of a mapping (YAML lets the last one win) and at
    each key that YAML reads as something other than text (`1:`, `on:`, `null:`)."""
    problems: list[Problem] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag not in (_MERGE_TAG, _STR_TAG):
                    kind = key_node.tag.rpartition(":")[2]
                    problems.append(
                        problem_at_mark(
                            path,
                            key_node.start_mark,
                            (*loc, key_node.value),
                            f"key {key_node.value!r} is read as {kind}, but keys are text; "
                            f"quote it: '{key_node.value}'",
                        )
                    )
                elif isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                    identity = (key_node.tag, key_node.value)
                    if identity in first_line:
                        problems.append(
                            problem_at_mark(
                                path,
                                key_node.start_mark,
                                (*loc, key_node.value),
                                f"duplicate key {key_node.value!r} (first at line "
                                f"{first_line[identity]}); YAML would keep only the last one",
                            )
                        )
                    else:
                        first_line[identity] = key_node.start_mark.line + 1
                    stack.append((value_node, (*loc, key_node.value)))
                else:
                    stack.append((value_node, loc))
        elif isinstance(node, SequenceNode):
            stack.extend((child, (*loc, index)) for index, child in enumerate(node.value))
    return problems
