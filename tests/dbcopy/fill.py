"""A bot database filled through the bot's own stores, as a running bot fills it.

Ledger (people, conversations, messages in both directions with reply links,
failures, persona versions), People (consent, time zones, reachability, reactions,
persona bindings), memory (embeddings from a deterministic embedder, facts from a
scripted model including one that supersedes an older one, summaries), the inbox,
moderation (limits and their audit), safety events, lore timers (a composite text
key) and an APScheduler job (a pickled blob and a float). Text covers what a copy
must keep: accents, emoji, CJK, RTL, quotes, a lone backslash, very long lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bot.db import Database
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.memory.ledger import Ledger, ReplyRecord
from bot.messages import Actor, Incoming, Reaction, Scope

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

LINES = [
    "I live in Paris, near the canal",
    "Ma sœur s'appelle Élodie 🙂",
    "我的狗叫小黑，它三岁了",
    "שלום, מה שלומך?",
    'She said "NEAR" AND * (really) \\ done',
    "emoji only 🐶🎉🙂",
    "tabs\tand\nnew lines",
    "long " + "word " * 400,
]


class HashEmbedder:
    """A deterministic bag-of-words embedder (shared words make vectors close)."""

    name = "hash-test"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Any:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[row, h % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else 1.0
        return out


def _facts_answer(request: ChatRequest) -> str:
    prompt = request.messages[-1].content
    ids = {}
    for number, rest in re.findall(r"^(?:- )?\[(\d+)\] (.*)$", prompt, re.MULTILINE):
        ids[rest.split(": ", 1)[-1]] = int(number)
    facts: list[dict[str, object]] = []
    for text, number in ids.items():
        if text.startswith("I live in Paris"):
            facts.append({"text": "Lives in Paris.", "source_ids": [number], "importance": 0.7})
        if text.startswith("Big news: I moved to Berlin"):
            old = [n for t, n in ids.items() if t == "Lives in Paris."]
            facts.append({"text": "Lives in Berlin.", "source_ids": [number], "replaces": old})
    return json.dumps({"facts": facts})


async def fill(url: str, *, people: int = 4, turns: int = 12) -> None:
    """Fill the database at `url` (migrated here) as conversations would."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.inbox.store import Inbox, RawEvent
    from bot.memory.store import SQLiteMemory
    from bot.memory.types import MemoryScope
    from bot.people import People
    from bot.personas.lorebook.result import TimerState
    from bot.personas.lorebook.timers import LoreTimers
    from bot.safety.limits import LimitStore
    from bot.safety.stage import SafetyEvent
    from bot.safety.store import SafetyStore

    db = Database.open(url)
    ledger = Ledger(db)
    people_store = People(db)
    memory = SQLiteMemory(db, embedder=HashEmbedder(), embed_delay_s=0.0)
    try:
        await ledger.record_persona_version("p", "a" * 64, "/personas/p.yaml", "name: P\n")
        for n in range(people):
            user = f"user{n}"
            scope = Scope(platform="telegram", channel=f"dm-{n}", user=user, persona="p")
            actor = Actor(platform="telegram", id=user, display_name=f"Person {n} ✨")
            conversation = user_id = 0
            for t in range(turns):
                at = T0 + timedelta(days=n, minutes=t, microseconds=123456 * (t % 3))
                text = LINES[(n + t) % len(LINES)]
                if t == turns - 1:
                    text = "Big news: I moved to Berlin!"
                stored = await ledger.record_incoming(
                    Incoming(
                        scope=scope,
                        actor=actor,
                        text=text,
                        received_at=at,
                        platform_message_id=f"in-{n}-{t}",
                    ),
                    text,
                )
                conversation, user_id = stored.conversation_id, stored.user_id
                reply_id = await ledger.record_reply(
                    ReplyRecord(
                        conversation_id=conversation,
                        user_id=user_id,
                        reply_to_id=stored.message_id,
                        text=f"reply {t} to «{text[:20]}»",
                        persona_id="p",
                        created_at=at + timedelta(seconds=1, microseconds=7),
                        latency_ms=12.5 + t / 3,
                        prompt_tokens=100 + t,
                        completion_tokens=7,
                        model="tiny",
                        backend="openai",
                    )
                )
                await ledger.mark_delivered(reply_id, f"out-{n}-{t}")
                memory.enqueue([("message", stored.message_id), ("message", reply_id)])
                if t == 2:
                    await ledger.record_failure(
                        stage="deliver", error="429 Too Many Requests", message_id=reply_id
                    )
                    await people_store.record_reaction(
                        Reaction(
                            scope=scope,
                            actor=actor,
                            platform_message_id=f"out-{n}-{t}",
                            emoji="👍",
                            at=at + timedelta(seconds=5),
                        )
                    )
                if t == turns // 2:
                    await memory.extract(
                        MemoryScope(user_id, conversation), "p", MockBackend(_facts_answer), now=at
                    )
            await memory.extract(
                MemoryScope(user_id, conversation),
                "p",
                MockBackend(_facts_answer),
                now=T0 + timedelta(days=n, hours=1),
            )
            await memory.summarise(
                MemoryScope(user_id, conversation),
                "p",
                MockBackend(lambda _r: "They talked about home and pets. 他们聊了狗。"),
                now=T0 + timedelta(days=n, hours=2),
            )
            await people_store.set_timezone("telegram", user, "Europe/Paris")
            if n % 2:
                await people_store.set_opted_out("telegram", user, True)
                await people_store.set_opted_out("telegram", user, False)
                await people_store.mark_unreachable("telegram", user, "blocked the bot")
            await LoreTimers(db).save(
                conversation, "p", {"dragon": TimerState(3, 8), "城堡": TimerState(0, 2)}
            )
        await memory.flush()
        await people_store.bind_persona(
            "telegram:group-1", "p", platform="telegram", by_user="user0"
        )
        inbox = Inbox(db)
        await inbox.accept(
            "telegram",
            [
                RawEvent(key=str(1000 + i), payload=json.dumps({"update_id": 1000 + i}), chat="c1")
                for i in range(5)
            ],
        )
        pending = await inbox.pending("telegram", limit=10)
        await inbox.done(pending[0].id)
        await inbox.fail(pending[1].id, "bad payload")
        limits = LimitStore(db)
        await limits.apply(
            "mute",
            platform="telegram",
            target="user1",
            persona="*",
            moderator="mod",
            reason="spam",
            until=T0 + timedelta(days=30),
        )
        await SafetyStore(db).record(
            SafetyEvent(
                check="disclosure",
                verdict="disclosed",
                reason="first contact",
                scope=Scope(platform="telegram", channel="dm-0", user="user0", persona="p"),
                conversation_id=1,
                message_id=1,
                user_id=1,
                at=T0,
                details={"language": "en"},
            )
        )
        scheduler = BackgroundScheduler(timezone=UTC)
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        scheduler.add_jobstore(SQLAlchemyJobStore(engine=db.engine), "default")
        scheduler.start(paused=True)
        scheduler.add_job(
            "builtins:print", "date", run_date=T0 + timedelta(days=400, seconds=0.25), id="later"
        )
        scheduler.shutdown(wait=False)
    finally:
        await memory.aclose()
        await db.aclose()
