"""BM25 in SQL on PostgreSQL (`bot/memory/pg_words.py`, over the postings tables of
migration 0021) against a reference computed in Python from the messages' own
lexemes: exact, common words included, with their exact frequency. Plus the
statement's odd inputs: a PostgreSQL stopword among the words, a word PostgreSQL
splits, the same word twice, the most words a query can have."""

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


def _reference(conn: Connection, scope: MemoryScope, query: str, n: int) -> list[int]:
    """BM25 as pg_words promises it: term frequency 1, each lexeme's IDF from its exact
    frequency in the scope, length against the scope's mean."""
    rows = _lexemes(conn, scope)
    lexemes: set[str] = set()
    for t in (tsquery_expression(query) or "").split(" | "):
        vector = conn.execute(
            text("SELECT tsvector_to_array(to_tsvector('english', :t))"), {"t": t}
        ).scalar_one()
        lexemes |= set(vector)
    docs = len(rows)
    mean = sum(len(w) for w in rows.values()) / docs
    df = {t: sum(t in w for w in rows.values()) for t in lexemes}
    score = {}
    for i, words in rows.items():
        if not lexemes & words:
            continue
        total = sum(math.log(1 + (docs - df[t] + 0.5) / (df[t] + 0.5)) for t in lexemes & words)
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


@pytest.mark.parametrize(
    "query", ["zebra cat", "violin lamp river", "cat mat", "zebra", "violin lamp cat mat"]
)
async def test_ranks_exactly_as_bm25_common_words_included(
    filled: tuple[Database, MemoryScope], query: str
) -> None:
    db, scope = filled
    expected = await db.read(lambda conn: _reference(conn, scope, query, 20))
    assert expected  # the query finds something, so the comparison says something
    assert await _ranked(db, scope, query, 20) == expected


async def test_a_query_of_common_words_ranks_every_row_that_holds_one(
    filled: tuple[Database, MemoryScope],
) -> None:
    db, scope = filled
    expected = await db.read(lambda conn: _reference(conn, scope, "cat mat", 100))
    assert len(expected) > 0.6 * 80  # most rows hold one of them
    assert await _ranked(db, scope, "cat mat", 100) == expected


async def test_odd_word_lists_are_searched_not_refused(
    filled: tuple[Database, MemoryScope],
) -> None:
    db, scope = filled
    # "now" is a stopword of PostgreSQL's english configuration (not of query.py's):
    # it has no lexeme, and the other words still rank.
    zebra = await _ranked(db, scope, "zebra", 20)
    assert zebra and await _ranked(db, scope, "now zebra", 20) == zebra
    assert await _ranked(db, scope, "now", 20) == []
    # The same word twice, and a plural stemmed to it, count once, as in the index.
    assert await _ranked(db, scope, "zebra zebras zebra", 20) == zebra
    # The most words a query keeps (64).
    many = " ".join(["zebra", "cat"] + [f"word{i}" for i in range(100)])
    found = await _ranked(db, scope, many, 20)
    assert found == await db.read(lambda conn: _reference(conn, scope, many, 20))
