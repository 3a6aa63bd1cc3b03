"""Fact extraction through the real vLLM server (tiny random model, CPU): proves the
request (JSON schema structured output) and response path end to end. The tiny
model's facts are junk, but guided decoding makes them valid JSON of our schema;
we check handling, not quality."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.llm import load_token_counter
from bot.llm.openai_backend import OpenAIBackend
from bot.memory.ledger import Ledger
from bot.memory.store import SQLiteMemory
from tests.memory.conftest import T0, say, scope_for

pytestmark = pytest.mark.vllm


async def test_extraction_through_vllm_structured_output(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path, db, ledger: Ledger
) -> None:  # type: ignore[no-untyped-def]
    llm = OpenAIBackend(
        vllm_server,
        vllm_model_name,
        max_retries=0,
        timeout_s=60,
        tokens=load_token_counter(str(tiny_model_dir)),
    )
    memory = SQLiteMemory(db, extract_max_tokens=96)
    scope, message_id, _ = await say(ledger, scope_for("ann"), "My dog is Rex.", reply="Hi")
    async with llm:
        result = await memory.extract(scope, "p", llm, now=T0)
    # The server accepted the schema and answered; whatever it said was handled: a
    # truncated answer is a reported problem, a complete one yields only facts
    # that cite the one message the model was shown.
    assert result.facts or result.problems
    assert not any(p.startswith("backend:") for p in result.problems), result.problems
    for fact in result.facts:
        assert fact.source_ids == (message_id,)
    stored = await memory.list_memories(scope.user_id)
    assert len(stored) == len([f for f in result.facts if f.duplicate_of is None])
    await memory.aclose()
