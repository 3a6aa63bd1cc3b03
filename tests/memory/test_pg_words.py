"""BM25 in SQL on PostgreSQL (`bot/memory/pg_words.py`) against a reference computed
in Python from the same lexemes: exact in a small scope, and with common words left
out of the match in a large one (`PRUNE_ABOVE` lowered so that a small scope counts
as large). Plus the statement's odd inputs: a PostgreSQL stopword among the words,
every word common, the most words a query can have."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Connection, text

import bot.memory.pg_words as pg_words
from bot.db import Database
from bot.memory.ledger import Ledger
from bot.memory.query import tsquery_expression
from bot.memory.types import MemoryScope
from tests.memory.conftest import say, scope_for

#: Word -> share of messages holding it: "cat" common, "zebra" rare, the rest between.
VOCABULARY = {"cat": 0.6, "mat": 0.35, "lamp": 0.2, "violin": 0.1, "river": 0.08, "zebra": 0.04}
FILLER = ["green", "morning", "table", "window", "bread", "letter", "stone", "cloud"]


@pytest.fixture
async def filled(postgres_url: str) -> AsyncIterator[tuple[Database, MemoryScope]]:
    """A scope of 80 messages drawn from `VOCABULARY` (and a few other people's)."""
    db = Database.open(postgres_url)
    ledger = Ledger(db)
    rng = random.Random(11)
    scope: MemoryScope | None = None
    for i in range(80):
        words = [w for w, share in VOCABULARY.items() if rng.random() < share]
        words += rng.sample(FILLER, rng.randint(1, 5))
        rng.shuffle(words)
        scope, _, _ = await say(ledger, scope_for("ann"), " ".join(words))
        if i % 10 == 0:  # another person's rows: never counted, never found
            await say(ledger, scope_for("bob"), "zebra cat zebra")
    assert scope is not None
    yield db, scope
    await db.aclose()


def _lexemes(conn: Connection, scope: MemoryScope) -> dict[int, set[str]]:
    rows = conn.execute(
        text(
            "SELECT id, search_words::text AS words FROM messages "
            "WHERE user_id = :uid AND conversation_id = :cid"
        ),
        {"uid": scope.user_id, "cid": scope.conversation_id},
    )
    # tsvector's text form: 'cat':1 'mat':3
    return {int(r.id): {part.split(":")[0].strip("'") for part in r.words.split()} for r in rows}


def _reference(
    conn: Connection, scope: MemoryScope, query: str, n: int, share: float | None
) -> list[int]:
    """BM25 as pg_words promises it (term frequency 1, IDF per scope, length against
    the scope's mean), with common words (`share` of the rows or more) left out of the
    match and their frequency floored at the cap when `share` is given."""
    rows = _lexemes(conn, scope)
    terms = [
        conn.execute(text("SELECT to_tsquery('english', :t)::text"), {"t": t}).scalar_one()
        for t in (tsquery_expression(query) or "").split(" | ")
    ]
    terms = [t.strip("'") for t in terms]
    docs = len(rows)
    mean = sum(len(w) for w in rows.values()) / docs
    df = {t: sum(t in w for w in rows.values()) for t in terms}
    common: set[str] = set()
    cap = 0
    if share is not None and len(terms) > 1:
        cap = max(1, int(docs * share))
        common = {t for t in terms if df[t] >= cap}
        if common == set(terms):
            common = set()
    matched = {i: w for i, w in rows.items() if any(t in w and t not in common for t in terms)}
    score = {}
    for i, words in matched.items():
        total = 0.0
        for t in terms:
            if t in words:
                d = max(sum(t in w for w in matched.values()), min(df[t], cap) if cap else 0)
                total += math.log(1 + (docs - d + 0.5) / (d + 0.5))
        norm = 2.2 / (1 + 1.2 * (0.25 + 0.75 * len(words) / mean))
        score[i] = round(total * norm, 9)
    return sorted(score, key=lambda i: (-score[i], -i))[:n]


async def _ranked(db: Database, scope: MemoryScope, query: str, n: int) -> list[int]:
    lists = await db.read(
        lambda conn: pg_words.lexical_lists(
            conn, scope, ("message",), tsquery_expression(query), [], [], n, {}
        )
    )
    return [i for _, i in lists[0]] if lists else []


@pytest.mark.parametrize("query", ["zebra cat", "violin lamp river", "cat mat", "zebra"])
async def test_a_small_scope_ranks_exactly_as_bm25(
    filled: tuple[Database, MemoryScope], query: str
) -> None:
    db, scope = filled
    expected = await db.read(lambda conn: _reference(conn, scope, query, 20, None))
    assert expected  # the query finds something, so the comparison says something
    assert await _ranked(db, scope, query, 20) == expected


@pytest.mark.parametrize("query", ["zebra cat", "violin lamp cat mat", "river cat"])
async def test_a_large_scope_leaves_common_words_out_and_floors_their_frequency(
    filled: tuple[Database, MemoryScope], query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, scope = filled
    monkeypatch.setattr(pg_words, "PRUNE_ABOVE", 10)
    monkeypatch.setattr(pg_words, "COMMON_SHARE", 0.3)  # "cat" and "mat" are common
    expected = await db.read(lambda conn: _reference(conn, scope, query, 20, 0.3))
    exact = await db.read(lambda conn: _reference(conn, scope, query, 100, None))
    assert expected and len(expected) < len(exact)  # something was left out
    assert await _ranked(db, scope, query, 20) == expected


async def test_when_every_word_is_common_nothing_is_left_out(
    filled: tuple[Database, MemoryScope], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, scope = filled
    monkeypatch.setattr(pg_words, "PRUNE_ABOVE", 10)
    monkeypatch.setattr(pg_words, "COMMON_SHARE", 0.3)
    expected = await db.read(lambda conn: _reference(conn, scope, "cat mat", 100, None))
    assert len(expected) > 0.6 * 80  # most rows hold one of them
    assert await _ranked(db, scope, "cat mat", 100) == expected


async def test_odd_word_lists_are_searched_not_refused(
    filled: tuple[Database, MemoryScope], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, scope = filled
    monkeypatch.setattr(pg_words, "PRUNE_ABOVE", 10)
    monkeypatch.setattr(pg_words, "COMMON_SHARE", 0.3)
    # "now" is a stopword of PostgreSQL's english configuration (not of query.py's):
    # its query has no lexeme, its count is 0, and the other words still rank.
    zebra = await _ranked(db, scope, "zebra", 20)
    assert zebra and await _ranked(db, scope, "now zebra", 20) == zebra
    assert await _ranked(db, scope, "now", 20) == []
    # The most words a query keeps (64), every one its own flag, count and weight.
    many = " ".join(["zebra", "cat"] + [f"word{i}" for i in range(100)])
    found = await _ranked(db, scope, many, 20)
    assert found and set(found) <= set(await _ranked(db, scope, "zebra cat", 100))
