"""`bot run` as a real process against the fake Bot API, to be killed with SIGKILL.

Used by tests/adapters/test_telegram_durable.py and bench/platform_load.py --kill:
the fake Telegram (tests/fakes/telegram_api.py) serves on the caller's event loop,
the fake OpenAI server (tests/fakes/openai_server.py) answers instantly from its
thread, and the bot is a child process on a SQLite file that outlives it.
`account` then reads that file and the fake's record and says, for every message
sent to the bot, whether it was answered, recorded as failed or expired, or lost.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.bot_process import REPO, BotChild
from tests.fakes.telegram_api import FakeTelegramAPI

__all__ = ["REPO", "Accounting", "BotProcess", "account", "in_flight", "write_config"]

PERSONA = """\
version: 1
id: tester
name: Tess
description: A terse test persona.
system_prompt: You are Tess. Answer in one short line.
safety:
  away_message: Sorry, I was away for a while.
"""


def write_config(
    tmp: Path,
    *,
    llm_url: str,
    api: FakeTelegramAPI,
    engine: dict[str, Any] | None = None,
    telegram: dict[str, Any] | None = None,
) -> Path:
    """A bot.toml for `bot run`: the fakes' URLs, one persona, no memory, no scheduler."""
    personas = tmp / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    lines = [
        "[database]",
        f'url = "sqlite:///{tmp / "bot.db"}"',
        "[llm]",
        'backend = "openai"',
        f'base_url = "{llm_url}"',
        'model = "tiny"',
        "max_concurrency = 64",
        "[personas]",
        f'dirs = ["{personas}"]',
        'default = "tester"',
        "watch = false",
        "[memory]",
        "enabled = false",
        "[scheduler]",
        "enabled = false",
        "[logging]",
        'level = "WARNING"',
        'format = "json"',
        "[engine]",
        *(f"{k} = {_toml(v)}" for k, v in (engine or {}).items()),
        "[telegram]",
        f'base_url = "{api.base_url}"',
        *(f"{k} = {_toml(v)}" for k, v in (telegram or {}).items()),
    ]
    path = tmp / "bot.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


class BotProcess(BotChild):
    """One `bot run` child at a time against the fake Bot API (TELEGRAM_TOKEN its
    token, DISCORD_TOKEN unset); `start` again after `kill` restarts it. Logs:
    bot-<n>.log beside the config."""

    def __init__(
        self, config: Path, api: FakeTelegramAPI, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(config, env=env, unset=("DISCORD_TOKEN",))
        self.api = api

    def credentials(self) -> dict[str, str]:
        return {"TELEGRAM_TOKEN": self.api.token}

    async def start(self, *, timeout: float = 30.0, wait: bool = True) -> None:
        """Start `bot run`; with `wait`, return once it takes updates (it polls, or
        its webhook is registered)."""
        polls = self.api.counts["getUpdates"]
        webhooks = self.api.counts["setWebhook"]
        await self.spawn()
        if not wait:
            return
        await self.wait_until(
            lambda: (
                self.api.counts["getUpdates"] != polls or self.api.counts["setWebhook"] != webhooks
            ),
            timeout=timeout,
            what="did not start",
        )


@dataclass
class Accounting:
    """What became of the messages sent to the bot."""

    sent: int = 0
    answered: int = 0  # a reply the fake received and the ledger knows
    failed: int = 0  # a recorded failure: failed or expired message, undeliverable reply
    lost: list[str] = field(default_factory=list)  # why each lost one is counted lost
    duplicates: int = 0  # sendMessage accepted by the fake that no ledger row claims
    #: Answered by a later message of the same chat (a burst coalesced into one turn,
    #: bot/safety/coalesce.py): `ignored`, with a later message of the chat answered.
    coalesced: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


def in_flight(db: Path) -> int:
    """Replies recorded as leaving but not confirmed: after a kill, what may repeat."""
    with sqlite3.connect(db) as con:
        row = con.execute(
            "select count(*) from messages where direction = 'out' and status = 'sending'"
        ).fetchone()
    return int(row[0])


def account(db: Path, api: FakeTelegramAPI, injected: list[dict[str, Any]]) -> Accounting:
    """Match every injected update to its fate in the ledger and at the fake.

    Answered: the incoming message's reply is `delivered` with a platform id the fake
    has. Coalesced: `ignored` (answered with a burst), and a later message of the
    same chat was answered. Failed: the message is `failed`/`expired`, its reply
    `undeliverable` with a failure row, or its inbox event `failed` with a reason.
    Anything else is lost.
    Duplicates are messages the fake accepted that no delivered ledger row names.
    """
    result = Accounting(sent=len(injected))
    con = sqlite3.connect(db)
    try:
        incoming: dict[tuple[str, str], tuple[int, str]] = {}
        for mid, status, channel, pmid in con.execute(
            "select m.id, m.status, c.channel, m.platform_message_id from messages m "
            "join conversations c on c.id = m.conversation_id where m.direction = 'in'"
        ):
            incoming[(str(channel), str(pmid))] = (mid, status)
        replies: dict[int, list[tuple[str, str | None]]] = {}
        claimed: set[str] = set()
        for reply_to, status, pmid in con.execute(
            "select reply_to_id, status, platform_message_id from messages "
            "where direction = 'out'"
        ):
            if reply_to is not None:
                replies.setdefault(reply_to, []).append((status, pmid))
            if pmid is not None:
                claimed.add(str(pmid))
        failures = con.execute("select count(*) from failures").fetchone()[0]
        failed_events = {
            str(r[0])
            for r in con.execute(
                "select event_key from inbox_events where platform = 'telegram' "
                "and status = 'failed'"
            )
        }
    finally:
        con.close()
    delivered_ids = {str(m.message_id) for m in api.sent}
    # Per chat, the newest incoming message whose reply reached the fake.
    newest_answered: dict[str, int] = {}
    for (chat, _), (mid, _) in incoming.items():
        if any(st == "delivered" and p in delivered_ids for st, p in replies.get(mid, [])):
            newest_answered[chat] = max(mid, newest_answered.get(chat, 0))
    for update in injected:
        message = update["message"]
        key = (str(message["chat"]["id"]), str(message["message_id"]))
        found = incoming.get(key)
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
        if status == "ignored" and newest_answered.get(key[0], 0) > mid:
            result.coalesced += 1
            continue
        outs = replies.get(mid, [])
        if any(s == "delivered" and p in delivered_ids for s, p in outs):
            result.answered += 1
        elif any(s == "undeliverable" for s, _ in outs) and failures:
            result.failed += 1  # recorded: the ledger writes a failure with each
        else:
            result.lost.append(f"update {update['update_id']}: {status}, replies {outs}")
    result.duplicates = sum(1 for m in api.sent if str(m.message_id) not in claimed)
    return result
