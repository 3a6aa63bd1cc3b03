"""Memory: search, packing, forgetting, degradation and bad input, on SQLite and
PostgreSQL (the `db` fixture) unless a test names SQLite's own machinery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from bot.db import Database
from bot.llm.tokens import ApproxTokenCounter
from bot.memory.ledger import Ledger
from bot.memory.query import match_expression, trigram_expression
from bot.memory.store import ForgetRefused, MemoryHit, SQLiteMemory, pack_memories
from tests.memory.conftest import T0, BrokenEmbedder, HashEmbedder, say, scope_for

NOW = T0 + timedelta(days=40)  # 10 June


async def test_finds_the_right_message_and_only_the_speakers(
    memory: SQLiteMemory, ledger: Ledger
) -> None:
    mine, dog, _ = await say(ledger, scope_for("ann"), "My dog is called Rex", reply="Cute!")
    await say(ledger, scope_for("ann"), "I work as a nurse in Leeds")
    theirs, _, _ = await say(ledger, scope_for("bob"), "My dog is called Bella")
    hits = await memory.search(mine, "what is my dog called?", now=NOW)
    assert hits and hits[0].id == dog
    assert all("Bella" not in h.text for h in hits)
    other = await memory.search(theirs, "dog", now=NOW)
    assert [h.text for h in other] == ["My dog is called Bella"]


async def test_dm_memories_stay_out_of_channels(memory: SQLiteMemory, ledger: Ledger) -> None:
    await say(ledger, scope_for("ann"), "my secret diagnosis is migraine")
    in_channel, _, _ = await say(ledger, scope_for("ann", "general"), "hello all")
    assert await memory.search(in_channel, "secret diagnosis migraine", now=NOW) == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "?!.,;:-",
        "🙂🐶🎉",
        '"',
        '"unbalanced',
        "dog*",
        "NEAR(dog cat)",
        "dog AND cat OR NOT x",
        "(((",
        "col:dog",
        "^dog",
        "x" * 100_000,
        "dog " * 5000,
        "\x00 dog \x1f",
        "上周 我的狗 叫 什么",
        "犬",
    ],
)
async def test_odd_queries_never_raise(memory: SQLiteMemory, ledger: Ledger, query: str) -> None:
    scope, _, _ = await say(ledger, scope_for("ann"), 'my dog "Rex" AND (cat*) NEAR 我的狗叫小黑')
    hits = await memory.search(scope, query, now=NOW)
    assert isinstance(hits, list)


async def test_fts_syntax_in_stored_text_is_searchable(
    memory: SQLiteMemory, ledger: Ledger
) -> None:
    scope, mid, _ = await say(ledger, scope_for("ann"), 'I said "NEAR" AND * (really)')
    hits = await memory.search(scope, 'what about "NEAR" AND *?', now=NOW)
    assert [h.id for h in hits] == [mid]


def test_match_expressions_are_quoted_tokens() -> None:
    assert match_expression('dog" OR *') == '"dog"'
    assert match_expression("?!") is None
    assert match_expression("the") == '"the"'  # only stopwords: keep them
    assert trigram_expression("我的狗叫小黑") == '"我的狗" OR "的狗叫" OR "狗叫小" OR "叫小黑"'


async def test_chinese_text_is_found_through_trigrams(memory: SQLiteMemory, ledger: Ledger) -> None:
    scope, mid, _ = await say(ledger, scope_for("li"), "我的狗叫小黑，它三岁了")
    await say(ledger, scope_for("li"), "今天天气很好")
    hits = await memory.search(scope, "我的狗叫什么名字", now=NOW)
    assert hits[0].id == mid
    short = await memory.search(scope, "小黑", now=NOW)  # two characters: substring scan
    assert short[0].id == mid


async def test_time_expressions_boost_their_period(memory: SQLiteMemory, ledger: Ledger) -> None:
    scope, old, _ = await say(ledger, scope_for("ann"), "went hiking in the hills", at=T0)
    _, recent, _ = await say(
        ledger, scope_for("ann"), "went hiking by the sea", at=NOW - timedelta(days=1)
    )
    assert (await memory.search(scope, "hiking yesterday", now=NOW))[0].id == recent
    assert (await memory.search(scope, "hiking in May", now=NOW))[0].id == old


async def test_dense_search_and_batched_embeddings(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    embedder = HashEmbedder()
    memory = SQLiteMemory(db, embedder=embedder, embed_delay_s=60)
    ids = []
    for i in range(10):
        scope, a, b = await say(ledger, scope_for("ann"), f"note {i} about gardening", reply="ok")
        memory.enqueue([("message", a), ("message", b)])
        ids.append(a)
    await memory.flush()
    assert embedder.calls == [20]  # one batch for all queued turns
    hits = await memory.search(scope, "gardening note 3", k=3, now=NOW)
    assert hits[0].id == ids[3]
    await memory.aclose()


async def test_failing_model_falls_back_to_bm25_and_logs_once(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    embedder = BrokenEmbedder()
    memory = SQLiteMemory(db, embedder=embedder)
    scope, mid, _ = await say(ledger, scope_for("ann"), "my cat is Tom")
    with capture_logs() as logs:
        memory.enqueue([("message", mid)])
        await memory.flush()
        for _ in range(3):
            hits = await memory.search(scope, "cat", now=NOW)
            assert [h.id for h in hits] == [mid]
    assert [e["event"] for e in logs].count("memory.dense_off") == 1
    await memory.aclose()


async def test_missing_model_directory_falls_back(db, ledger: Ledger, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.memory.embeddings import SentenceTransformerEmbedder

    memory = SQLiteMemory(db, embedder=SentenceTransformerEmbedder(str(tmp_path / "nope")))
    scope, mid, _ = await say(ledger, scope_for("ann"), "my cat is Tom")
    with capture_logs() as logs:
        memory.enqueue([("message", mid)])
        await memory.flush()  # loading fails here: logged, and embedding stays off
        assert [h.id for h in await memory.search(scope, "cat", now=NOW)] == [mid]
        assert [h.id for h in await memory.search(scope, "cat", now=NOW)] == [mid]
    assert [e["event"] for e in logs].count("memory.dense_off") == 1
    await memory.aclose()


def test_packing_respects_the_budget_and_dates_every_line() -> None:
    tokens = ApproxTokenCounter()
    hits = [
        MemoryHit("fact", 1, "Has a dog named Rex.", 1.0, T0),
        *[MemoryHit("message", i, f"message number {i} " * 5, 0.5, T0, "Ann") for i in range(50)],
    ]
    summaries = [MemoryHit("summary", 9, "They talked about dogs.", 0.0, T0)]
    text = pack_memories(hits, summaries, 120, tokens)
    assert tokens.count_text(text) <= 120
    assert "Has a dog named Rex." in text and "They talked about dogs." in text
    for line in text.splitlines():
        assert line.endswith(":") or "(2026-05-01)" in line
    assert pack_memories(hits, summaries, 0, tokens) == ""


async def test_forget_all_deletes_everything_of_that_person_only(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    memory = SQLiteMemory(db, embedder=HashEmbedder())
    ann, a, b = await say(ledger, scope_for("ann"), "I love jazz", reply="Me too")
    bob, c, _ = await say(ledger, scope_for("bob"), "I love jazz as well")
    memory.enqueue([("message", a), ("message", b), ("message", c)])
    await memory.flush()
    counts = await memory.forget(ann.user_id, "all")
    assert counts["messages"] == 2 and counts["embeddings"] == 2
    assert await memory.search(ann, "jazz", now=NOW) == []
    assert [h.id for h in await memory.search(bob, "jazz", now=NOW)] == [c]
    await memory.aclose()


async def test_forget_of_someone_elses_id_is_refused_and_deletes_nothing(
    memory: SQLiteMemory, ledger: Ledger
) -> None:
    ann, a, _ = await say(ledger, scope_for("ann"), "I love jazz")
    bob, _, _ = await say(ledger, scope_for("bob"), "hi")
    with pytest.raises(ForgetRefused):
        await memory.forget(bob.user_id, f"m{a}")
    with pytest.raises(KeyError):
        await memory.forget(bob.user_id, "f999")
    with pytest.raises(ValueError, match="not a memory id"):
        await memory.forget(bob.user_id, "DROP TABLE")
    assert [h.id for h in await memory.search(ann, "jazz", now=NOW)] == [a]
    await memory.forget(ann.user_id, f"m{a}")
    assert await memory.search(ann, "jazz", now=NOW) == []


def test_sign_bit_prefilter_finds_what_the_exact_scan_finds() -> None:
    from types import SimpleNamespace

    import numpy as np

    from bot.memory.vectors import Vectors as _Vectors

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, 128)).astype(np.float32)
    matrix = centres[rng.integers(0, 50, 6000)] + 0.6 * rng.standard_normal((6000, 128))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype("<f4")
    rows = [
        SimpleNamespace(id=i + 1, kind="message", item_id=i + 1, vector=v.tobytes())
        for i, v in enumerate(matrix)
    ]
    exact, prefiltered = _Vectors(exact_below=10**9), _Vectors(exact_below=0, rescore=600)
    for vectors in (exact, prefiltered):
        vectors.add(rows[:4000], 128)
        vectors.top(matrix[0], 10)  # builds the sign bits
        for start in range(4000, 6000, 2):  # then turns arrive two vectors at a time
            vectors.add(rows[start : start + 2], 128)
    assert prefiltered.size == 6000 and len(prefiltered.rows) < 9000  # grown, not per row
    for q in range(20):
        # Queries near rows of the first block and of the appended ones alike.
        query = matrix[q * 297] + 0.1 * rng.standard_normal(128).astype(np.float32)
        query /= np.linalg.norm(query)
        want, got = exact.top(query, 10), prefiltered.top(query, 10)
        assert got[0] == want[0]  # the nearest, with its exact score
        assert len({i for _, i, _ in got} & {i for _, i, _ in want}) >= 9
        assert [s for *_, s in got] == sorted((s for *_, s in got), reverse=True)


async def test_rows_out_of_scope_cannot_crowd_the_lexical_page(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    memory = SQLiteMemory(db)
    scope, keep, _ = await say(ledger, scope_for("ann"), "my saxophone is gold")
    hidden = []
    for i in range(200):
        _, mid, _ = await say(ledger, scope_for("ann"), f"saxophone saxophone note {i}")
        hidden.append(mid)
    # Deleted rows keep their index entries until upkeep; they rank first here.
    await db.run(
        lambda c: c.execute(
            text(
                "UPDATE messages SET deleted_at = created_at "
                f"WHERE id IN ({','.join(map(str, hidden))})"
            )
        )
    )
    hits = await memory.search(scope, "saxophone", k=5, now=NOW)
    assert [h.id for h in hits] == [keep]
    await memory.aclose()


async def test_a_scope_holding_most_messages_ranks_without_its_token_and_the_same(
    sqlite_db: Database,
) -> None:
    from bot.memory.query import match_expression
    from bot.memory.sqlite_search import lexical as _lexical

    db, ledger = sqlite_db, Ledger(sqlite_db)

    ann_ids = []
    for i in range(40):
        ann, mid, _ = await say(ledger, scope_for("ann"), f"jazz night number {i}")
        ann_ids.append(mid)
    for i in range(12):  # fewer, but each ranks above all of Ann's
        await say(ledger, scope_for("bob"), f"jazz jazz jazz {i}")
    expression = match_expression("jazz")

    async def ranked(held: int | None) -> list[list[tuple[str, int]]]:
        return await db.read(  # type: ignore[no-any-return]
            lambda c: _lexical(c, ann, ("message",), expression, None, [], 10, held)
        )

    with_token = await ranked(None)
    without = await ranked(40)  # 40 of 52 messages: ranked without the token
    assert without == with_token
    assert {i for _, i in with_token[0]} <= set(ann_ids) and len(with_token[0]) == 10


async def test_each_search_is_timed_by_backend_when_metrics_are_given(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    from bot.metrics import Metrics

    metrics = Metrics(worker="w")
    memory = SQLiteMemory(db, metrics=metrics)
    scope, *_ = await say(ledger, scope_for("ann"), "my kayak is red")
    await memory.search(scope, "kayak")
    await memory.search(scope, "red")
    backend = db.engine.dialect.name
    count = metrics.registry.get_sample_value(
        "personabot_memory_search_seconds_count", {"backend": backend}
    )
    assert count == 2
    await memory.aclose()
