"""Forget means gone: after a forget returns, no byte of the forgotten text is left in
the database file, its WAL or shared memory, the FTS5 word and trigram indexes, or
any vector (the next turn is re-embedded with the context it has now).

Checked on the raw files, for each kind of target, through the store, through
`bot memory forget` in a subprocess and through `/forget` in a running app.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from bot.db import Database
from bot.memory.embeddings import Embedder
from bot.memory.forget import parse_target
from bot.memory.ledger import Ledger
from bot.memory.rows import texts_for as _texts_for
from bot.memory.store import SQLiteMemory
from bot.memory.types import db_time
from tests.memory.conftest import T0, HashEmbedder, say, scope_for

REPO = Path(__file__).resolve().parents[2]

#: Distinct markers: in a message (and what derives from it), only in a fact, only in
#: a summary. Mixed case: the indexes fold it, the raw check folds it too.
MESSAGE_MARK = "QQxylophone7731VZK"
MESSAGE_CJK = "独角兽秘密花园"
FACT_MARK = "WWmarmalade4410QPJ"
SUMMARY_MARK = "JJtangerine9052XKB"


def trigrams(value: str) -> set[str]:
    value = value.lower()
    return {value[i : i + 3] for i in range(len(value) - 2)}


def needles(marker: str) -> list[bytes]:
    """Byte strings whose presence in the files means the marker survived: the text
    in UTF-8 and UTF-16, and the word-index term even when its first bytes are
    prefix-compressed against the term before it (ASCII), or each trigram term (CJK,
    whose characters occur nowhere else)."""
    out = [marker.lower().encode(), marker.encode("utf-16-le")]
    if marker.isascii():
        out.append(marker[2:-1].lower().encode())
    else:
        out += [t.encode() for t in trigrams(marker)]
    return out


def raw_files(path: Path) -> dict[str, bytes]:
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]
    return {p.name: p.read_bytes().lower() for p in files if p.exists()}


def assert_gone(path: Path, *markers: str) -> None:
    for name, data in raw_files(path).items():
        for marker in markers:
            for needle in needles(marker):
                assert needle.lower() not in data, f"{marker!r} left in {name} as {needle!r}"


def assert_kept(path: Path, *markers: str) -> None:
    data = b"".join(raw_files(path).values())
    for marker in markers:
        assert marker.lower().encode() in data, f"{marker!r} was deleted too"


def index_terms(path: Path, index: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE VIRTUAL TABLE temp.v_{index} USING fts5vocab(main, {index}, row)")
        return {str(r[0]) for r in conn.execute(f"SELECT term FROM temp.v_{index}")}


def assert_not_indexed(path: Path, *markers: str) -> None:
    """No trigram of a marker that no surviving text has is in the trigram indexes,
    and no marker word is in the word indexes (the logical view of the segments)."""
    with sqlite3.connect(path) as conn:
        rows = [
            r[0] for r in conn.execute("SELECT text FROM messages UNION ALL SELECT text FROM facts")
        ]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for index in ("messages_fts", "messages_fts_tri", "facts_fts", "facts_fts_tri"):
            conn.execute(f"INSERT INTO {index}({index}) VALUES ('integrity-check')")
    surviving = set().union(*(trigrams(t) for t in rows)) if rows else set()
    for index in ("messages_fts_tri", "facts_fts_tri"):
        terms = index_terms(path, index)
        for marker in markers:
            assert not (trigrams(marker) - surviving) & terms, (index, marker)
    for index in ("messages_fts", "facts_fts"):
        terms = index_terms(path, index)
        for marker in markers:
            assert marker.lower() not in terms, (index, marker)


@dataclass
class Story:
    """Ann's conversation: the turn with the marker, one before and one after."""

    ids: dict[str, int]
    path: Path | None  # the SQLite file (None on PostgreSQL)


