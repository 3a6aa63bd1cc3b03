"""The memory as the engine's MemorySource: recall into the prompt, observe, summaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from bot.engine import RecallRequest, TurnRecord
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.llm.tokens import ApproxTokenCounter
from bot.memory.ledger import Ledger
from bot.memory.store import SQLiteMemory
from tests.memory.conftest import T0, say, scope_for


async def test_recall_is_dated_within_budget_and_skips_history(
    memory: SQLiteMemory, ledger: Ledger
) -> None:
    scope = scope_for("ann")
    _, old, _ = await say(ledger, scope, "my exam is on Friday", at=T0)
    _, recent, _ = await say(ledger, scope, "the exam went well", at=T0 + timedelta(days=2))
    mscope, now_id, _ = await say(ledger, scope, "remember my exam?", at=T0 + timedelta(days=3))
    request = RecallRequest(
        scope=scope,
        user_id=mscope.user_id,
        conversation_id=mscope.conversation_id,
        message_id=now_id,
        query="remember my exam?",
        budget_tokens=200,
        tokens=ApproxTokenCounter(),
        now=T0 + timedelta(days=3),
        history_ids=frozenset({recent}),
    )
    text = await memory.recall(request)
    assert "(2026-05-01) ann: my exam is on Friday" in text
    assert "went well" not in text  # already in the prompt as history
    assert "remember my exam?" not in text  # the message being answered
    tiny = await memory.recall(replace(request, budget_tokens=5))
    assert tiny == ""
    assert old < recent


async def test_a_full_window_is_summarised_and_the_summary_is_recalled(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    def handler(request: ChatRequest) -> str:
        return "Ann talked about her garden and her tomatoes."

    backend = MockBackend(handler)

    async def backend_for(persona: str) -> MockBackend:
        return backend

    memory = SQLiteMemory(db, backend_for=backend_for, summary_window=6)
    scope = scope_for("ann")
    for i in range(3):
        mscope, a, b = await say(
            ledger, scope, f"garden news {i}", reply="lovely", at=T0 + timedelta(hours=i)
        )
        assert b is not None
        await memory.observe(
            TurnRecord(scope, mscope.user_id, mscope.conversation_id, a, b, "x", "y", T0)
        )
    assert len(backend.requests) == 1  # the sixth message filled the window
    assert "ann: garden news 0" in backend.requests[0].messages[-1].content
    items = await memory.list_memories(mscope.user_id)
    assert [i.kind for i in items] == ["summary"]
    text = await memory.recall(
        RecallRequest(
            scope=scope,
            user_id=mscope.user_id,
            conversation_id=mscope.conversation_id,
            message_id=b,
            query="how is the garden",
            budget_tokens=500,
            tokens=ApproxTokenCounter(),
            now=T0 + timedelta(days=1),
            history_ids=frozenset(),
        )
    )
    assert "Earlier conversations, summarised:" in text and "tomatoes" in text
    # Quiet conversations: nothing new to summarise yet.
    assert await memory.summarise_quiet(T0 + timedelta(days=2)) == []
    await say(ledger, scope, "more garden news", reply="ok", at=T0 + timedelta(days=1))
    await say(ledger, scope, "even more garden news", reply="ok", at=T0 + timedelta(days=1))
    assert len(await memory.summarise_quiet(T0 + timedelta(days=2))) == 1
    await memory.aclose()
