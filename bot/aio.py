"""asyncio helpers that keep the promises Python 3.11's own break.

`asyncio.wait_for` on Python 3.11 loses a cancellation (CPython gh-86296, fixed in
3.12 by rewriting it on `asyncio.timeout`): when the task that awaits it is
cancelled in the same loop iteration as the awaited thing finishes, `wait_for`
returns the result as if nothing happened. A loop around it then runs on after it
was told to stop. That is how a Discord typing indicator, cancelled at the end of a
turn just as its request came back, went on sending for good, and the turn that
waited for it to end held its chat's lane for ever. The project bans
`asyncio.wait_for` (ruff's banned-api) in favour of `wait_for` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """Await `aw` for at most `timeout` seconds (None: no limit) and return its result.

    Raises `TimeoutError` when the time runs out (a coroutine or future `aw` is
    cancelled first, as with `asyncio.wait_for`). A cancellation of the calling task
    always propagates as `CancelledError`, even one that arrives as `aw` finishes;
    its result is then dropped, as the caller asked to stop.

    Unlike `asyncio.wait_for` a coroutine runs in the calling task (no task of its
    own), so context variables it sets are the caller's.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    async with asyncio.timeout(timeout):
        result = await aw
    if task is not None and task.cancelling() > before:
        # Asked to stop while `aw` was finishing: its value must not let the caller
        # carry on as if it had not been cancelled.
        raise asyncio.CancelledError
    return result
