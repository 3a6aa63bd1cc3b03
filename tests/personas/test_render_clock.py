"""The render budget's clock: CPU time of the rendering thread, with a wall-clock
backstop. A template is failed for what it costs, not for the time its thread spent
waiting (a busy machine, other threads holding the GIL, a stalled process)."""

from __future__ import annotations

import threading
import time

import pytest

from bot.personas._budget import Budget, RenderLimitExceeded, RenderLimits


def _steps(budget: Budget, n: int = 64) -> None:
    with budget.active():
        for _ in range(n):
            budget.step()


def test_time_spent_waiting_is_not_charged_to_the_template() -> None:
    budget = Budget(RenderLimits(max_seconds=0.1, max_wall_seconds=5.0))
    time.sleep(0.3)  # three times the CPU budget, on the wall clock only
    _steps(budget)  # no raise: the thread has spent almost no CPU


def test_cpu_spent_past_the_budget_stops_the_render() -> None:
    budget = Budget(RenderLimits(max_seconds=0.05, max_wall_seconds=5.0))
    spent = time.thread_time() + 0.08
    while time.thread_time() < spent:
        pass
    with pytest.raises(RenderLimitExceeded, match=r"longer than 0\.05 s to render"):
        _steps(budget)


def test_the_wall_clock_backstop_stops_a_render_that_barely_runs() -> None:
    budget = Budget(RenderLimits(max_seconds=5.0, max_wall_seconds=0.1))
    time.sleep(0.15)
    with pytest.raises(RenderLimitExceeded, match=r"did not finish rendering within 0\.1 s"):
        _steps(budget, 1)


def test_another_threads_cpu_is_not_charged_either() -> None:
    """A budget made on one thread counts that thread's CPU, not the process's."""
    budget = Budget(RenderLimits(max_seconds=0.05, max_wall_seconds=5.0))
    done = time.monotonic() + 0.2

    def spin() -> None:
        while time.monotonic() < done:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    spinner.join()
    _steps(budget)
