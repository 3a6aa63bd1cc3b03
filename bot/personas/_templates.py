"""The sandbox persona templates are parsed, checked and rendered in.

Persona files are edited by people and reloaded while the bot runs, so their
templates are untrusted code: they run in Jinja2's immutable sandbox, with
undefined names as errors and without autoescaping (the output is plain text for a
model, not HTML). `check_template` finds at load time what the sandbox would refuse
at render time, so a moderator learns about it from `bot personas check`, not from a
failed turn.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TEMPLATE_VARIABLES", "TemplateIssue", "check_template", "compile_template"]

#: The names a persona template may use, besides Jinja's own globals (range, dict, ...).
TEMPLATE_VARIABLES = frozenset(
    {"persona", "user", "platform", "now", "date", "time", "weekday", "timezone", "is_direct"}
)

# Bounds for the operators that can allocate without limit in one expression
# (`'x' * 10**12`, `2 ** 10**10`, `'%0999999999d' % 1`): the sandbox itself only
# guards attribute access.
_MAX_INT_BITS = 100_000
_MAX_REPEAT_LEN = 100_000
_HUGE_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d{6,})|%[-#0 +]*\d*\.(\*|\d{6,})")

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(op: str, left: Any, right: Any) -> None:
    if op == "%":
        if isinstance(left, str) and _HUGE_FORMAT_WIDTH.search(left):
            raise SecurityError("'%' formatting with a huge or '*' width is not allowed")
    elif _is_int(left) and _is_int(right):
        if op == "**":
            bits = abs(left).bit_length() * right if abs(left) > 1 and right > 0 else 0
        else:
            bits = abs(left).bit_length() + abs(right).bit_length()
        if bits > _MAX_INT_BITS:
            raise SecurityError(f"the result of '{op}' would have more than {_MAX_INT_BITS} bits")
    elif op == "*":
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and _is_int(times)
            if sized and len(seq) * times > _MAX_REPEAT_LEN:
                raise SecurityError(f"repetition longer than {_MAX_REPEAT_LEN} items")


class _PersonaSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*`, `**` and `%` bounded.

    Intercepting the operators also stops Jinja from folding constant expressions at
    compile time, which would otherwise evaluate `{{ 2 ** 10**10 }}` while loading.
    """

    intercepted_binops = frozenset(_BINOPS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator in _BINOPS:
            _check_binop(operator, left, right)
            return _BINOPS[operator](left, right)
        return super().call_binop(context, operator, left, right)


def _at_render_time(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a filter Jinja cannot evaluate while compiling.

    Jinja folds filters with constant arguments at compile time, so
    `{{ 'x'|center(10**9) }}` would allocate while a file is being checked; a
    filter that takes the render context can only run at render time.
    """
    kind = getattr(func, "jinja_pass_arg", None)

    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        if kind is None:
            return func(*args, **kwargs)
        first = {
            "context": context,
            "eval_context": context.eval_ctx,
            "environment": context.environment,
        }[kind.name]
        return func(first, *args, **kwargs)

    return pass_context(functools.wraps(func)(call))


def _make_environment() -> _PersonaSandbox:
    env = _PersonaSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters = {name: _at_render_time(f) for name, f in env.filters.items()}
    return env


# Configured once here and never changed afterwards: it holds no per-bot state, so
# every registry and renderer in the process can share it.
_ENVIRONMENT = _make_environment()

_ALLOWED_NAMES = TEMPLATE_VARIABLES | frozenset(_ENVIRONMENT.globals)


@lru_cache(maxsize=256)
def compile_template(source: str) -> Template:
    """The compiled template for `source`, compiled once per distinct text.

    The cache is keyed by the template text, so a persona version compiles its
    templates on first use and every later turn reuses them; a hot-reloaded version
    with a changed template gets its own entry and old ones age out.
    """
    return _ENVIRONMENT.from_string(source)


@dataclass(frozen=True, slots=True)
class TemplateIssue:
    """Something wrong with a template, at a 1-based line of the template text."""

    line: int
    message: str


def check_template(source: str) -> list[TemplateIssue]:
    """Every issue found in `source` without rendering it, ordered by line.

    Finds syntax errors, unknown variables, attribute or item names starting with
    `_` (the sandbox refuses them at render time), and include/import/extends (there
    is nothing to include from).
    """
    try:
        tree = _ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        return [TemplateIssue(exc.lineno, f"Jinja2 syntax error: {exc.message}")]
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
