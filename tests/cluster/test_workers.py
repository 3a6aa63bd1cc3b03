"""Two `bot run` processes on one PostgreSQL database, against the fake Bot API.

Real processes, real python-telegram-bot over sockets, a real PostgreSQL server
(tests/fakes/postgres.py), the fake OpenAI-compatible server answering at once.
Each message is answered once, a chat's replies leave in its messages' order
whichever worker handles them, kill -9 of a worker under load loses nothing and
the survivor answers again within 30 s (taking the lead when the dead one led),
and a second `bot run` on a SQLite file is refused.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster._workers import (
    Worker,
    account,
    cluster_config,
    query,
    sending,
    settled,
)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_api import FakeTelegramAPI, Harsh

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


async def _inject(
    api: FakeTelegramAPI, chats: list[int], messages: int, rng: random.Random, *, over_s: float
) -> list[dict[str, Any]]:
    """Every chat writes `messages` messages, in order, spread over `over_s` seconds."""
    plan = sorted((rng.uniform(0, over_s), chat) for chat in chats for _ in range(messages))
    written: dict[int, int] = {}
    injected: list[dict[str, Any]] = []
    started = time.monotonic()
    for at, chat in plan:
        delay = at - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        k = written[chat] = written.get(chat, -1) + 1
        injected.append(api.private_message(chat, f"message {k} from {chat}"))
    return injected


async def _two_workers(
    tmp_path: Path, llm: FakeOpenAIServer, api: FakeTelegramAPI, url: str, **kw: Any
) -> tuple[Worker, Worker]:
    config = cluster_config(tmp_path, llm_url=llm.base_url, api=api, database_url=url, **kw)
    first = Worker("w1", config, api)
    await first.start()
    await first.wait_joined(url, workers=1)
    # The first one migrated the database and leads; the second joins beside it.
    await api.wait_for(lambda: api.counts["getUpdates"] > 0, timeout=30)
    second = Worker("w2", config, api)
    await second.start()
    await second.wait_joined(url, workers=2)
    return first, second


def _reply_order(url: str, api: FakeTelegramAPI) -> dict[str, list[int]]:
    """Per chat, the Telegram message ids of the messages answered, in the order
    their replies reached the fake."""
    answered = {
        str(out_pmid): (str(channel), int(in_pmid))
        for out_pmid, channel, in_pmid in query(
            url,
            "select o.platform_message_id, c.channel, i.platform_message_id "
            "from messages o join messages i on i.id = o.reply_to_id "
            "join conversations c on c.id = i.conversation_id "
            "where o.direction = 'out' and o.platform_message_id is not null",
        )
    }
    order: dict[str, list[int]] = {}
    for sent in api.sent:
        found = answered.get(str(sent.message_id))
        if found is not None:
            order.setdefault(found[0], []).append(found[1])
    return order


async def test_two_workers_answer_each_message_once_in_each_chats_order(
    tmp_path: Path, llm: FakeOpenAIServer, postgres_url: str
) -> None:
    rng = random.Random(7)
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        first, second = await _two_workers(tmp_path, llm, api, postgres_url)
        injected: list[dict[str, Any]] = []
        handled: dict[str, int] = {}
        # Which worker finds a new chat first is a race (the leader stores the
        # updates and is woken at once; a fast host can let it take every chat of
        # one wave), so waves of new chats run until both took a share, at most five.
        for wave in range(5):
            chats = [7000 + 100 * wave + c for c in range(20)]
            injected += await _inject(api, chats, 5, rng, over_s=2.0)
            done = await settled(postgres_url, len(injected), timeout=60)
            assert done, (first.log(), second.log())
            handled = dict(
                await asyncio.to_thread(
                    query,
                    postgres_url,
                    "select w.name, count(*) from inbox_events e "
                    "join cluster_workers w on w.id = e.claimed_by group by w.name",
                )
            )
            if len(handled) == 2:
                break
        assert await second.stop() == 0, second.log()
        assert await first.stop() == 0, first.log()
        result = await asyncio.to_thread(account, postgres_url, api, injected)
        order = await asyncio.to_thread(_reply_order, postgres_url, api)
    assert result.lost == [] and result.duplicates == 0, result
    assert result.answered == len(injected)
    for chat, ids in order.items():
        assert ids == sorted(ids), (chat, ids)
    assert set(handled) == {"w1", "w2"}, handled  # both took a share
    assert sum(handled.values()) == len(injected)


@pytest.mark.parametrize(("victim", "seed"), [("leader", 11), ("follower", 12)])
async def test_kill_9_of_one_of_two_workers_under_load_loses_nothing(
    tmp_path: Path, llm: FakeOpenAIServer, postgres_url: str, victim: str, seed: int
) -> None:
    rng = random.Random(seed)
    harsh = Harsh(seed=seed, rate_limit_share=0.03, delay_share=0.03, delay_s=(0.2, 0.5))
    async with FakeTelegramAPI(harsh=harsh) as api:
        api.record_calls = False
        leader, follower = await _two_workers(tmp_path, llm, api, postgres_url)
        if victim == "follower":
            leader, follower = follower, leader  # `leader` is the one that dies
        chats = [8000 + c for c in range(30)]
        load = asyncio.create_task(_inject(api, chats, 5, rng, over_s=3.0))
        await api.wait_for(lambda: len(api.sent) >= rng.randint(20, 60), timeout=60)
        # One dies with its chats and in-flight turns (and, the leader, Telegram
        # polling): the survivor must take all of it over.
        await leader.kill()
        killed_at = time.monotonic()
        sent_at_kill = len(api.sent)
        inflight = await asyncio.to_thread(sending, postgres_url)
        injected = await load
        await api.wait_for(lambda: len(api.sent) > sent_at_kill, timeout=30)
        resumed_s = time.monotonic() - killed_at
        done = await settled(postgres_url, len(injected), timeout=90)
        assert done, follower.log()
        assert await follower.stop() == 0, follower.log()
        result = await asyncio.to_thread(account, postgres_url, api, injected)
        adopted = await asyncio.to_thread(
            query,
            postgres_url,
            "select adopted_by from cluster_workers where name = :name",
            name="w1" if victim == "leader" else "w2",
        )
    assert result.lost == [], (result, follower.log())
    assert result.duplicates <= inflight, (result, inflight)
    assert result.answered + result.failed == len(injected)
    assert resumed_s < 30
    assert adopted[0][0] is not None  # the survivor adopted the dead worker


async def test_the_follower_takes_over_polling_when_the_leader_dies(
    tmp_path: Path, llm: FakeOpenAIServer, postgres_url: str
) -> None:
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        # The scheduler on, as by default: it runs paused on the follower until it leads.
        leader, follower = await _two_workers(tmp_path, llm, api, postgres_url, scheduler=True)
        api.private_message(6001, "hello")
        await api.wait_for(lambda: api.sent_to(6001), timeout=30)
        await leader.kill()
        killed_at = time.monotonic()
        polls = api.counts["getUpdates"]
        await api.wait_for(lambda: api.counts["getUpdates"] > polls, timeout=30)
        took_over_s = time.monotonic() - killed_at
        api.private_message(6002, "are you still there?")
        await api.wait_for(lambda: api.sent_to(6002), timeout=30)
        assert await follower.stop() == 0, follower.log()
    # The leader lock is asked for every second; the rest is the poll's own wait.
    assert took_over_s < 15


async def test_a_second_bot_run_on_a_sqlite_file_is_refused(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    async with FakeTelegramAPI() as api:
        url = f"sqlite:///{tmp_path / 'bot.db'}"
        config = cluster_config(tmp_path, llm_url=llm.base_url, api=api, database_url=url)
        first = Worker("w1", config, api)
        await first.start()
        await api.wait_for(lambda: api.counts["getUpdates"] > 0, timeout=30)
        second = Worker("w2", config, api)
        await second.start()
        assert second.process is not None
        code = await asyncio.wait_for(second.process.wait(), timeout=60)
        log = second.log()
        assert await first.stop() == 0, first.log()
    assert code != 0
    assert "another `bot run`" in log and "PostgreSQL" in log, log


async def test_every_worker_serves_the_webhook_and_each_update_is_answered_once(
    tmp_path: Path, llm: FakeOpenAIServer, postgres_url: str
) -> None:
    import itertools
    import socket

    import aiohttp

    from adapters._telegram_webhook import derived_secret

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        config = cluster_config(
            tmp_path,
            llm_url=llm.base_url,
            api=api,
            database_url=postgres_url,
            # The load balancer's address, as Telegram knows it (nothing listens there:
            # this test is the load balancer, posting to each worker in turn).
            telegram={"mode": "webhook", "webhook_url": "http://127.0.0.1:9/telegram"},
        )
        workers = [
            Worker(f"w{n}", config, api, env={"BOT_TELEGRAM__LISTEN_PORT": str(port)})
            for n, port in enumerate(ports)
        ]
        for n, worker in enumerate(workers):
            await worker.start()
            await worker.wait_joined(postgres_url, workers=n + 1)
        await api.wait_for(lambda: api.counts["setWebhook"] >= 2, timeout=30)
        # No secret configured: both registered the one derived from the token.
        assert api.webhook_secret == derived_secret(api.token)
        headers = {"X-Telegram-Bot-Api-Secret-Token": derived_secret(api.token)}
        ids = itertools.count(1)
        updates = []
        api.started.update((5001, 5002, 5003))  # they have started the bot
        for k in range(4):
            for chat in (5001, 5002, 5003):
                body = api.message(chat, chat, f"message {k} from {chat}")
                updates.append({"update_id": next(ids), "message": body})
        async with aiohttp.ClientSession() as session:
            for n, update in enumerate(updates):  # alternately, as a balancer would
                url = f"http://127.0.0.1:{ports[n % 2]}/telegram"
                async with session.post(url, json=update, headers=headers) as response:
                    assert response.status == 200, await response.text()
        done = await settled(postgres_url, len(updates), timeout=60)
        assert done, (workers[0].log(), workers[1].log())
        for worker in workers:
            assert await worker.stop() == 0, worker.log()
        result = await asyncio.to_thread(account, postgres_url, api, updates)
        order = await asyncio.to_thread(_reply_order, postgres_url, api)
    assert result.lost == [] and result.duplicates == 0, result
    assert result.answered == len(updates)
    for chat, ids_in_order in order.items():
        assert ids_in_order == sorted(ids_in_order), (chat, ids_in_order)