async def tell(db: Database, memory: SQLiteMemory, path: Path | None) -> Story:
    """Ann tells the persona a secret; the persona quotes it; a fact, a summary, a
    follow-up, a reaction and a failure derive from it. Bob talks too. On either
    database (`path`: the SQLite file, checked to hold the markers)."""
    ledger = Ledger(db)
    ann = scope_for("ann")
    minute = timedelta(minutes=1)
    scope, m1, r1 = await say(
        ledger, ann, "I walk my dog Rex every morning", reply="What a nice routine"
    )
    secret = f"My secret word is {MESSAGE_MARK}, and {MESSAGE_CJK}"
    _, m2, r2 = await say(
        ledger, ann, secret, at=T0 + minute,
        reply=f"I will keep {MESSAGE_MARK} safe",
    )  # fmt: skip
    _, m3, r3 = await say(
        ledger, ann, "What should I cook tonight?", at=T0 + 2 * minute, reply="Pasta!"
    )
    _, b1, _ = await say(ledger, scope_for("bob"), "Bob's note about gardening")
    assert r1 and r2 and r3

    def derived(conn: Any) -> dict[str, int]:
        def at(stamp: str) -> Any:
            return db_time(datetime.fromisoformat(stamp + "+00:00"), conn.dialect.name)

        def fact(words: str, sources: Sequence[int], replaced: int | None = None) -> int:
            fid = int(
                conn.execute(
                    text(
                        "INSERT INTO facts (user_id, persona_id, conversation_id, is_direct, text, "
                        "source_ids, confidence, importance, created_at, updated_at) VALUES "
                        "(:u, 'p', :c, :direct, :t, :s, 0.9, 0.5, :at, :at) RETURNING id"
                    ),
                    {"u": scope.user_id, "c": scope.conversation_id, "t": words,
                     "s": json.dumps(list(sources)), "at": at("2026-05-01 12:05:00"),
                     "direct": True},
                ).scalar_one()
            )  # fmt: skip
            if replaced is not None:
                conn.execute(
                    text("UPDATE facts SET superseded_by = :n WHERE id = :o"),
                    {"n": fid, "o": replaced},
                )
            return fid

        def summary(words: str, first: int, last: int) -> int:
            return int(
                conn.execute(
                    text(
                        "INSERT INTO summaries (user_id, persona_id, conversation_id, text, "
                        "first_message_id, last_message_id, start_at, end_at, created_at) VALUES "
                        "(:u, 'p', :c, :t, :f, :l, :at, :at, :at) RETURNING id"
                    ),
                    {"u": scope.user_id, "c": scope.conversation_id, "t": words, "f": first,
                     "l": last, "at": at("2026-05-01 12:05:00")},
                ).scalar_one()
            )  # fmt: skip

        older = fact(f"Ann's secret word was {MESSAGE_MARK}x", [m2])
        ids = {
            "older_fact": older,
            "secret_fact": fact(f"Ann's secret word is {MESSAGE_MARK}", [m2], replaced=older),
            "dog_fact": fact(f"Ann has a dog named Rex, {FACT_MARK}", [m1]),
            "secret_summary": summary(f"Ann shared {MESSAGE_MARK}.", m1, r3),
            "cooking_summary": summary(f"Ann asked about dinner, {SUMMARY_MARK}.", m3, r3),
        }
        conn.execute(
            text(
                "INSERT INTO followups (conversation_id, user_id, persona_id, source_message_id, "
                "text, due_at, status, created_at) "
                "VALUES (:c, :u, 'p', :m, :t, :at, 'pending', :at)"
            ),
            {"c": scope.conversation_id, "u": scope.user_id, "m": m2,
             "t": f"Ask whether {MESSAGE_MARK} is still secret",
             "at": at("2026-05-02 12:00:00")},
        )  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO feedback (message_id, user_id, emoji, added, at) "
                "VALUES (:m, :u, '👍', :added, :at)"
            ),
            {"m": r2, "u": scope.user_id, "added": True, "at": at("2026-05-01 12:06:00")},
        )
        for key, chat, status, payload in (
            (
                "u1",
                "dm-ann",
                "done",
                json.dumps({"text": f"My secret word is {MESSAGE_MARK}, and {MESSAGE_CJK}"}),
            ),
            ("u2", "dm-ann", "failed", json.dumps({"m": {"text": secret}}, ensure_ascii=False)),
            ("u3", "dm-bob", "done", '{"text": "Bob\'s note about gardening"}'),
        ):
            conn.execute(
                text(
                    "INSERT INTO inbox_events (platform, event_key, chat, status, payload, "
                    "truncated, attempts, received_at) "
                    "VALUES ('t', :k, :c, :s, :p, :truncated, 1, :at)"
                ),
                {
                    "k": key,
                    "c": chat,
                    "s": status,
                    "p": payload,
                    "truncated": False,
                    "at": at("2026-05-01 12:00:00"),
                },
            )
        return ids

    ids = await db.run(derived)
    await ledger.record_failure(
        stage="reply", error=f"could not answer '{MESSAGE_MARK}'", message_id=m2
    )
    ids.update(m1=m1, r1=r1, m2=m2, r2=r2, m3=m3, r3=r3, b1=b1)
    memory.enqueue(("message", i) for i in (m1, r1, m2, r2, m3, r3, b1))
    memory.enqueue(("fact", ids[k]) for k in ("older_fact", "secret_fact", "dog_fact"))
    memory.enqueue(("summary", ids[k]) for k in ("secret_summary", "cooking_summary"))
    await memory.flush()
    await db.checkpoint()
    if path is not None:
        assert_kept(path, MESSAGE_MARK, FACT_MARK, SUMMARY_MARK)
    return Story(ids, path)


