"""PostgreSQL's own pieces of the memory: the HNSW index serving the scoped vector
query, `backfill_vectors` for rows copied in without their pgvector column, and the
full-text and trigram paths' isolation at the SQL level."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from bot.db import Database
from bot.memory.ledger import Ledger
from bot.memory.pg_search import _nearest_sql, backfill_vectors, vector_literal
from bot.memory.store import Memory
from tests.memory.conftest import HashEmbedder, say, scope_for


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    db = Database.open(postgres_url)
    yield db
    await db.aclose()


async def test_the_scoped_vector_query_can_use_the_hnsw_index_and_stays_in_scope(
    pg: Database,
) -> None:
    ledger = Ledger(pg)
    embedder = HashEmbedder(dim=384)
    memory = Memory(pg, embedder=embedder, embed_delay_s=0)
    ann, a1, _ = await say(ledger, scope_for("ann"), "my violin lesson is on friday")
    bob, b1, _ = await say(ledger, scope_for("bob"), "my violin lesson is on friday")
    memory.enqueue([("message", a1), ("message", b1)])
    await memory.flush()
    hits = await memory.search(ann, "violin lesson friday")
    assert [h.id for h in hits] == [a1]
    assert [h.id for h in await memory.search(bob, "violin lesson friday")] == [b1]

    def plan(conn: object) -> str:
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # type: ignore[attr-defined]
        conn.execute(text("SET LOCAL enable_bitmapscan = off"))  # type: ignore[attr-defined]
        conn.execute(text("SET LOCAL enable_indexscan = on"))  # type: ignore[attr-defined]
        rows = conn.execute(  # type: ignore[attr-defined]
            text(f"EXPLAIN {_nearest_sql(384)}"),
            {"uid": ann.user_id, "cid": ann.conversation_id, "model": embedder.name,
             "q": vector_literal(embedder.embed(["violin"])[0]), "n": 10},
        )  # fmt: skip
        return "\n".join(r[0] for r in rows)

    assert "ix_embeddings_hnsw_half_384" in await pg.run(plan)
    await memory.aclose()


async def test_backfill_fills_the_vector_column_from_the_blobs(pg: Database) -> None:
    ledger = Ledger(pg)
    embedder = HashEmbedder(dim=384)
    memory = Memory(pg, embedder=embedder, embed_delay_s=0)
    ann, a1, r1 = await say(ledger, scope_for("ann"), "the lighthouse keeper", reply="a story")
    memory.enqueue([("message", a1), ("message", r1)])
    await memory.flush()
    # As `bot db copy` leaves them: the portable blob copied, the pgvector column not.
    await pg.run(lambda c: c.execute(text("UPDATE embeddings SET embedding = NULL")))
    assert await memory.search(ann, "lighthouse keeper") != []  # words still find it
    filled = await pg.run(backfill_vectors)
    assert filled == 2
    assert await pg.run(backfill_vectors) == 0  # nothing left to fill
    same = await pg.read(
        lambda c: c.execute(
            text("SELECT count(*) FROM embeddings WHERE embedding IS NOT NULL AND dim = 384")
        ).scalar()
    )
    assert same == 2
    scored = await memory.search_backend.dense(ann, _vector(embedder, "lighthouse keeper"), 10)
    assert scored is not None and scored[0][1] == a1 and scored[0][2] > 0.5
    await memory.aclose()


def _vector(embedder: HashEmbedder, query: str):  # type: ignore[no-untyped-def]
    from bot.memory.backend import QueryVector

    async def make():  # type: ignore[no-untyped-def]
        return embedder.embed([query])[0]

    return QueryVector(make, eager=False)


async def test_backfill_on_sqlite_is_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database.open(f"sqlite:///{tmp_path}/x.db")
    try:
        assert await db.run(backfill_vectors) == 0
    finally:
        await db.aclose()


async def test_cjk_and_words_stay_in_scope(pg: Database) -> None:
    ledger = Ledger(pg)
    memory = Memory(pg)
    ann, a1, _ = await say(ledger, scope_for("ann"), "我喜欢吃苹果和香蕉")
    await say(ledger, scope_for("bob"), "我喜欢吃苹果和香蕉")
    ann_channel, a2, _ = await say(ledger, scope_for("ann", "general"), "我喜欢吃苹果")
    assert [h.id for h in await memory.search(ann, "喜欢吃苹果")] == [a1]
    assert [h.id for h in await memory.search(ann, "苹果")] == [a1]  # two characters
    assert [h.id for h in await memory.search(ann_channel, "苹果")] == [a2]
    await memory.aclose()


async def test_a_rare_word_outranks_a_common_one_which_still_finds_its_rows(
    pg: Database,
) -> None:
    from bot.memory.pg_words import lexical_lists

    ledger = Ledger(pg)
    ann, first, _ = await say(ledger, scope_for("ann"), "the zebra crossed with a cat")
    cats = [(await say(ledger, scope_for("ann"), f"a cat slept on mat {i}"))[1] for i in range(30)]
    _, last, _ = await say(ledger, scope_for("ann"), "a zebra again")

    async def ranked(tsq: str) -> list[int]:
        lists = await pg.read(
            lambda conn: lexical_lists(conn, ann, ("message",), tsq, [], [], 40, {})
        )
        return [i for _, i in lists[0]]

    # Both rows of the rare word first (the shorter one above), then the cat rows,
    # newest first among equals: "cat" is in 31 of 32 rows and still counted.
    assert await ranked("zebra | cat") == [last, first, *reversed(cats)]
    assert set(await ranked("cat")) == {first, *cats}


async def test_search_statements_are_planned_for_their_scope_never_generically(
    pg: Database,
) -> None:
    """psycopg prepares a statement run five times on a connection, and PostgreSQL may
    then plan it once for any parameters: in a database of many small scopes, a plan
    that reads a large scope row by row (636 ms p50 at 100k, benchmarks.md). The
    session here asks for generic plans, as PostgreSQL may choose by itself; every
    word, trigram and vector statement must still be planned for its own values."""
    from bot.memory.pg_search import _HNSW_SETTINGS

    ledger = Ledger(pg)
    embedder = HashEmbedder(dim=384)
    memory = Memory(pg, embedder=embedder, embed_delay_s=0)
    ann, a1, _ = await say(ledger, scope_for("ann"), "my violin lesson is on friday 我喜欢苹果")
    await say(ledger, scope_for("bob"), "my violin lesson is on friday 我喜欢苹果")
    memory.enqueue([("message", a1)])
    await memory.flush()
    backend = memory.search_backend
    literal = vector_literal(embedder.embed(["violin lesson"])[0])
    params = {"uid": ann.user_id, "cid": ann.conversation_id, "model": embedder.name}
    with pg.engine.connect() as conn:
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.commit()
        for _ in range(8):  # past psycopg's threshold, and past PostgreSQL's five
            with conn.begin():
                lists = backend.lexical(ann, ("message",), "violin lesson 喜欢苹果", 10)(conn)
            assert lists and all(found == [("message", a1)] for found in lists)
            with conn.begin():
                conn.execute(_HNSW_SETTINGS, {"ef": "100"})
                near = conn.execute(_nearest_sql(384), {**params, "q": literal, "n": 5}).all()
            assert [r.item_id for r in near] == [a1]
        prepared = conn.execute(
            text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        ).all()
        assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "force_generic_plan"
    searched = [r for r in prepared if "_terms t" in r.statement or "<=>" in r.statement]
    searched += [r for r in prepared if "LIKE" in r.statement and "messages" in r.statement]
    assert len(searched) >= 3, [r.statement[:80] for r in prepared]  # words, trigrams, vectors
    assert all(r.generic_plans == 0 and r.custom_plans >= 3 for r in searched), [
        (r.statement[:60], r.generic_plans, r.custom_plans) for r in searched
    ]
    await memory.aclose()


async def test_each_leg_reads_its_own_candidates_so_fusion_reads_nothing_more(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The word leg reads its candidates' rows in its transaction and the dense leg in
    the vector query's: a search is two reads, and a row only the vectors found (no
    shared word) still comes back with its text, in scope, as before."""
    ledger = Ledger(pg)
    embedder = HashEmbedder(dim=384)
    memory = Memory(pg, embedder=embedder, embed_delay_s=0)
    ann, by_words, _ = await say(ledger, scope_for("ann"), "the violin lesson moved")
    # Stopwords only: no lexeme for the word leg, a vector close to the query's "the".
    _, by_vector, _ = await say(ledger, scope_for("ann"), "the the the")
    _, other, _ = await say(ledger, scope_for("bob"), "the the the")
    memory.enqueue([("message", by_words), ("message", by_vector), ("message", other)])
    await memory.flush()
    await memory.search(ann, "warm the model")
    reads: list[bool] = []
    real = pg.read

    async def counted(work, *, alone: bool = False):  # type: ignore[no-untyped-def]
        reads.append(alone)
        return await real(work, alone=alone)

    monkeypatch.setattr(pg, "read", counted)
    hits = await memory.search(ann, "violin the")
    assert {h.id: h.text for h in hits} == {
        by_words: "the violin lesson moved",
        by_vector: "the the the",
    }
    assert other not in {h.id for h in hits}
    assert reads == [True, True]  # the word leg and the vector leg, nothing after fusion
    await memory.aclose()
