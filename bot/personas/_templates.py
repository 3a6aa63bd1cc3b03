"""Compiling persona templates into bounded ones, and what is wrong with a template.

Persona files are edited by people and reloaded while the bot runs, so their
templates are untrusted code. Compiling one never raises anything but
`TemplateRefused` (with the template line): the text is measured before Jinja
parses it (length, nesting of brackets and blocks, runs of unary operators) and
the parsed tree before it is turned into Python (depth), so neither Jinja's
recursive parser and code generator nor Python's compiler meets a tree deep enough
to fail. The compiled template loops only through a guard that counts every
iteration (`bot.personas._sandbox`), and renders only within a budget.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.visitor import NodeTransformer

from bot.personas._budget import Budget, RenderLimitExceeded, RenderLimits
from bot.personas._sandbox import LOOP_GUARD, VALUE_GUARD, iterate_output, make_environment

__all__ = [
    "MAX_BLOCK_DEPTH",
    "MAX_BRACKET_DEPTH",
    "MAX_TEMPLATE_CHARS",
    "MAX_TREE_DEPTH",
    "TEMPLATE_VARIABLES",
    "BoundedTemplate",
    "RenderFailure",
    "TemplateIssue",
    "TemplateRefused",
    "check_template",
    "compile_template",
]

#: The names a persona template may use, besides Jinja's own globals (range, dict, ...).
TEMPLATE_VARIABLES = frozenset(
    {"persona", "user", "platform", "now", "date", "time", "weekday", "timezone", "is_direct"}
)

#: A template longer than this is refused (a system prompt is a few thousand).
MAX_TEMPLATE_CHARS = 100_000
#: Brackets (`(`, `[`, `{`) inside brackets inside one tag.
MAX_BRACKET_DEPTH = 20
#: Blocks (`{% for %}`, `{% if %}`, `{% macro %}`, ...) inside blocks.
MAX_BLOCK_DEPTH = 10
#: Unary operators in a row (`not not -x`).
MAX_UNARY_RUN = 10
#: Levels of the parsed template: expressions in expressions in blocks.
MAX_TREE_DEPTH = 60

_BLOCK_TAGS = frozenset(
    {"for", "if", "macro", "call", "filter", "block", "with", "autoescape", "set"}
)
_OPENERS = {"lparen": "rparen", "lbracket": "rbracket", "lbrace": "rbrace"}
_UNARY = frozenset({"sub", "add"})

# Configured once here and never changed afterwards: it holds no per-bot state (the
# budget of a render lives in a context variable), so every registry and renderer in
# the process can share it.
_ENVIRONMENT = make_environment()

_ALLOWED_NAMES = TEMPLATE_VARIABLES | frozenset(_ENVIRONMENT.globals)


@dataclass(frozen=True, slots=True)
class TemplateIssue:
    """Something wrong with a template, at a 1-based line of the template text."""

    line: int
    message: str


class TemplateRefused(Exception):
    """A template that cannot be compiled; `.issue` says why and where.

    `limit` is true when it is refused for its size or nesting (or a feature that is
    not available), not for a mistake in its syntax.
    """

    def __init__(self, issue: TemplateIssue, *, limit: bool = False) -> None:
        self.issue = issue
        self.limit = limit
        super().__init__(issue.message)


class RenderFailure(Exception):
    """A render that failed; `.line` is the template line, when known.

    `limit` is true when the render went past a bound (time, steps, size), and
    `security` when the sandbox refused an operation.
    """

    def __init__(self, message: str, line: int | None, *, security: bool, limit: bool) -> None:
        self.message = message
        self.line = line
        self.security = security
        self.limit = limit
        super().__init__(message)


class BoundedTemplate:
    """A compiled persona template; `render` is the only way to run it."""

    __slots__ = ("_template",)

    def __init__(self, template: Template) -> None:
        self._template = template

    def render(self, variables: Mapping[str, Any], limits: RenderLimits) -> str:
        """The rendered text, within `limits`; raises `RenderFailure` and nothing else.

        Blocking and CPU-bound for at most about `limits.max_seconds` of CPU (and
        `limits.max_wall_seconds` of wall-clock): async callers run it in a thread.
        """
        budget = Budget(limits)
        try:
            with budget.active():
                return iterate_output(self._template.generate(variables), budget)
        except RenderLimitExceeded as exc:
            raise RenderFailure(str(exc), _template_line(exc), security=True, limit=True) from None
        except SecurityError as exc:
            raise RenderFailure(str(exc), _template_line(exc), security=True, limit=False) from None
        except TemplateError as exc:
            message = exc.message or type(exc).__name__
            raise RenderFailure(message, _template_line(exc), security=False, limit=False) from None
        except RecursionError as exc:
            raise RenderFailure(
                "the template nests too deeply", _template_line(exc), security=True, limit=True
            ) from None
        except MemoryError as exc:
            raise RenderFailure(
                "the template needs too much memory", _template_line(exc), security=True, limit=True
            ) from None
        except Exception as exc:
            # Operations inside the template (`{{ 1/0 }}`, `{{ 'a' + 1 }}`) raise plain
            # Python errors; they are the template's fault, whatever their type.
            raise RenderFailure(
                f"{type(exc).__name__}: {exc}", _template_line(exc), security=False, limit=False
            ) from None


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry the template's line.
    line = getattr(exc, "lineno", None)
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if isinstance(line, int) and line > 0 else None


@lru_cache(maxsize=256)
def compile_template(source: str) -> BoundedTemplate:
    """The compiled template for `source`, compiled once per distinct text.

    Raises `TemplateRefused` (and nothing else) for text that cannot be compiled or
    is too large or too deeply nested. The cache is keyed by the template text, so a
    persona version compiles its templates once (at load, by the checks) and every
    later turn reuses them; a hot-reloaded version gets its own entry.
    """
    tree = _parse(source)
    _check_tree_depth(tree)
    try:
        tree = _Guard().visit(tree)
        tree.set_environment(_ENVIRONMENT)
        code = _ENVIRONMENT.compile(tree)
        template = _ENVIRONMENT.template_class.from_code(
            _ENVIRONMENT, code, _ENVIRONMENT.make_globals(None), None
        )
    except TemplateSyntaxError as exc:
        raise TemplateRefused(TemplateIssue(exc.lineno, _syntax_message(exc))) from None
    except TemplateRefused:
        raise
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError):
        # The checks above keep trees far from these; never let one escape as a traceback.
        raise TemplateRefused(
            TemplateIssue(1, "the template is too complex to compile"), limit=True
        ) from None
    return BoundedTemplate(template)


def _syntax_message(exc: TemplateSyntaxError) -> str:
    return f"Jinja2 syntax error: {exc.message or 'invalid template'}"


def _parse(source: str) -> nodes.Template:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRefused(
            TemplateIssue(1, f"the template is longer than {MAX_TEMPLATE_CHARS} characters"),
            limit=True,
        )
    try:
        _check_nesting(source)
        return _ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(TemplateIssue(exc.lineno, _syntax_message(exc))) from None
    except (RecursionError, MemoryError):
        raise TemplateRefused(
            TemplateIssue(1, "the template nests too deeply"), limit=True
        ) from None


def _check_nesting(source: str) -> None:
    """Refuse deep nesting from the token stream, which Jinja produces without recursion."""
    stack: list[str] = []
    blocks = 0
    unary = 0
    tokens = iter(_ENVIRONMENT.lexer.tokenize(source))
    for token in tokens:
        kind = token.type
        if kind in _OPENERS:
            stack.append(_OPENERS[kind])
            if len(stack) > MAX_BRACKET_DEPTH:
                _refuse(token.lineno, f"brackets nest more than {MAX_BRACKET_DEPTH} deep")
        elif stack and kind == stack[-1]:
            stack.pop()
        if kind in _UNARY or (kind == "name" and token.value == "not"):
            unary += 1
            if unary > MAX_UNARY_RUN:
                _refuse(token.lineno, f"more than {MAX_UNARY_RUN} operators in a row")
        elif kind not in ("whitespace",):
            unary = 0
        if kind == "block_begin":
            blocks = _block_tag(tokens, token.lineno, blocks)


def _block_tag(tokens: Iterator[Any], line: int, depth: int) -> int:
    """The block depth after the tag that starts at the next token of `tokens`."""
    name_token = next(tokens, None)
    if name_token is None or name_token.type != "name":
        return depth
    name = str(name_token.value)
    if name.startswith("end"):
        return max(depth - 1, 0)
    if name not in _BLOCK_TAGS:
        return depth
    if name == "set":
        # `{% set x = 1 %}` is a statement; `{% set x %}...{% endset %}` a block.
        for token in tokens:
            if token.type == "assign":
                return depth
            if token.type == "block_end":
                break
    if depth + 1 > MAX_BLOCK_DEPTH:
        _refuse(line, f"blocks nest more than {MAX_BLOCK_DEPTH} deep")
    return depth + 1


def _refuse(line: int, message: str) -> None:
    raise TemplateRefused(
        TemplateIssue(line, f"the template is too deeply nested: {message}"), limit=True
    )


def _check_tree_depth(tree: nodes.Template) -> None:
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            _refuse(
                getattr(node, "lineno", 1) or 1,
                f"an expression more than {MAX_TREE_DEPTH} levels deep",
            )
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


class _Guard(NodeTransformer):
    """Routes every loop, every `~` and every literal list, tuple and dict through
    the budget's guards."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise TemplateRefused(
                TemplateIssue(
                    node.lineno, "recursive loops are not available in persona templates"
                ),
                limit=True,
            )
        self.generic_visit(node)
        literal = nodes.Const(_literal_chars(node.body), lineno=node.lineno)
        node.iter = nodes.Filter(
            node.iter, LOOP_GUARD, [literal], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        return self._checked(node)

    # Literals nest values without an operation: `[l, l, l, l]` four times over.
    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._checked(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._checked(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":  # an assignment target: `{% for k, v in ... %}`
            return node
        return self._checked(node)

    def _checked(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, VALUE_GUARD, [], [], None, None, lineno=node.lineno)


def _literal_chars(body: list[nodes.Node]) -> int:
    """Characters of fixed text a loop body writes per turn (inner loops count their own)."""
    total = 0
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For):
            stack.extend(node.iter_child_nodes())
    return total


def check_template(source: str) -> list[TemplateIssue]:
    """Every issue found in `source` without rendering it, ordered by line.

    Finds what cannot be compiled (syntax, size, nesting), unknown variables,
    attribute or item names starting with `_` (the sandbox refuses them at render
    time), and include/import/extends (there is nothing to include from).
    """
    try:
        compile_template(source)
        tree = _parse(source)
    except TemplateRefused as exc:
        return [exc.issue]
    issues: list[TemplateIssue] = []
    for loader_node in tree.find_all(
        (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
    ):
        kind = type(loader_node).__name__.lower()
        issues.append(
            TemplateIssue(loader_node.lineno, f"'{kind}' is not available in persona templates")
        )
    for name, lineno in _private_names(tree):
        issues.append(
            TemplateIssue(lineno, f"'{name}' is not allowed: names starting with '_' are private")
        )
    try:
        # Generates code, which is also where unknown filters and tests are found.
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:
        issues.append(TemplateIssue(exc.lineno, exc.message or "invalid template"))
        undeclared = set()
    unknown = undeclared - _ALLOWED_NAMES
    for name_node in tree.find_all(nodes.Name):
        if name_node.name in unknown:
            unknown.discard(name_node.name)
            issues.append(
                TemplateIssue(
                    name_node.lineno,
                    f"unknown variable '{name_node.name}'; "
                    f"available: {', '.join(sorted(TEMPLATE_VARIABLES))}",
                )
            )
    return sorted(issues, key=lambda issue: issue.line)


def _private_names(tree: nodes.Template) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        elif (
            isinstance(node, nodes.Filter)
            and node.name == "attr"
            and node.args
            and isinstance(node.args[0], nodes.Const)
        ):
            name = node.args[0].value
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            found.append((name, node.lineno))
    return found
