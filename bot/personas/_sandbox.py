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

import contextlib
import contextvars
import functools
import operator
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from jinja2 import StrictUndefined, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "LOOP_GUARD",
    "VALUE_GUARD",
    "Budget",
    "PersonaSandbox",
    "RenderLimitExceeded",
    "RenderLimits",
    "make_environment",
]

#: Filter names the compiler wraps around loop iterables and `~` expressions.
LOOP_GUARD = "_persona_loop"
VALUE_GUARD = "_persona_value"


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """What one render of one template may spend.

    Real persona templates use a tiny fraction of each (a few hundred steps, a few
    thousand characters, microseconds); the limits exist for hostile ones.
    """

    #: Wall-clock seconds; the hard stop for whatever the other limits let through.
    max_seconds: float = 0.5
    #: Attribute/item accesses, calls, operators, filters, outputs and loop turns.
    max_steps: int = 50_000
    #: Loop iterations, all loops of the render together.
    max_loop_iterations: int = 10_000
    #: Length of `range(...)`.
    max_range: int = 10_000
    #: Characters (or items) of any one value: a string, a list, a dict.
    max_value_chars: int = 100_000
    #: Characters of all values made and all text written, captured text included.
    max_work_chars: int = 2_000_000
    #: Characters of the rendered text.
    max_output_chars: int = 100_000
    #: Calls inside calls: macros calling macros, blocks calling themselves.
    max_call_depth: int = 20
    #: Bits of an integer result.
    max_int_bits: int = 100_000


class RenderLimitExceeded(SecurityError):
    """A render went past one of its `RenderLimits`."""


class Budget:
    """What one render has spent so far; raises `RenderLimitExceeded` past a limit."""

    __slots__ = ("deadline", "depth", "limits", "loops", "steps", "work")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.steps = 0
        self.loops = 0
        self.work = 0
        self.depth = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[Budget]:
        """Make this the budget of the sandbox operations run in the block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def step(self) -> None:
        """One operation: counts it and checks the clock."""
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise RenderLimitExceeded(
                f"the template takes more than {self.limits.max_steps} steps to render"
            )
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"the template takes longer than {self.limits.max_seconds:g} s to render"
            )

    def loop_turn(self, literal_chars: int) -> None:
        """One loop iteration whose body writes `literal_chars` of fixed text."""
        self.step()
        self.loops += 1
        if self.loops > self.limits.max_loop_iterations:
            raise RenderLimitExceeded(
                f"loops run more than {self.limits.max_loop_iterations} times in one render"
            )
        self.spend(literal_chars)

    def spend(self, chars: int) -> None:
        """`chars` more characters made or written."""
        self.work += chars
        if self.work > self.limits.max_work_chars:
            raise RenderLimitExceeded(
                f"the template makes more than {self.limits.max_work_chars} characters "
                "of text and values in one render"
            )

    def value(self, value: Any) -> Any:
        """Check the size of a value an operation made, and count it; returns it."""
        if isinstance(value, str | bytes | list | tuple | dict):
            size = len(value)
            if size > self.limits.max_value_chars:
                raise RenderLimitExceeded(
                    f"a value of {size} characters or items; the limit is "
                    f"{self.limits.max_value_chars}"
                )
            self.spend(size)
        elif isinstance(value, int) and value.bit_length() > self.limits.max_int_bits:
            raise RenderLimitExceeded(f"a number of more than {self.limits.max_int_bits} bits")
        return value

    def check_size(self, size: int, what: str) -> None:
        """Refuse, before it runs, an operation that would make `size` characters."""
        if size > self.limits.max_value_chars:
            raise RenderLimitExceeded(
                f"{what} would make {size} characters or items; the limit is "
                f"{self.limits.max_value_chars}"
            )


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "persona_render_budget", default=None
)


def _budget() -> Budget:
    budget = _CURRENT.get()
    if budget is None:
        # Only `Budget.active()` renders; compile-time folding must not evaluate either.
        raise SecurityError("persona templates render only within a render budget")
    return budget


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _width(value: Any) -> int:
    return value if _is_int(value) else 0


# -- operators ----------------------------------------------------------------------

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}

_SEQUENCE = (str, bytes, list, tuple)

# `%` conversions with a `*` or a six-digit width or precision, mapping keys included.
_HUGE_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")
_HUGE_NUMBER = re.compile(r"\d{6,}")


def _check_percent(fmt: str) -> None:
    if _HUGE_PERCENT.search(fmt):
        raise RenderLimitExceeded("'%' formatting with a huge or '*' width is not allowed")


def _check_format_spec(fmt: str) -> None:
    """Refuse `str.format` fields with nested (computed) or huge widths."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # format() itself raises the clearer error
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or _HUGE_NUMBER.search(spec)):
            raise RenderLimitExceeded(
                "format() with a computed or huge width or precision is not allowed"
            )


