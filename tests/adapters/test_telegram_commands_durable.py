"""Commands and greetings survive kill -9: a command's reply is stored with its
event's done mark and delivered from the outbox, never by running the command again;
a greeting delivered before a crash is not sent again; commands and turns of one
chat leave in their order across a kill.

`bot run` as a real process (real python-telegram-bot over sockets) against the
fake Bot API, on a SQLite file that outlives it; replies from the fake
OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.adapters._telegram_process import PERSONA, BotProcess, in_flight, write_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_api import FakeTelegramAPI

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GREETING = "Hello from Tess."
MODERATOR = 7001


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def _config(tmp_path: Path, llm: FakeOpenAIServer, api: FakeTelegramAPI) -> Path:
    config = write_config(
        tmp_path, llm_url=llm.base_url, api=api, telegram={"moderators": [MODERATOR]}
    )
    # The harness's persona, with a greeting for /start to send first.
    (tmp_path / "personas" / "tester.yaml").write_text(
        PERSONA + f"greeting: {GREETING}\n", encoding="utf-8"
    )
    return config


@asynccontextmanager
async def _running(
    tmp_path: Path, llm: FakeOpenAIServer
) -> AsyncIterator[tuple[FakeTelegramAPI, BotProcess]]:
    """The fake Bot API (calls not recorded) and `bot run` on it, started: the set-up
    every test here shares. A test that fails midway leaves no bot running."""
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        bot = BotProcess(_config(tmp_path, llm, api), api)
        await bot.start()
        try:
            yield api, bot
        finally:
            await bot.kill()  # a no-op after the test's own clean stop


def _rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as con:
        return [tuple(r) for r in con.execute(sql, params)]


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"not in {timeout} s: {what}"
        await asyncio.sleep(0.05)


def _waiting(db: Path) -> int:
    """Outgoing rows not yet settled."""
    rows = _rows(
        db,
        "select count(*) from messages where direction = 'out' and status in "
        "('generated', 'sending')",
    )
    return int(rows[0][0])


async def test_a_kill_between_a_commands_commit_and_its_send_delivers_it_once_without_rerunning(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    db = tmp_path / "bot.db"
    async with _running(tmp_path, llm) as (api, bot):
        # The first send to each chat is held off by a long 429: the command has
        # run and its reply is committed, but nothing has left when the kill comes.
        api.fail_next(status=429, retry_after=30, chat_id=8001)
        api.fail_next(status=429, retry_after=30, chat_id=MODERATOR)
        api.private_message(8001, "/start")
        api.private_message(MODERATOR, "/ban 4242 spam")
        await _until(
            lambda: (
                _rows(db, "select count(*) from inbox_events where status = 'done'") == [(2,)]
                and _waiting(db) == 3
            ),  # greeting and notice for 8001, the ban's answer
            20,
            "both commands committed with their replies",
        )
        await asyncio.sleep(0.3)  # both first sends are now waiting out their 429
        assert api.sent == [] and api.rate_limited == 2
        await bot.kill()

        await bot.start()
        await _until(lambda: _waiting(db) == 0, 30, "the stored replies delivered")
        assert await bot.stop() == 0, bot.log()

    texts = [m.text for m in api.sent_to(8001)]
    assert texts[0] == GREETING and len(texts) == 2 and "What I keep" in texts[1], texts
    (ban,) = [m.text for m in api.sent_to(MODERATOR)]
    assert ban.startswith("Done, ban: 4242"), ban
    # Not run again: one audited ban, one greeting row, each event settled once.
    assert _rows(db, "select count(*) from moderation_actions") == [(1,)]
    assert _rows(db, "select kind, status from messages where direction = 'out'") == [
        ("greeting", "delivered")
    ]  # the commands' replies, delivered, are not kept
    assert _rows(db, "select status, attempts from inbox_events") == [("done", 1)] * 2


async def test_a_greeting_delivered_before_a_kill_is_not_sent_again(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    db = tmp_path / "bot.db"
    async with _running(tmp_path, llm) as (api, bot):
        api.private_message(8101, "/start")
        await api.wait_for(lambda: len(api.sent_to(8101)) == 2, timeout=20)
        await _until(lambda: _waiting(db) == 0, 20, "the greeting recorded delivered")
        await bot.kill()
        await bot.start()
        # Recovery runs in the chat's lane before its next event: a greeting it
        # wrongly resent would leave before this message's reply.
        api.private_message(8101, "still there?")
        await api.wait_for(lambda: len(api.sent_to(8101)) == 3, timeout=20)
        await asyncio.sleep(0.5)  # room for anything that should not come
        assert await bot.stop() == 0, bot.log()
    texts = [m.text for m in api.sent_to(8101)]
    assert texts[0] == GREETING and "What I keep" in texts[1] and len(texts) == 3, texts
    assert texts[2] != GREETING


def _kind(text: str) -> str:
    if text == GREETING:
        return "greeting"
    if "What I keep" in text:
        return "start"
    if "/memory:" in text:
        return "help"
    if text.startswith("Done, mute:"):
        return "mute"
    return "turn"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_commands_and_turns_in_one_chat_leave_in_order_across_a_kill(
    tmp_path: Path, llm: FakeOpenAIServer, seed: int
) -> None:
    rng = random.Random(seed)
    db = tmp_path / "bot.db"
    script = ["/start", "one", "/help", "two", "/mute 555 10m", "three", "/help", "four"]
    expected = ["greeting", "start", "turn", "help", "turn", "mute", "turn", "help", "turn"]
    async with _running(tmp_path, llm) as (api, bot):
        for text in script:
            api.private_message(MODERATOR, text)
        # Killed at a random moment once some of the answers have left.
        await api.wait_for(lambda: len(api.sent_to(MODERATOR)) >= rng.randint(1, 6), timeout=20)
        await asyncio.sleep(rng.uniform(0, 0.05))
        await bot.kill()
        inflight = await asyncio.to_thread(in_flight, db)
        await bot.start()
        await api.wait_for(lambda: len(api.sent_to(MODERATOR)) >= len(expected), timeout=30)
        await _until(lambda: _waiting(db) == 0, 30, "everything delivered")
        assert await bot.stop() == 0, bot.log()
    kinds = [_kind(m.text) for m in api.sent_to(MODERATOR)]
    # A send in flight at the kill may repeat (the guarantee), right where it was;
    # nothing else may, and the order holds. `expected` has no kind twice in a row,
    # so collapsing runs takes out exactly such repeats.
    assert len(kinds) - len(expected) <= inflight, (kinds, inflight)
    assert _collapse(kinds) == expected, kinds
    assert _rows(db, "select count(*) from moderation_actions") == [(1,)]  # /mute ran once


def _collapse(kinds: list[str]) -> list[str]:
    """`kinds` with runs of one kind collapsed, as the check above sees them."""
    return [k for i, k in enumerate(kinds) if not (i > 0 and kinds[i - 1] == k)]
