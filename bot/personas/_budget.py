"""What one render of a persona template may spend, and what it has spent.

`RenderLimits` are the bounds; a `Budget` counts one render against them and
raises `RenderLimitExceeded` past one. The budget of the render in progress lives
in a context variable (`current_budget()`), which is how the sandbox's operations,
filters and loop guards find it: renders in different threads never share one.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

__all__ = [
    "Budget",
    "RenderLimitExceeded",
    "RenderLimits",
    "current_budget",
    "deep_size",
    "is_int",
    "width",
]


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """What one render of one template may spend.

    Real persona templates use a tiny fraction of each (a few hundred steps, a few
    thousand characters, microseconds); the limits exist for hostile ones.
    """

    #: CPU seconds of the rendering thread; the hard stop for whatever the other
    #: limits let through. CPU time, not wall-clock, so that a busy machine, other
    #: threads holding the GIL or a stalled process do not fail a template that
    #: renders in microseconds when it gets to run.
    max_seconds: float = 0.5
    #: Wall-clock seconds, the backstop for a render whose thread gets so little CPU
    #: that its CPU budget would take too long to run out.
    max_wall_seconds: float = 2.0
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

    __slots__ = ("cpu_deadline", "deadline", "depth", "limits", "loops", "steps", "work")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        # A budget is made and spent on one thread (the render's), so the thread's
        # own CPU clock measures what this render has cost.
        self.cpu_deadline = time.thread_time() + limits.max_seconds
        self.deadline = time.monotonic() + limits.max_wall_seconds
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
        # The thread's CPU clock costs a system call (~0.5 µs): read every 16th step,
        # each of which is itself bounded by the value limits.
        if not self.steps & 15 and time.thread_time() > self.cpu_deadline:
            raise RenderLimitExceeded(
                f"the template takes longer than {self.limits.max_seconds:g} s to render"
            )
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"the template did not finish rendering within {self.limits.max_wall_seconds:g} s"
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
        if isinstance(value, str | bytes | list | tuple | dict | set | frozenset | Namespace):
            size = len(value) if isinstance(value, str | bytes) else deep_size(value, self)
            if size > self.limits.max_value_chars:
                raise RenderLimitExceeded(
                    f"a value of more than {self.limits.max_value_chars} characters or items "
                    "(nested values counted each time they occur)"
                )
            self.spend(size)
        elif isinstance(value, int) and value.bit_length() > self.limits.max_int_bits:
            raise RenderLimitExceeded(f"a number of more than {self.limits.max_int_bits} bits")
        return value

    def text_size(self, values: Iterable[Any]) -> int:
        """Characters that writing each of `values` as text may take (`ascii()` is at
        least as long as `str()` and `repr()`), stopping past the value limit."""
        total = 0
        for value in values:
            self.step()
            total += len(value) if isinstance(value, str) else len(ascii(value))
            if total > self.limits.max_value_chars:
                break
        return total

    def check_size(self, size: int, what: str) -> None:
        """Refuse, before it runs, an operation that would make `size` characters."""
        if size > self.limits.max_value_chars:
            raise RenderLimitExceeded(
                f"{what} would make {size} characters or items; the limit is "
                f"{self.limits.max_value_chars}"
            )


def deep_size(value: Any, budget: Budget) -> int:
    """Characters and items of `value`, nested values counted each time they occur
    (as `str()` would write them: `[s] * 99999` is 99999 times `s`), counting no
    further than just past the budget's value limit."""
    limit = budget.limits.max_value_chars
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += max(len(item), 1)
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 1
        if total > limit:
            break
    return total


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "persona_render_budget", default=None
)


def current_budget() -> Budget:
    """The budget of the render in progress; refuses when there is none."""
    budget = _CURRENT.get()
    if budget is None:
        # Only `Budget.active()` renders; compile-time folding must not evaluate either.
        raise SecurityError("persona templates render only within a render budget")
    return budget


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def width(value: Any) -> int:
    """`value` as a width or count when it is an int, else 0 (the call fails by itself)."""
    return value if is_int(value) else 0
