"""The scheduler with several workers: every worker starts it paused (so follow-ups
are still stored as jobs), and only the elected leader resumes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from bot.app import open_app
from bot.cli_run import _start_scheduler
from bot.cluster import ClusterNode, Leadership
from bot.config import load_settings
from bot.llm.mock import MockBackend, echo_handler
from tests.adapters._telegram_process import PERSONA


async def test_only_the_leader_runs_the_scheduler_and_a_follower_takes_it_over(
    tmp_path: Path, postgres_url: str
) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": postgres_url},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": False},
        },
    )
    async with open_app(settings, backend=MockBackend(echo_handler), watch=False) as bot:
        first, second = ClusterNode(postgres_url, name="a"), ClusterNode(postgres_url, name="b")
        await first.join()
        await second.join()
        leading, following = Leadership(first, poll_s=0.05), Leadership(second, poll_s=0.05)
        stop = asyncio.Event()
        await leading.run(stop)  # nobody leads yet: elected at once
        assert leading.is_leader
        ran = await _start_scheduler(bot, settings, [], leading)
        waiting = await _start_scheduler(bot, settings, [], following)
        try:
            assert ran.aps.state == STATE_RUNNING
            assert waiting.aps.state == STATE_PAUSED
            # The paused one still stores jobs (a follow-up found in its turn).
            assert waiting.aps.get_job("sweep") is not None
            campaign = asyncio.create_task(following.run(stop))
            await asyncio.sleep(0.2)
            assert not following.is_leader and waiting.aps.state == STATE_PAUSED
            await ran.stop()
            await first.leave()  # the leader goes: its lock with it
            await asyncio.wait_for(campaign, timeout=10)
            assert following.is_leader
            assert waiting.aps.state == STATE_RUNNING
        finally:
            await waiting.stop()
            await second.leave()
