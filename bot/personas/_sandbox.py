"""The bounded Jinja2 sandbox persona templates run in.

Jinja2's immutable sandbox stops templates from reaching Python internals, but not
from running long or allocating without bound: `range` loops nest, strings
multiply, `center(10**9)` pads. Here every operation a template can make goes
through a per-render `Budget`:

    attribute and item access, calls, operators   one step each, and the deadline
    every loop iteration                          a step, the loop count, the text
                                                  of the loop body
    every value made (strings, lists, ...)        at most `max_value_chars` long;
                                                  their total is `max_work_chars`
    every `{{ ... }}` written, captured or not    counted into the work too
    calls nested in calls (macros)                at most `max_call_depth`

Operations that could allocate without bound in one step (`*`, `**`, `%` widths,
`center`, `indent`, `replace`, `join`, `format` specs, ...) are checked before they
run; everything else is checked after, which is enough because its inputs are
bounded. Methods of data values are allowed from a short list; a Python thread
cannot be killed, so the deadline is cooperative: every path that can run long
passes a step, and the step checks the clock.

A render happens only inside `Budget.active()`; outside it, every sandbox
operation refuses, so no code path renders a persona template unbounded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import StrictUndefined, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.personas._budget import Budget, RenderLimitExceeded, current_budget
from bot.personas._checks import (
    BINOPS,
    FILTER_PRE_CHECKS,
    check_binop,
    check_str_method,
    method_allowed,
)

__all__ = ["LOOP_GUARD", "VALUE_GUARD", "PersonaSandbox", "iterate_output", "make_environment"]

#: Filter names the compiler wraps around loop iterables and `~` expressions.
LOOP_GUARD = "_persona_loop"
VALUE_GUARD = "_persona_value"


# -- globals and guards ----------------------------------------------------------------


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    current_budget().check_size(len(numbers), "range()")
    return numbers


class _CountedIterator:
    """A loop's iterable: each item is a loop turn of the budget."""

    __slots__ = ("_budget", "_items", "_literal", "_sized")

    def __init__(self, budget: Budget, iterable: Any, literal_chars: int) -> None:
        self._budget = budget
        self._sized = iterable
        self._items = iter(iterable)
        self._literal = literal_chars

    def __iter__(self) -> _CountedIterator:
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self._budget.loop_turn(self._literal)
        return item

    def __len__(self) -> int:
        # `loop.length` asks; without a size, Jinja lists the rest (counted turns).
        return len(self._sized)


@pass_context
def _loop_guard(context: Context, iterable: Any, literal_chars: int = 0) -> Any:
    budget = current_budget()
    budget.step()
    return _CountedIterator(budget, iterable, literal_chars)


@pass_context
def _value_guard(context: Context, value: Any) -> Any:
    budget = current_budget()
    budget.step()
    return budget.value(value)


# -- filters ---------------------------------------------------------------------------

#: Filters without use in a prompt whose cost is hard to bound.
_DROPPED_FILTERS = frozenset({"urlize"})
#: Globals that are not available: `lipsum(n)` writes n paragraphs.
_DROPPED_GLOBALS = frozenset({"lipsum"})


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a filter that counts a step, pre-checks its growth, and checks its value.

    It also takes the render context, which keeps Jinja from folding it with constant
    arguments at compile time (`{{ 'x'|center(10**9) }}` would run while loading).
    """
    kind = getattr(func, "jinja_pass_arg", None)
    pre = FILTER_PRE_CHECKS.get(name)

    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        values = list(args)
        if pre is not None and values:
            pre(budget, values, kwargs)
        if kind is None:
            return budget.value(func(*values, **kwargs))
        first = {
            "context": context,
            "eval_context": context.eval_ctx,
            "environment": context.environment,
        }[kind.name]
        return budget.value(func(first, *values, **kwargs))

    return pass_context(functools.wraps(func)(call))


# -- the environment --------------------------------------------------------------------


class PersonaSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every operation counted against the render's budget."""

    intercepted_binops = frozenset(BINOPS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.step()
        check_binop(budget, operator, left, right)
        return budget.value(BINOPS[operator](left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = current_budget()
        budget.step()
        value = super().getitem(obj, argument)
        return budget.value(value) if isinstance(argument, slice) else value

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return super().is_safe_attribute(obj, attr, value) and method_allowed(obj, attr, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            args = check_str_method(budget, owner, name, args, kwargs)
        budget.depth += 1
        try:
            if budget.depth > budget.limits.max_call_depth:
                raise RenderLimitExceeded(
                    f"calls nest more than {budget.limits.max_call_depth} deep "
                    "(a macro calling itself?)"
                )
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return budget.value(result)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every `{{ ... }}` written, at the top level or captured by a macro or block."""
    budget = current_budget()
    budget.step()
    text = value if isinstance(value, str) else str(value)
    budget.spend(len(text))
    return text


def make_environment() -> PersonaSandbox:
    """A new bounded sandbox: undefined names are errors, no autoescaping (the
    output is plain text for a model, not HTML), every filter bounded."""
    env = PersonaSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        auto_reload=False,
        finalize=_finalize,
        cache_size=0,
    )
    filters: dict[str, Callable[..., Any]] = {
        name: _bounded_filter(name, func)
        for name, func in env.filters.items()
        if name not in _DROPPED_FILTERS
    }
    filters[LOOP_GUARD] = _loop_guard
    filters[VALUE_GUARD] = _value_guard
    env.filters = filters
    for name in _DROPPED_GLOBALS:
        env.globals.pop(name, None)
    env.globals["range"] = _bounded_range
    return env


def iterate_output(chunks: Iterable[str], budget: Budget) -> str:
    """Join a template's output stream, stopping past `max_output_chars`."""
    parts: list[str] = []
    size = 0
    limit = budget.limits.max_output_chars
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RenderLimitExceeded(f"the rendered text is longer than {limit} characters")
        parts.append(chunk)
    return "".join(parts)
