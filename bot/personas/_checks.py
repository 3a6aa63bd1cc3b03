"""What an operation of a persona template would cost, checked before it runs.

Most operations are checked after they run (their inputs are bounded, so their
output is too); these are the ones that could allocate or loop without bound in a
single step: `*`, `**` and `%` widths, string methods that pad or grow, filters
with widths and counts. Methods of data values are allowed from a short list.
"""

from __future__ import annotations

import operator
import re
import string
import types
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from bot.personas._budget import Budget, RenderLimitExceeded, is_int, width

__all__ = [
    "BINOPS",
    "FILTER_PRE_CHECKS",
    "check_binop",
    "check_str_method",
    "materialize",
    "method_allowed",
]


# -- operators ----------------------------------------------------------------------

BINOPS: dict[str, Callable[[Any, Any], Any]] = {
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


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?[a-zA-Z%]")


def _check_percent(budget: Budget, fmt: str, args: Any) -> None:
    """Refuse `fmt % args` past the value limit: widths, and every conversion as
    long as the longest argument (`'%s' * 50000 % ((big,) * 50000)`)."""
    if _HUGE_PERCENT.search(fmt):
        raise RenderLimitExceeded("'%' formatting with a huge or '*' width is not allowed")
    conversions = _PERCENT.findall(fmt)
    if not conversions:
        return
    pads = sum(int(w or 0) + int(p or 0) for w, p in conversions)
    values = (
        args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    )
    longest = max((budget.text_size([v]) for v in values), default=0)
    budget.check_size(len(fmt) + pads + len(conversions) * longest, "'%' formatting")


def _check_format(budget: Budget, fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse `str.format` with nested (computed) or huge widths, or whose fields
    would write more than the value limit."""
    try:
        fields = [f for f in string.Formatter().parse(fmt) if f[1] is not None]
    except ValueError:
        return  # format() itself raises the clearer error
    pads = 0
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or _HUGE_NUMBER.search(spec)):
            raise RenderLimitExceeded(
                "format() with a computed or huge width or precision is not allowed"
            )
        pads += sum(int(n) for n in re.findall(r"\d+", spec or ""))
    values = [*args, *kwargs.values()]
    if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
        values.extend(args[0].values())  # format_map
    longest = max((budget.text_size([v]) for v in values), default=0)
    budget.check_size(len(fmt) + pads + len(fields) * longest, "format()")


def check_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    """Refuse an operator whose result would be past the budget's size limits."""
    limits = budget.limits
    if op == "%" and isinstance(left, str):
        _check_percent(budget, left, right)
    elif op in ("*", "**") and is_int(left) and is_int(right):
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
            if isinstance(seq, _SEQUENCE) and is_int(times):
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


def method_allowed(obj: Any, attr: str, value: Any) -> bool:
    """Whether `value`, got as `obj.attr`, may be called: data values only have the
    methods listed for their type; Jinja's own objects keep theirs."""
    if not isinstance(value, _METHOD_TYPES):
        return True
    owner = getattr(value, "__self__", obj)
    if not isinstance(owner, _DATA_TYPES) and not isinstance(obj, _DATA_TYPES):
        return True
    for kind, names in _SAFE_METHODS:
        if isinstance(owner, kind):
            return attr in names
    return False


def check_str_method(
    budget: Budget, text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Pre-check a call of a `str` method that can grow its text; returns the
    arguments to call it with (`join` gets its items as a list)."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        budget.check_size(width(args[0]), f"str.{name}")
    elif name == "expandtabs":
        tab = width(args[0]) if args else 8
        budget.check_size(len(text) + text.count("\t") * tab, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            hits = text.count(old) if old else len(text) + 1
            if len(args) > 2 and is_int(args[2]) and args[2] >= 0:
                hits = min(hits, args[2])
            budget.check_size(len(text) + hits * len(new), "str.replace")
    elif name == "join" and args:
        items = materialize(budget, args[0])
        size = budget.text_size(items)
        budget.check_size(size + len(text) * max(len(items) - 1, 0), "str.join")
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        _check_format(budget, text, args, kwargs)
    return args


def materialize(budget: Budget, iterable: Any) -> list[Any]:
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


# -- filters ---------------------------------------------------------------------------


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _pre_center(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    budget.check_size(width(_arg(args, kwargs, 1, "width", 80)), "center")


def _pre_indent(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    indent = _arg(args, kwargs, 1, "width", 4)
    pad = len(indent) if isinstance(indent, str) else width(indent)
    budget.check_size(len(text) + (text.count("\n") + 1) * pad, "indent")


def _pre_format(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    _check_percent(budget, str(args[0]), kwargs or tuple(args[1:]))


def _pre_replace(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    old, new = str(_arg(args, kwargs, 1, "old", "")), str(_arg(args, kwargs, 2, "new", ""))
    hits = text.count(old) if old else len(text) + 1
    count = _arg(args, kwargs, 3, "count", None)
    if is_int(count) and count >= 0:
        hits = min(hits, count)
    budget.check_size(len(text) + hits * len(new), "replace")


def _pre_join(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    items = materialize(budget, args[0])
    args[0] = items
    separator = str(_arg(args, kwargs, 1, "d", ""))
    size = budget.text_size(items)
    budget.check_size(size + len(separator) * max(len(items) - 1, 0), "join")


def _pre_wordwrap(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    text = str(args[0])
    columns = _arg(args, kwargs, 1, "width", 79)
    wrap = _arg(args, kwargs, 3, "wrapstring", None)
    if is_int(columns) and columns > 0 and isinstance(wrap, str):
        lines = len(text) // columns + text.count("\n") + 1
        budget.check_size(len(text) + lines * len(wrap), "wordwrap")


def _pre_items(name: str, index: int, keyword: str) -> Callable[..., None]:
    def check(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
        budget.check_size(width(_arg(args, kwargs, index, keyword, 0)), name)

    return check


def _pre_sum(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    start = _arg(args, kwargs, 2, "start", 0)
    if not isinstance(start, int | float):
        raise RenderLimitExceeded("sum() adds numbers only")


def _pre_round(budget: Budget, args: list[Any], kwargs: dict[str, Any]) -> None:
    if abs(width(_arg(args, kwargs, 1, "precision", 0))) > 100:
        raise RenderLimitExceeded("round() to more than 100 digits is not allowed")


FILTER_PRE_CHECKS: dict[str, Callable[[Budget, list[Any], dict[str, Any]], None]] = {
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
