"""Several `bot run` processes on one database, against the fake Bot API.

The config is tests/adapters/_telegram_process.py's (the fakes' URLs, one persona,
no memory) with the database replaced by the caller's URL. Each `Worker` is one
child process (tests/fakes/bot_process.py) with its own log; `account` reads the
database through SQLAlchemy (either dialect) and the fake's record, and says for
every message sent to the bot whether it was answered, recorded as failed, or lost,
and what was sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from tests.adapters._telegram_process import Accounting, write_config
from tests.fakes.bot_process import BotChild
from tests.fakes.telegram_api import FakeTelegramAPI

__all__ = [
    "Worker",
    "account",
    "cluster_config",
    "live_workers",
    "query",
    "sending",
    "settled",
]


def cluster_config(
    tmp: Path,
    *,
    llm_url: str,
    api: FakeTelegramAPI,
    database_url: str,
    scheduler: bool = False,
    **kw: Any,
) -> Path:
    """A bot.toml for workers on `database_url` (scheduler off unless asked for)."""
    path = write_config(tmp, llm_url=llm_url, api=api, **kw)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = [f'url = "{database_url}"' if line.startswith("url = ") else line for line in lines]
    if scheduler:
        lines = [
            "enabled = true" if line == "enabled = false" and prev == "[scheduler]" else line
            for prev, line in zip(["", *lines[:-1]], lines, strict=True)
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def query(url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one query on `url`, on a connection of its own."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def live_workers(url: str) -> int:
    """Workers registered and not stopped (alive, or dead and not yet adopted); 0
    before the first worker has migrated the database."""
    try:
        rows = query(url, "select count(*) from cluster_workers where stopped_at is null")
    except ProgrammingError:
        return 0
    return int(rows[0][0])


class Worker(BotChild):
    """One `bot run` child named `name` (BOT_WORKER_ID); `start` again after `kill`
    starts a fresh one. Logs: <name>-<n>.log beside the config."""

    def __init__(
        self,
        name: str,
        config: Path,
        api: FakeTelegramAPI | None,
        env: dict[str, str] | None = None,
        token_env: tuple[str, str] | None = None,
    ) -> None:
        # Neither platform's token is inherited: a worker gets exactly one.
        super().__init__(
            config,
            env=env,
            unset=("TELEGRAM_TOKEN", "DISCORD_TOKEN"),
            label=name,
            log_prefix=name,
        )
        self.name = name
        self.api = api
        #: The platform's token variable (None: TELEGRAM_TOKEN of `api`); the other is unset.
        self.token_env = token_env

    def credentials(self) -> dict[str, str]:
        if self.token_env is None:
            assert self.api is not None
            token = ("TELEGRAM_TOKEN", self.api.token)
        else:
            token = self.token_env
        return {token[0]: token[1], "BOT_WORKER_ID": self.name}

    async def start(self) -> None:
        """Start `bot run` (return at once; see `wait_joined`)."""
        await self.spawn()

    async def wait_joined(self, url: str, *, workers: int, timeout: float = 60.0) -> None:
        """Wait until `workers` workers are registered on `url` (this one among them)."""

        async def joined() -> bool:
            return await asyncio.to_thread(live_workers, url) >= workers

        await self.wait_until(joined, timeout=timeout, what="did not join", poll=0.05)


def sending(url: str) -> int:
    """Replies recorded as leaving but not confirmed: after a kill, what may repeat."""
    rows = query(
        url, "select count(*) from messages where direction = 'out' and status = 'sending'"
    )
    return int(rows[0][0])


async def settled(url: str, expected: int, timeout: float) -> bool:
    """Wait until every incoming message is in an end state and nothing is pending."""
    sql = (
        "select "
        "(select count(*) from messages where direction = 'in' and status in "
        " ('answered', 'failed', 'expired', 'ignored')),"
        "(select count(*) from messages where direction = 'out' and status in "
        " ('generated', 'sending')),"
        "(select count(*) from inbox_events where status = 'pending')"
    )
    deadline = time.monotonic() + timeout
    while True:
        done, waiting, pending = (await asyncio.to_thread(query, url, sql))[0]
        if done >= expected and waiting == 0 and pending == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


def account(url: str, api: FakeTelegramAPI, injected: list[dict[str, Any]]) -> Accounting:
    """Every injected update's fate (as `_telegram_process.account`, on any database)."""
    result = Accounting(sent=len(injected))
    incoming = {
        (str(channel), str(pmid)): (int(mid), str(status))
        for mid, status, channel, pmid in query(
            url,
            "select m.id, m.status, c.channel, m.platform_message_id from messages m "
            "join conversations c on c.id = m.conversation_id where m.direction = 'in'",
        )
    }
    replies: dict[int, list[tuple[str, str | None]]] = {}
    claimed: set[str] = set()
    for reply_to, status, pmid in query(
        url, "select reply_to_id, status, platform_message_id from messages where direction = 'out'"
    ):
        if reply_to is not None:
            replies.setdefault(int(reply_to), []).append((str(status), pmid))
        if pmid is not None:
            claimed.add(str(pmid))
    failures = int(query(url, "select count(*) from failures")[0][0])
    failed_events = {
        str(r[0])
        for r in query(
            url,
            "select event_key from inbox_events where platform = 'telegram' and status = 'failed'",
        )
    }
    delivered_ids = {str(m.message_id) for m in api.sent}
    for update in injected:
        message = update["message"]
        found = incoming.get((str(message["chat"]["id"]), str(message["message_id"])))
        if found is None:
            if str(update["update_id"]) in failed_events:
                result.failed += 1
            else:
                result.lost.append(f"update {update['update_id']}: never stored")
            continue
        mid, status = found
        result.statuses[status] += 1
        if status in ("failed", "expired"):
            result.failed += 1
            continue
        outs = replies.get(mid, [])
        if any(s == "delivered" and p in delivered_ids for s, p in outs):
            result.answered += 1
        elif any(s == "undeliverable" for s, _ in outs) and failures:
            result.failed += 1
        else:
            result.lost.append(f"update {update['update_id']}: {status}, replies {outs}")
    counts = Counter(str(m.message_id) for m in api.sent)
    result.duplicates = sum(1 for m in api.sent if str(m.message_id) not in claimed) + sum(
        n - 1 for n in counts.values() if n > 1
    )
    return result