def _check_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    limits = budget.limits
    if op == "%" and isinstance(left, str):
        _check_percent(left)
    elif op in ("*", "**") and _is_int(left) and _is_int(right):
        if op == "**":
            bits = abs(left).bit_length() * right if abs(left) > 1 and right > 0 else 0
        else:
            bits = abs(left).bit_length() + abs(right).bit_length()
        if bits > limits.max_int_bits:
            raise RenderLimitExceeded(
                f"the result of '{op}' would have more than {limits.max_int_bits} bits"
            )
    elif op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCE) and _is_int(times):
                budget.check_size(len(seq) * times, "repetition")
    elif op == "+" and isinstance(left, _SEQUENCE) and isinstance(right, _SEQUENCE):
        budget.check_size(len(left) + len(right), "'+'")


# -- methods of data values -----------------------------------------------------------

_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find",
        "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal",
        "isdigit", "isidentifier", "islower", "isnumeric", "isprintable", "isspace",
        "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition",
        "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
        "swapcase", "title", "upper", "zfill",
    }
)  # fmt: skip
_DATETIME_METHODS = frozenset(
    {
        "ctime", "date", "dst", "isocalendar", "isoformat", "isoweekday", "replace",
        "strftime", "time", "timestamp", "timetz", "toordinal", "tzname", "utcoffset",
        "weekday",
    }
)  # fmt: skip
#: The methods a template may call on a value of each type; a data type that is not
#: listed has no callable methods. Jinja's own objects (loop, cycler, macros) are not
#: data and keep theirs.
_SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_METHODS),
    (bool, frozenset()),
    (int, frozenset({"bit_length"})),
    (float, frozenset({"is_integer"})),
    (list, frozenset({"count", "index"})),
    (tuple, frozenset({"count", "index"})),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (datetime, _DATETIME_METHODS),
    (date, _DATETIME_METHODS & frozenset(dir(date))),
    (clock_time, _DATETIME_METHODS & frozenset(dir(clock_time))),
    (timedelta, frozenset({"total_seconds"})),
)
_DATA_TYPES = (
    str, bytes, bytearray, int, float, complex, list, tuple, dict, set, frozenset,
    date, clock_time, timedelta, types.SimpleNamespace,
)  # fmt: skip
_METHOD_TYPES = (
    types.MethodType,
    types.BuiltinMethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def _method_allowed(obj: Any, attr: str, value: Any) -> bool:
    if not isinstance(value, _METHOD_TYPES):
        return True
    owner = getattr(value, "__self__", obj)
    if not isinstance(owner, _DATA_TYPES) and not isinstance(obj, _DATA_TYPES):
        return True
    for kind, names in _SAFE_METHODS:
        if isinstance(owner, kind):
            return attr in names
    return False


def _check_str_method(budget: Budget, text: str, name: str, args: tuple[Any, ...]) -> Any:
    """Pre-check a call of a `str` method that can grow its text; returns the
    arguments to call it with (`join` gets its items as a list)."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        budget.check_size(_width(args[0]), f"str.{name}")
    elif name == "expandtabs":
        tab = _width(args[0]) if args else 8
        budget.check_size(len(text) + text.count("\t") * tab, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            hits = text.count(old) if old else len(text) + 1
            if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
                hits = min(hits, args[2])
            budget.check_size(len(text) + hits * len(new), "str.replace")
    elif name == "join" and args:
        items = _materialize(budget, args[0])
        size = sum(len(i) for i in items if isinstance(i, str))
        budget.check_size(size + len(text) * max(len(items) - 1, 0), "str.join")
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        _check_format_spec(text)
    return args


def _materialize(budget: Budget, iterable: Any) -> list[Any]:
    """The items of `iterable` as a list, a step per item, refused past the size limit."""
    if isinstance(iterable, str | list | tuple | dict | range):
        budget.check_size(len(iterable), "a sequence")
        return list(iterable)
    items: list[Any] = []
    for item in iterable:
        budget.step()
        items.append(item)
        budget.check_size(len(items), "a sequence")
    return items


# -- globals and filters ---------------------------------------------------------------


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    _budget().check_size(len(numbers), "range()")
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
    budget = _budget()
    budget.step()
    return _CountedIterator(budget, iterable, literal_chars)


@pass_context
def _value_guard(context: Context, value: Any) -> Any:
    budget = _budget()
    budget.step()
    return budget.value(value)


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _pre_center(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    budget.check_size(_width(_arg(args, kwargs, 1, "width", 80)), "center")


def _pre_indent(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    width = _arg(args, kwargs, 1, "width", 4)
    pad = len(width) if isinstance(width, str) else _width(width)
    budget.check_size(len(text) + (text.count("\n") + 1) * pad, "indent")


def _pre_format(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    _check_percent(str(args[0]))


def _pre_replace(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    old, new = str(_arg(args, kwargs, 1, "old", "")), str(_arg(args, kwargs, 2, "new", ""))
    hits = text.count(old) if old else len(text) + 1
    count = _arg(args, kwargs, 3, "count", None)
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    budget.check_size(len(text) + hits * len(new), "replace")


def _pre_join(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    items = _materialize(budget, args[0])
    args[0] = items
    separator = str(_arg(args, kwargs, 1, "d", ""))
    size = sum(len(i) for i in items if isinstance(i, str))
    budget.check_size(size + len(separator) * max(len(items) - 1, 0), "join")


def _pre_wordwrap(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    width = _arg(args, kwargs, 1, "width", 79)
    wrap = _arg(args, kwargs, 3, "wrapstring", None)
    if _is_int(width) and width > 0 and isinstance(wrap, str):
        lines = len(text) // width + text.count("\n") + 1
        budget.check_size(len(text) + lines * len(wrap), "wordwrap")


def _pre_items(name: str, index: int, keyword: str) -> Callable[..., None]:
    def check(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
        budget.check_size(_width(_arg(args, kwargs, index, keyword, 0)), name)

    return check


def _pre_sum(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    start = _arg(args, kwargs, 2, "start", 0)
    if not isinstance(start, int | float):
        raise RenderLimitExceeded("sum() adds numbers only")


def _pre_round(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    if abs(_width(_arg(args, kwargs, 1, "precision", 0))) > 100:
        raise RenderLimitExceeded("round() to more than 100 digits is not allowed")


_PRE_CHECKS: dict[str, Callable[[Budget, list[Any], dict[str, Any]], None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "format": _pre_format,
    "replace": _pre_replace,
    "join": _pre_join,
    "wordwrap": _pre_wordwrap,
    "batch": _pre_items("batch", 1, "linecount"),
    "slice": _pre_items("slice", 1, "slices"),
    "sum": _pre_sum,
    "round": _pre_round,
}

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
    pre = _PRE_CHECKS.get(name)

    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
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

    intercepted_binops = frozenset(_BINOPS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.step()
        _check_binop(budget, operator, left, right)
        return budget.value(_BINOPS[operator](left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = _budget()
        budget.step()
        value = super().getitem(obj, argument)
        return budget.value(value) if isinstance(argument, slice) else value

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return super().is_safe_attribute(obj, attr, value) and _method_allowed(obj, attr, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(budget, owner, getattr(target, "__name__", ""), args)
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
    budget = _budget()
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
