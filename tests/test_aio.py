"""`bot.aio.wait_for`: asyncio.wait_for's promise, without Python 3.11's lost cancel."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any

import pytest

from bot.aio import wait_for

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")


async def _cancelled_as_it_finishes(waiter: Any) -> asyncio.Task[str]:
    """A task in a loop around `waiter`, cancelled in the same loop iteration as the
    awaited future completes: the race Python 3.11's asyncio.wait_for loses."""
    futures: list[asyncio.Future[None]] = []

    async def request() -> None:
        future = asyncio.get_running_loop().create_future()
        futures.append(future)
        await future

    async def loop() -> str:
        for _ in range(3):
            await waiter(request(), 5)
            await asyncio.sleep(0.01)
        return "carried on after it was cancelled"

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    futures[-1].set_result(None)
    task.cancel()
    for _ in range(10):  # answer whatever later requests it makes
        await asyncio.sleep(0.02)
        if not futures[-1].done():
            futures[-1].set_result(None)
    await asyncio.wait({task}, timeout=1)
    return task


async def test_a_cancel_that_arrives_as_the_awaited_call_ends_is_not_lost() -> None:
    task = await _cancelled_as_it_finishes(wait_for)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="CPython 3.12 fixed asyncio.wait_for")
async def test_python_3_11s_own_wait_for_loses_that_cancel() -> None:
    # Why bot.aio exists (gh-86296): if this ever passes cancelled, the helper can go.
    task = await _cancelled_as_it_finishes(asyncio.wait_for)
    assert not task.cancelled()
    assert task.result() == "carried on after it was cancelled"


async def test_time_running_out_raises_timeout_and_cancels_the_call() -> None:
    ended: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        await wait_for(slow(), 0.05)
    assert ended == ["cancelled"]


async def test_a_result_in_time_and_no_limit() -> None:
    assert await wait_for(asyncio.sleep(0.01, "in time"), 1) == "in time"
    assert await wait_for(asyncio.sleep(0, "unbounded"), None) == "unbounded"
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(7)
    assert await wait_for(future, 0) == 7  # done already: no time needed


async def test_the_call_errors_come_through_as_they_are() -> None:
    async def broken() -> None:
        raise ValueError("from the call")

    with pytest.raises(ValueError, match="from the call"):
        await wait_for(broken(), 1)


async def test_a_cancel_handled_before_does_not_cancel_later_calls() -> None:
    async def cleanup_after_a_cancel() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            # Caught on purpose (a shutdown that still tidies up): later waits work.
            return await wait_for(asyncio.sleep(0.01, "tidied"), 1)
        return "not cancelled"

    task = asyncio.create_task(cleanup_after_a_cancel())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "tidied"


async def test_a_shielded_future_survives_the_timeout() -> None:
    reading = asyncio.ensure_future(asyncio.sleep(0.1, "read"))
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.shield(reading), 0.01)
    assert await reading == "read"


async def test_a_coroutine_runs_in_the_calling_task() -> None:
    async def mark() -> asyncio.Task[Any] | None:
        _SEEN.set("set inside")
        return asyncio.current_task()

    assert await wait_for(mark(), 1) is asyncio.current_task()
    assert _SEEN.get() == "set inside"