def vector_of(path: Path, item: int) -> np.ndarray | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT vector FROM embeddings WHERE kind = 'message' AND item_id = ?", (item,)
        ).fetchone()
    return None if row is None else np.frombuffer(row[0], dtype="<f4")


async def context_of(db: Database, item: int) -> str:
    rows = await db.read(lambda conn: _texts_for(conn, [("message", item)], 1))
    return str(rows[0]["text"])


async def assert_neighbour_reembedded(db: Database, story: Story, embedder: Embedder) -> None:
    """The turn after the forgotten one has the vector of its new context."""
    context = await context_of(db, story.ids["m3"])
    assert MESSAGE_MARK not in context and "What a nice routine" in context
    stored = vector_of(story.path, story.ids["m3"])
    assert stored is not None
    fresh = embedder.embed([context])[0]
    assert float(stored @ fresh) > 0.9999


def remaining(path: Path, sql: str) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute(sql)]


# -- the store ---------------------------------------------------------------------------


@pytest.fixture
async def told(tmp_path: Path) -> Any:
    path = tmp_path / "forget.db"
    db = Database.open(f"sqlite:///{path}")
    embedder = HashEmbedder()
    memory = SQLiteMemory(db, embedder=embedder, embed_delay_s=0)
    story = await tell(db, memory, path)
    yield db, memory, story, embedder
    await memory.aclose()
    await db.aclose()


@pytest.mark.parametrize(
    ("target", "gone", "kept"),
    [
        ("m2", [MESSAGE_MARK, MESSAGE_CJK], [FACT_MARK, SUMMARY_MARK]),
        ("r2", [], [MESSAGE_MARK]),  # the persona's reply alone: Ann's message stays
        ("dog_fact", [FACT_MARK], [MESSAGE_MARK, SUMMARY_MARK]),
        ("cooking_summary", [SUMMARY_MARK], [MESSAGE_MARK, FACT_MARK]),
        ("all", [MESSAGE_MARK, MESSAGE_CJK, FACT_MARK, SUMMARY_MARK], []),
    ],
)
async def test_no_byte_of_the_forgotten_text_is_left(
    told: Any, target: str, gone: list[str], kept: list[str]
) -> None:
    db, memory, story, embedder = told
    ann = story.ids
    kind = {"fact": "f", "summary": "s"}.get(target.rsplit("_", 1)[-1], "m")
    ref = "all" if target == "all" else f"{kind}{ann[target]}"
    uid = await memory.find_user("t", "ann")
    counts = await memory.forget(uid, ref)
    assert_gone(story.path, *gone)
    assert_not_indexed(story.path, *gone)
    assert_kept(story.path, "gardening", *kept)  # Bob's message, and what was not asked
    assert Path(f"{story.path}-wal").stat().st_size == 0
    # The per-scope vector cache holds nothing of the person any more.
    assert all(key[0] != uid for key in memory.search_backend._cache)
    if target == "m2":
        assert counts["messages"] == 2 and counts["facts"] == 2 and counts["summaries"] == 1
        assert counts["followups"] == 1 and counts["reactions"] == 1
        assert counts["inbox_payloads"] == 2
        assert remaining(story.path, "SELECT event_key FROM inbox_events WHERE payload != ''") == [
            "u3"
        ]
        assert counts["reembedded"] == 1
        assert remaining(story.path, "SELECT reason FROM failures") == [
            "error (details removed with a forgotten message)"
        ]
        await assert_neighbour_reembedded(db, story, embedder)
        scope, *_ = await say(Ledger(db), scope_for("ann"), "anything else?")
        assert await memory.search(scope, MESSAGE_MARK) == []
        assert [h.id for h in await memory.search(scope, "cook tonight")][:1] == [ann["m3"]]


