"""Channel state in the database (table `group_channels`): what `bot run` uses, so
that a restart and every worker on one database agree on a channel's budget,
cooldowns and bot-to-bot chain.

One row per channel (platform, channel, thread):

    bot_chain    bot messages in a row since a person last spoke there
    replies      the replies of the last minute, counted per second
                 ({"1764590000": 2, ...}; at most 61 seconds kept)
    unprompted   persona → when it last spoke unprompted (its cooldown's start)
    updated_at   the last write (seconds since the epoch)

A decision reads the row, decides and writes it back in one transaction, the row
locked (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the writer's `BEGIN
IMMEDIATE` already serialises), so two workers deciding for one channel at once
see each other's replies: the budget and the chain hold across processes. On
PostgreSQL the transaction does not wait for its WAL to reach the disk
(`synchronous_commit = off`, for this transaction only): a server crash may lose
the last moments of counts, which cost at most a few more replies that minute. A
message that changes nothing (a person speaks, the chain is already 0, nobody
answers) is a read only. The budget is kept to the second: a reply counts for 60
to 61 seconds (never less than the 60 s the rule says). Rows not written for a
day and a minute (the longest cooldown is a day) are deleted now and then: such a
channel starts afresh, as after a day nothing of its state still applies but a
bot chain, which a person's message resets anyway.

Times are wall-clock seconds (`time.time()`): the router's clock must be the same
on every worker.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from bot.db import Database
from bot.groups.decide import ChannelView, Decision, MessageFacts
from bot.groups.state import WINDOW_S, Chooser, chain_after, note_speakers

__all__ = ["MAX_KEY", "GroupStore", "channel_key"]

#: The longest channel key stored as it is; longer ones are cut and hashed.
MAX_KEY = 255
#: The longest cooldown a persona may have (bot.groups.policy) plus the window.
_KEEP_S = 86_400.0 + WINDOW_S
#: About one decision in this many also deletes channels idle past `_KEEP_S`.
_PRUNE_EVERY = 1000


def channel_key(key: str) -> str:
    """`key` as stored: itself, or when longer than `MAX_KEY` or holding what a
    database may refuse (NUL, which PostgreSQL's text cannot hold; lone
    surrogates) its cleaned head and a hash of the whole."""
    clean = "".join(c for c in key if c != "\x00" and not "\ud800" <= c <= "\udfff")
    if len(key) <= MAX_KEY and clean == key:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{clean[: MAX_KEY - 41]}#{digest}"


@dataclass
class _Row:
    bot_chain: int
    replies: dict[int, int]
    unprompted: dict[str, float]

    @classmethod
    def parse(cls, chain: Any, replies: Any, unprompted: Any) -> _Row:
        # A row that does not parse (written by hand, cut) is a fresh channel, not a
        # failed decision.
        try:
            buckets = {int(k): int(v) for k, v in json.loads(replies or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            buckets = {}
        try:
            last = {str(k): float(v) for k, v in json.loads(unprompted or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            last = {}
        try:
            count = max(0, int(chain or 0))
        except (ValueError, TypeError):
            count = 0
        return cls(count, buckets, last)

    def prune(self, now: float) -> None:
        # Second s holds replies in [s, s + 1): kept while its end is under a minute old.
        self.replies = {s: n for s, n in self.replies.items() if now - (s + 1) < WINDOW_S}
        self.unprompted = {p: t for p, t in self.unprompted.items() if now - t < _KEEP_S}

    def view(self, replies_per_minute: int, max_bot_chain: int) -> ChannelView:
        return ChannelView(
            replies_last_minute=sum(self.replies.values()),
            bot_chain=self.bot_chain,
            last_unprompted=dict(self.unprompted),
            replies_per_minute=replies_per_minute,
            max_bot_chain=max_bot_chain,
        )


class GroupStore:
    """`ChannelStates` in the database: one transaction per decision."""

    def __init__(self, db: Database, *, rng: random.Random | None = None) -> None:
        """`rng` only chooses when to delete idle channels (tests seed it)."""
        self.db = db
        self._prune_rng = rng if rng is not None else random.Random()

    async def decide(
        self,
        key: str,
        now: float,
        *,
        replies_per_minute: int,
        max_bot_chain: int,
        facts: MessageFacts,
        choose: Chooser,
    ) -> tuple[ChannelView, Decision]:
        """Read `key`'s row (locked), `choose`, write what changed; one transaction."""
        stored_key = channel_key(key)
        prune = self._prune_rng.random() * _PRUNE_EVERY < 1.0

        def work(conn: Connection) -> tuple[ChannelView, Decision]:
            if conn.dialect.name == "postgresql":
                # This state guards seconds (a flood, a loop): a commit need not wait
                # for the disk. A server crash may lose the last few decisions' counts
                # (at worst a few more replies that minute), never the table.
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            row = _load(conn, stored_key)
            if row is None:
                # Insert first, so the row exists to be locked: of two workers
                # meeting a new channel at once, the second waits for the first.
                conn.execute(
                    text(
                        "INSERT INTO group_channels (channel_key, bot_chain, replies, "
                        "unprompted, updated_at) VALUES (:k, 0, '{}', '{}', :now) "
                        "ON CONFLICT (channel_key) DO NOTHING"
                    ),
                    {"k": stored_key, "now": now},
                )
                row = _load(conn, stored_key) or _Row(0, {}, {})
            row.prune(now)
            view = row.view(replies_per_minute, max_bot_chain)
            decision = choose(view)
            chain, spoke = chain_after(row.bot_chain, facts, decision)
            if chain != row.bot_chain or spoke:
                added = note_speakers(decision, now, row.unprompted)
                if added:
                    second = int(now // 1)
                    row.replies[second] = row.replies.get(second, 0) + added
                conn.execute(
                    text(
                        "UPDATE group_channels SET bot_chain = :c, replies = :r, "
                        "unprompted = :u, updated_at = :now WHERE channel_key = :k"
                    ),
                    {
                        "k": stored_key,
                        "c": chain,
                        "r": json.dumps({str(s): n for s, n in sorted(row.replies.items())}),
                        "u": json.dumps(row.unprompted, ensure_ascii=False, sort_keys=True),
                        "now": now,
                    },
                )
            if prune:
                conn.execute(
                    text("DELETE FROM group_channels WHERE updated_at < :cut"),
                    {"cut": now - _KEEP_S},
                )
            return view, decision

        return await self.db.run(work)

    async def forget(self, key: str) -> None:
        """Delete one channel's state (it starts afresh)."""

        def work(conn: Connection) -> None:
            conn.execute(
                text("DELETE FROM group_channels WHERE channel_key = :k"),
                {"k": channel_key(key)},
            )

        await self.db.run(work)


def _load(conn: Connection, key: str) -> _Row | None:
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    found = conn.execute(
        text(
            "SELECT bot_chain, replies, unprompted FROM group_channels "
            f"WHERE channel_key = :k{lock}"
        ),
        {"k": key},
    ).first()
    return None if found is None else _Row.parse(found[0], found[1], found[2])
