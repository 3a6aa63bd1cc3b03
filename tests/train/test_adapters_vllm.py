"""Adapters deployed into the real vLLM CPU server (`--enable-lora --max-lora-rank 8`,
the session's `vllm_server`): the bot's replies are written by the adapter and record
its name, a rollback sends the conversation back to the base model, an adapter vLLM
lost is loaded again, and a mismatched adapter (base model, rank) is one clear error.

Run or skip with `-m vllm` / `-m "not vllm"` (the server starts once per session).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.db import Database
from bot.errors import BackendError
from bot.train.deploy import AdapterFileError, VLLMAdmin, deploy, ensure_loaded
from bot.train.registry import AdapterRegistry

pytestmark = pytest.mark.vllm

GATE_PASSED = {"gate": {"passed": True, "checks": []}}
PERSONA = """\
version: 1
id: sam
name: Sam
description: A test persona.
language: en
system_prompt: You are Sam.
sampling:
  temperature: 0.0
  max_tokens: 12
"""


def _gated(source: Path, out: Path) -> Path:
    shutil.copytree(source, out)
    (out / "train_report.json").write_text(json.dumps(GATE_PASSED), encoding="utf-8")
    return out


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[AdapterRegistry]:
    db = Database.open(f"sqlite:///{tmp_path}/bot.db")
    yield AdapterRegistry(db)
    await db.aclose()


async def _unload_all(admin: VLLMAdmin, *names: str) -> None:
    served = {m.id for m in await admin.models()}
    for name in names:
        if name in served:
            await admin.unload(name)


async def test_replies_record_the_adapter_and_rollback_routes_back(
    tmp_path: Path, vllm_server: str, tiny_model_dir: Path, tiny_lora_dir: Path
) -> None:
    from bot.app import open_app
    from bot.config import load_settings
    from bot.messages import Actor, Incoming, Scope
    from bot.train.canary import AdapterRouter

    adapter = _gated(tiny_lora_dir, tmp_path / "adapter")
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "sam.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "sam", "watch": False},
            "llm": {"backend": "openai", "model": "tiny", "base_url": vllm_server,
                    "tokenizer": str(tiny_model_dir), "max_retries": 0},
            "finetune": {"max_lora_rank": 8, "adapter_check_s": 3600},
        },
    )  # fmt: skip

    def say(user: str) -> Incoming:
        scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="sam")
        actor = Actor(platform="test", id=user, display_name=user)
        return Incoming(scope=scope, actor=actor, text="Hello there, how are you today?")

    def replies() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "bot.db") as conn:
            query = "SELECT model, text FROM messages WHERE direction = 'out' ORDER BY id"
            return [(m, t) for m, t in conn.execute(query)]

    async with VLLMAdmin(vllm_server) as admin:
        try:
            async with open_app(settings) as app:
                router = app.engine.adapters
                assert isinstance(router, AdapterRouter)
                await app.engine.handle(say("ann"))
                done = await deploy(
                    AdapterRegistry(app.db), admin, persona_id="sam", adapter_dir=adapter,
                    canary_share=1.0, name="sam-real", max_rank=8,
                )  # fmt: skip
                assert done.served_base == "tiny"
                assert "sam-real" in {m.id for m in await admin.models()}
                router.invalidate()
                await app.engine.handle(say("ann"))
                await AdapterRegistry(app.db).rollback("sam")
                router.invalidate()
                await app.engine.handle(say("ann"))
            (base_model, base_text), (adapted_model, adapted_text), (back_model, _) = replies()
            assert (base_model, adapted_model, back_model) == ("tiny", "sam-real", "tiny")
            assert adapted_text != base_text  # the adapter really wrote it
        finally:
            await _unload_all(admin, "sam-real")


async def test_an_adapter_vllm_lost_is_loaded_again(
    tmp_path: Path, vllm_server: str, tiny_lora_dir: Path, registry: AdapterRegistry
) -> None:
    adapter = _gated(tiny_lora_dir, tmp_path / "adapter")
    async with VLLMAdmin(vllm_server) as admin:
        try:
            await deploy(
                registry, admin, persona_id="sam", adapter_dir=adapter, canary_share=0.5,
                name="sam-lost", max_rank=8,
            )  # fmt: skip
            await admin.unload("sam-lost")  # what a restart does to runtime adapters
            assert "sam-lost" not in {m.id for m in await admin.models()}
            result = await ensure_loaded(registry, admin)
            assert result.loaded == ["sam-lost"] and result.failed == {}
            served = {m.id: m for m in await admin.models()}
            assert served["sam-lost"].parent == "tiny"
        finally:
            await _unload_all(admin, "sam-lost")


async def test_mismatched_adapters_are_clear_errors(
    tmp_path: Path, vllm_server: str, tiny_model_dir: Path, tiny_lora_dir: Path,
    registry: AdapterRegistry,
) -> None:  # fmt: skip
    from bot.llm.tiny import build_tiny_lora

    big = _gated(build_tiny_lora(tiny_model_dir, tmp_path / "r16", rank=16), tmp_path / "big")
    options: dict[str, Any] = {"persona_id": "sam", "canary_share": 0.1}
    async with VLLMAdmin(vllm_server) as admin:
        try:
            # Our check, from finetune.max_lora_rank, before the server is asked.
            with pytest.raises(AdapterFileError, match="rank 16 is above"):
                await deploy(registry, admin, adapter_dir=big, max_rank=8, **options)
            # Unchecked here, the server refuses it itself: one line with its reason.
            refused = r"HTTP \d{3}: .*LoRA rank 16 is greater than max_lora_rank 8"
            with pytest.raises(BackendError, match=refused) as info:
                await deploy(registry, admin, adapter_dir=big, max_rank=None, name="big",
                             **options)  # fmt: skip
            assert "\n" not in str(info.value)
            # Trained on another model.
            other = _gated(tiny_lora_dir, tmp_path / "other")
            config = json.loads((other / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = "Qwen/Qwen2.5-0.5B-Instruct"
            (other / "adapter_config.json").write_text(json.dumps(config))
            with pytest.raises(AdapterFileError, match="mismatched"):
                await deploy(registry, admin, adapter_dir=other, max_rank=8, **options)
            assert await registry.all() == []
            assert {m.id for m in await admin.models()} & {"big"} == set()
        finally:
            await _unload_all(admin, "big")