async def test_a_search_before_the_forget_leaves_no_cached_vector(told: Any) -> None:
    db, memory, story, _ = told
    scope, *_ = await say(Ledger(db), scope_for("ann"), "tell me my secret word")
    assert await memory.search(scope, MESSAGE_MARK)  # loads the scope's vectors
    cached = [v for k, v in memory.search_backend._cache.items() if k[0] == scope.user_id]
    assert cached and cached[0].size > 0
    await memory.forget(scope.user_id, f"m{story.ids['m2']}")
    assert cached[0].rows is None and cached[0].size == 0  # zeroed, then dropped
    assert await memory.search(scope, MESSAGE_MARK) == []


async def test_forgetting_twice_and_refusals_leave_everything(told: Any) -> None:
    _db, memory, story, _ = told
    bob = await memory.find_user("t", "bob")
    with pytest.raises(PermissionError):
        await memory.forget(bob, f"m{story.ids['m2']}")
    assert_kept(story.path, MESSAGE_MARK)
    ann = await memory.find_user("t", "ann")
    await memory.forget(ann, f"m{story.ids['m2']}")
    with pytest.raises(KeyError):
        await memory.forget(ann, f"m{story.ids['m2']}")
    await memory.forget(ann, "all")
    assert_gone(story.path, MESSAGE_MARK, FACT_MARK, SUMMARY_MARK)


@pytest.mark.parametrize(
    "bad", ["", "m", "x12", "m-1", "m1.5", "m１２", "m" + "9" * 30, "all of it"]
)
def test_targets_that_are_not_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a memory id"):
        parse_target(bad)


# -- the real model, the CLI and a running app -------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Iterator[Embedder]:
    pytest.importorskip("sentence_transformers")
    from bot.memory.embeddings import SentenceTransformerEmbedder

    yield SentenceTransformerEmbedder("all-MiniLM-L6-v2")


async def test_bot_memory_forget_in_a_subprocess(tmp_path: Path, minilm: Embedder) -> None:
    path = tmp_path / "cli.db"
    db = Database.open(f"sqlite:///{path}")
    memory = SQLiteMemory(db, embedder=minilm, embed_delay_s=0)
    story = await tell(db, memory, path)
    await memory.aclose()
    await db.aclose()
    env = {**os.environ, "BOT_MEMORY__EMBEDDING_RUNTIME": "torch", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "memory", "forget", "--user", "ann", "--platform", "t",
         "--id", f"m{story.ids['m2']}", "--db", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 messages" in done.stdout and "re-embedded 1" in done.stdout
    assert_gone(path, MESSAGE_MARK, MESSAGE_CJK)
    assert_not_indexed(path, MESSAGE_MARK, MESSAGE_CJK)
    assert_kept(path, FACT_MARK, SUMMARY_MARK, "gardening")
    db = Database.open(f"sqlite:///{path}")
    try:
        await assert_neighbour_reembedded(db, story, minilm)
    finally:
        await db.aclose()


async def test_slash_forget_in_a_running_app(tmp_path: Path, minilm: Embedder) -> None:
    from bot.app import open_app
    from bot.commands import CommandContext
    from bot.config import load_settings
    from bot.llm.mock import MockBackend
    from bot.messages import Actor, Incoming, Scope
    from tests.test_engine import PERSONA

    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    path = tmp_path / "app.db"
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{path}"},
            "personas": {"dirs": [str(personas)]},
            "memory": {"embedding_runtime": "torch"},
        },
    )

    def reply(request: Any) -> str:
        said = request.messages[-1].content
        return f"I will keep {MESSAGE_MARK} safe" if MESSAGE_MARK in said else "Tell me more"

    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    ann = Actor(platform="test", id="ann", display_name="Ann")
    async with open_app(settings, backend=MockBackend(reply), watch=False) as app:
        assert app.memory is not None
        for words in (
            "I walk my dog every morning",
            f"My secret is {MESSAGE_MARK}",
            "What to cook?",
        ):
            await app.engine.handle(Incoming(scope=scope, actor=ann, text=words))
        await app.engine.drain()
        await app.memory.flush()
        await app.db.checkpoint()
        assert_kept(path, MESSAGE_MARK)
        ids = remaining(path, "SELECT id FROM messages ORDER BY id")
        secret = remaining(
            path, f"SELECT id FROM messages WHERE text LIKE '%{MESSAGE_MARK}%' AND direction = 'in'"
        )
        answer = await app.commands.run(
            "forget", f"m{secret[0]}", CommandContext(scope=scope, actor=ann)
        )
        assert answer == "Forgot 2 memory."
        # While the app still runs: nothing in the file, the WAL or shared memory.
        assert_gone(path, MESSAGE_MARK)
        assert Path(f"{path}-wal").stat().st_size == 0
        assert len(remaining(path, "SELECT id FROM messages")) == len(ids) - 2
        after = min(i for i in ids if i > secret[0] + 1)
        context = await context_of(app.db, after)
        assert MESSAGE_MARK not in context
        stored = vector_of(path, after)
        assert stored is not None and float(stored @ minilm.embed([context])[0]) > 0.9999
    assert_not_indexed(path, MESSAGE_MARK)


