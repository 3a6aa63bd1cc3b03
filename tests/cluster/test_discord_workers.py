"""Two `bot run` workers on one PostgreSQL database split Discord's shards.

Real discord.py in each worker against the fake Discord (tests/fakes/discord_api.py):
with `shard_count = 2`, one worker connects shard 0 (DMs and the test guild) and
the other shard 1, each by its own `discord.shard_ids`. Whatever arrives on either
shard is answered once, by whichever worker holds the chat.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.adapters.test_discord_durable import write_run_config
from tests.cluster._workers import Worker, query, settled
from tests.fakes.discord_api import BOT, TOKEN, FakeDiscord, FakeUser
from tests.fakes.openai_server import FakeOpenAIServer


def _bot_replies(fake: FakeDiscord) -> dict[int, int]:
    return {
        channel: sum(1 for m in messages if m["author"]["id"] == str(BOT.id))
        for channel, messages in fake.history.items()
    }


async def test_two_workers_split_the_shards_and_answer_each_message_once(
    tmp_path: Path, postgres_url: str
) -> None:
    people = [FakeUser(310_000_000_000_000_000 + n, f"p{n}") for n in range(8)]
    with FakeOpenAIServer() as llm:
        async with FakeDiscord() as fake:
            fake.record = False
            config = write_run_config(tmp_path, llm_url=llm.base_url, fake=fake)
            lines = config.read_text(encoding="utf-8").splitlines()
            lines = [f'url = "{postgres_url}"' if s.startswith("url = ") else s for s in lines]
            lines.append("shard_count = 2")
            config.write_text("\n".join(lines) + "\n", encoding="utf-8")
            workers = [
                Worker(
                    f"w{shard}",
                    config,
                    None,
                    env={"BOT_DISCORD__SHARD_IDS": f"[{shard}]"},
                    token_env=("DISCORD_TOKEN", TOKEN),
                )
                for shard in (0, 1)
            ]
            for n, worker in enumerate(workers):
                await worker.start()
                await worker.wait_joined(postgres_url, workers=n + 1)
            deadline = time.monotonic() + 60
            while len(fake.identifies) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            shards = sorted(tuple(i.get("shard") or ()) for i in fake.identifies)
            assert shards == [(0, 2), (1, 2)], (shards, workers[0].log(), workers[1].log())
            written = []
            for k in range(3):
                for person in people:
                    dm = fake.dm_channel(person)
                    written.append(await fake.send_message(fake.message(dm, person, f"hi {k}")))
            done = await settled(postgres_url, len(written), timeout=60)
            assert done, (workers[0].log(), workers[1].log())
            expected = {fake.dm_channel(p): 3 for p in people}
            deadline = time.monotonic() + 20
            while _bot_replies(fake) != expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            got = _bot_replies(fake)
            stored = await asyncio.to_thread(
                query, postgres_url, "select count(*) from messages where direction = 'in'"
            )
            for worker in workers:
                assert await worker.stop() == 0, worker.log()
    assert got == expected, (got, expected)
    assert stored[0][0] == len(written)  # each message stored once