async def test_all_of_one_persona_leaves_the_others(told: Any) -> None:
    db, memory, story, _ = told
    ledger = Ledger(db)
    other, kept, _ = await say(ledger, scope_for("ann", persona="q"), f"For q: {FACT_MARK}x")
    await db.run(
        lambda c: c.execute(
            text(
                "INSERT INTO followups (conversation_id, user_id, persona_id, text, due_at, "
                "status, created_at) VALUES (:c, :u, 'q', 'ask q things', :at, 'pending', :at)"
            ),
            {"c": other.conversation_id, "u": other.user_id, "at": "2026-05-02 12:00:00"},
        )
    )
    counts = await memory.forget(other.user_id, "all", persona_id="p")
    assert counts["messages"] == 6
    assert_gone(story.path, MESSAGE_MARK, SUMMARY_MARK)
    assert remaining(story.path, "SELECT id FROM messages WHERE user_id = 1") == [kept]
    assert remaining(story.path, "SELECT persona_id FROM followups") == ["q"]


async def test_a_fact_or_summary_read_from_a_message_forgotten_meanwhile_is_not_stored(
    db: Database,
) -> None:
    from bot.llm.mock import MockBackend
    from tests.memory.test_extract import ids_in

    ledger = Ledger(db)
    memory = SQLiteMemory(db)
    scope, secret, _ = await say(ledger, scope_for("ann"), f"My code is {MESSAGE_MARK}")
    for i in range(4):
        await say(ledger, scope_for("ann"), f"filler message number {i}")

    async def forget_while_reading(request: Any) -> str:
        ids = ids_in(request)
        await memory.forget(scope.user_id, f"m{secret}")  # the person, mid-extraction
        fact = {
            "text": f"Ann's code is {MESSAGE_MARK}",
            "source_ids": [ids[f"My code is {MESSAGE_MARK}"]],
        }
        return json.dumps({"facts": [fact]})

    await memory.extract(scope, "p", MockBackend(forget_while_reading), now=T0)
    facts = await db.read(lambda c: c.execute(text("SELECT count(*) FROM facts")).scalar())
    assert facts == 0

    _, again, _ = await say(ledger, scope_for("ann"), f"Again: {MESSAGE_MARK}")

    async def forget_while_summarising(request: Any) -> str:
        await memory.forget(scope.user_id, f"m{again}")
        return f"Ann repeated {MESSAGE_MARK}."

    assert await memory.summarise(scope, "p", MockBackend(forget_while_summarising), now=T0) is None
    if db.engine.dialect.name == "sqlite":  # PostgreSQL's files: test_forget_pg.py
        assert_gone(Path(str(db.engine.url.database)), MESSAGE_MARK)
    await memory.aclose()


@settings(max_examples=25, deadline=None)
@given(
    turns=st.lists(
        st.tuples(st.sampled_from(["ann", "bob"]), st.booleans()), min_size=1, max_size=8
    ),
    picks=st.lists(st.integers(0, 7), max_size=4),
)
def test_any_conversation_any_forgets_leave_nothing_and_every_vector_current(
    turns: list[tuple[str, bool]], picks: list[int]
) -> None:
    """Property: whatever was said and whichever of Ann's messages she forgets (in a
    row, apart, twice), each forgotten text is gone from the raw files, every other
    text is there, and every stored vector is the embedding of its current context."""
    asyncio.run(_forget_some(turns, picks))


async def _forget_some(turns: list[tuple[str, bool]], picks: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        db = Database.open(f"sqlite:///{path}")
        embedder = HashEmbedder()
        memory = SQLiteMemory(db, embedder=embedder, embed_delay_s=0)
        ledger = Ledger(db)
        said: list[tuple[str, int, str]] = []  # speaker, message id, marker
        for i, (who, replied) in enumerate(turns):
            mark = f"zz{who}{i}mark{i * 7919 % 1000:03d}qx"
            _, mid, rid = await say(
                ledger, scope_for(who), f"turn {i}: {mark}", at=T0 + timedelta(minutes=i),
                reply=f"you said {mark}" if replied else None,
            )  # fmt: skip
            said.append((who, mid, mark))
            memory.enqueue([("message", mid)] + ([("message", rid)] if rid else []))
        await memory.flush()
        ann = await memory.find_user("t", "ann")
        forgotten: set[str] = set()
        anns = [(mid, mark) for who, mid, mark in said if who == "ann"]
        for pick in picks:
            if not anns:
                break
            mid, mark = anns[pick % len(anns)]
            if mark in forgotten:
                with pytest.raises(KeyError):
                    await memory.forget(ann, f"m{mid}")
                continue
            await memory.forget(ann, f"m{mid}")
            forgotten.add(mark)
        if forgotten:
            assert_gone(path, *forgotten)
        assert_kept(path, *(m for _, _, m in said if m not in forgotten))
        rows = await db.read(
            lambda c: list(
                c.execute(
                    text("SELECT item_id, vector FROM embeddings WHERE kind != 'forget'")
                ).all()
            )
        )
        contexts = await db.read(
            lambda c: _texts_for(c, [("message", int(r.item_id)) for r in rows], 1)
        )
        assert len(contexts) == len(rows) == len(remaining(path, "SELECT id FROM messages"))
        by_id = {r["id"]: r["text"] for r in contexts}
        for row in rows:
            stored = np.frombuffer(row.vector, dtype="<f4")
            assert float(stored @ embedder.embed([by_id[row.item_id]])[0]) > 0.9999
        await memory.aclose()
        await db.aclose()


async def test_another_process_drops_its_cached_vectors_at_its_next_search(told: Any) -> None:
    db, memory, story, embedder = told
    bot_db = Database.open(f"sqlite:///{story.path}")  # a running bot beside the CLI
    bot = SQLiteMemory(bot_db, embedder=embedder)
    scope, *_ = await say(Ledger(db), scope_for("ann"), "what was my secret word?")
    assert await bot.search(scope, MESSAGE_MARK)
    held = bot.search_backend._cache[(scope.user_id, scope.conversation_id)]
    assert ("message", story.ids["m2"]) in zip(held.kinds, held.items, strict=True)
    await memory.forget(scope.user_id, f"m{story.ids['m2']}")  # the other process
    assert await bot.search(scope, MESSAGE_MARK) == []
    assert held.rows is None and held.size == 0  # the old copy zeroed
    reloaded = bot.search_backend._cache[(scope.user_id, scope.conversation_id)]
    assert ("message", story.ids["m2"]) not in zip(reloaded.kinds, reloaded.items, strict=True)
    assert ("message", story.ids["m3"]) in zip(reloaded.kinds, reloaded.items, strict=True)
    size = reloaded.size
    await bot.search(scope, "cook tonight")  # the tombstone is handled once, not each time
    assert bot.search_backend._cache[(scope.user_id, scope.conversation_id)] is reloaded
    assert reloaded.size == size
    await bot.aclose()
    await bot_db.aclose()


async def test_the_wal_is_truncated_only_when_no_reader_holds_it(tmp_path: Path) -> None:
    from bot.errors import StorageError

    path = tmp_path / "busy.db"
    db = Database.open(f"sqlite:///{path}", busy_timeout_ms=50)
    ledger = Ledger(db)
    await say(ledger, scope_for("ann"), "first")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM messages").fetchone() == (1,)  # a snapshot
    await say(ledger, scope_for("ann"), f"then {MESSAGE_MARK}")
    with pytest.raises(StorageError, match="could not truncate the write-ahead log"):
        await db.checkpoint()
    reader.execute("ROLLBACK")
    await db.checkpoint()
    assert Path(f"{path}-wal").stat().st_size == 0
    await say(ledger, scope_for("ann"), "writes go on after a checkpoint")
    reader.close()
    await db.aclose()


async def test_a_model_failing_at_the_forget_leaves_the_forget_complete(told: Any) -> None:
    _db, memory, story, embedder = told

    def broken(texts: Sequence[str]) -> Any:
        raise RuntimeError("the model fell over")

    embedder.embed = broken
    counts = await memory.forget(await memory.find_user("t", "ann"), f"m{story.ids['m2']}")
    assert counts["messages"] == 2 and counts["reembedded"] == 0
    assert_gone(story.path, MESSAGE_MARK, MESSAGE_CJK)
    assert Path(f"{story.path}-wal").stat().st_size == 0
    assert vector_of(story.path, story.ids["m3"]) is None  # its old context went with it
