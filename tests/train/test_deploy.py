"""Deploying adapters into the fake vLLM (tests/fakes/openai_server.py, a real HTTP
server) over a real SQLite file: the hostile adapters and servers each get one clear
line, the gate is honoured (or forced past, recorded), a restarted server gets its
adapters back, and the engine's replies record the adapter that wrote them, until a
rollback sends the conversation back."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.db import Database
from bot.errors import BackendError, BackendUnavailable, BotError, UsageError
from bot.train.deploy import (
    AdapterFileError,
    VLLMAdmin,
    deploy,
    ensure_loaded,
    inspect_adapter,
)
from bot.train.registry import AdapterRegistry, AdapterStatus
from tests.fakes.openai_server import FakeOpenAIServer, Reply

GATE_PASSED = {"gate": {"passed": True, "checks": [{"name": "eval_loss", "passed": True}]}}
GATE_FAILED = {
    "gate": {
        "passed": False,
        "checks": [{"name": "eval_loss", "passed": True}, {"name": "declines", "passed": False}],
    }
}


@pytest.fixture
def adapter(tiny_lora_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny LoRA adapter (r=4) with a passed gate."""
    out = tmp_path / "sam-adapter"
    shutil.copytree(tiny_lora_dir, out)
    (out / "train_report.json").write_text(json.dumps(GATE_PASSED), encoding="utf-8")
    return out


@pytest.fixture
def server(tiny_model_dir: Path) -> Any:
    with FakeOpenAIServer(models=("tiny",), base_root=str(tiny_model_dir.resolve())) as fake:
        yield fake


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[AdapterRegistry]:
    db = Database.open(f"sqlite:///{tmp_path}/bot.db")
    yield AdapterRegistry(db)
    await db.aclose()


def _config(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "adapter_config.json").read_text())
    return data


def _write_config(path: Path, **changes: Any) -> None:
    config = {**_config(path), **changes}
    (path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")


# -- hostile adapter directories: each one line naming the file --------------------


def _missing(p: Path) -> Path:
    return p / "nowhere"


def _a_file(p: Path) -> Path:
    return p / "adapter_config.json"


def _no_config(p: Path) -> Path:
    (p / "adapter_config.json").unlink()
    return p


def _garbage_config(p: Path) -> Path:
    (p / "adapter_config.json").write_bytes(b"\xff\xfe{not json")
    return p


def _list_config(p: Path) -> Path:
    (p / "adapter_config.json").write_text("[1, 2]")
    return p


def _huge_config(p: Path) -> Path:
    (p / "adapter_config.json").write_text(" " * (2 << 20) + "{}")
    return p


def _not_lora(p: Path) -> Path:
    _write_config(p, peft_type="PREFIX_TUNING")
    return p


def _edit(**changes: Any) -> Callable[[Path], Path]:
    def edit(p: Path) -> Path:
        _write_config(p, **changes)
        return p

    return edit


def _no_weights(p: Path) -> Path:
    (p / "adapter_model.safetensors").unlink()
    return p


def _truncated(p: Path) -> Path:
    weights = p / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return p


def _header_garbage(p: Path) -> Path:
    (p / "adapter_model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    )
    return p


def _header_too_long(p: Path) -> Path:
    (p / "adapter_model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    return p


def _empty_weights(p: Path) -> Path:
    (p / "adapter_model.safetensors").write_bytes(b"")
    return p


def _broken_report(p: Path) -> Path:
    (p / "train_report.json").write_text("{half")
    return p


HOSTILE = [
    (_missing, "no such adapter directory"),
    (_a_file, "not a directory"),
    (_no_config, "no adapter_config.json"),
    (_garbage_config, "not valid JSON"),
    (_list_config, "not a JSON object"),
    (_huge_config, "larger than"),
    (_not_lora, "only LoRA"),
    (_edit(r=0), "positive integer"),
    (_edit(r="4"), "positive integer"),
    (_edit(r=True), "positive integer"),
    (_edit(base_model_name_or_path=""), "no base_model_name_or_path"),
    (_edit(base_model_name_or_path=None), "no base_model_name_or_path"),
    (_edit(r=8), "has rank 4, the config says r=8"),  # a lying config: mismatched
    (_no_weights, "no adapter weights"),
    (_truncated, "corrupt safetensors header|truncated"),
    (_header_garbage, "corrupt safetensors header"),
    (_header_too_long, "corrupt safetensors header"),
    (_empty_weights, "truncated"),
    (_broken_report, "train_report.json is not valid JSON"),
]


@pytest.mark.parametrize(("break_it", "message"), HOSTILE, ids=[f.__name__ for f, _ in HOSTILE])
def test_hostile_adapter_directories(
    adapter: Path, break_it: Callable[[Path], Path], message: str
) -> None:
    target = break_it(adapter)
    with pytest.raises(AdapterFileError, match=message) as info:
        inspect_adapter(target)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400
    assert str(adapter) in text  # it names the file or directory


def _fifo_config(p: Path) -> Path:
    import os

    (p / "adapter_config.json").unlink()
    os.mkfifo(p / "adapter_config.json")  # reading it would block forever
    return p


def _nested_config(p: Path) -> Path:
    (p / "adapter_config.json").write_text("[" * 200_000)  # past the JSON parser's depth
    return p


def _nested_header(p: Path) -> Path:
    body = b"[" * 100_000
    (p / "adapter_model.safetensors").write_bytes(len(body).to_bytes(8, "little") + body)
    return p


@pytest.mark.parametrize(
    ("break_it", "message"),
    [(_fifo_config, "not a regular file"), (_nested_config, "not valid JSON"),
     (_nested_header, "corrupt safetensors header")],
)  # fmt: skip
def test_files_that_would_hang_or_recurse(
    adapter: Path, break_it: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(AdapterFileError, match=message):
        inspect_adapter(break_it(adapter))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1 << 40) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    config=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["r", "peft_type", "base_model_name_or_path", "lora_alpha"]),
            json_values,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    weights=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_any_adapter_files_give_an_adapter_or_one_clear_error(
    adapter: Path, tmp_path_factory: pytest.TempPathFactory, config: bytes, weights: bytes | None
) -> None:
    target = tmp_path_factory.mktemp("hostile")
    shutil.copy(adapter / "adapter_model.safetensors", target)
    (target / "adapter_config.json").write_bytes(config)
    if weights is not None:
        (target / "adapter_model.safetensors").write_bytes(weights)
    try:
        info = inspect_adapter(target)
    except AdapterFileError as exc:
        assert "\n" not in str(exc) and str(target) in str(exc)
    else:
        assert info.rank >= 1 and info.base_model


def test_a_good_adapter_is_read(adapter: Path, tiny_model_dir: Path) -> None:
    info = inspect_adapter(adapter)
    assert (info.rank, info.base_model) == (4, str(tiny_model_dir.resolve()))
    assert info.report == GATE_PASSED and len(info.sha256) == 64
    # The hash covers the weights: changing one byte changes it.
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert inspect_adapter(adapter).sha256 != info.sha256


# -- deploy against the fake vLLM ---------------------------------------------------


async def _deploy(registry: AdapterRegistry, url: str, adapter: Path, **kw: Any) -> Any:
    async with VLLMAdmin(url, timeout_s=5) as admin:
        options: dict[str, Any] = {"persona_id": "sam", "adapter_dir": adapter,
                                   "canary_share": 0.25, "max_rank": 8, **kw}  # fmt: skip
        return await deploy(registry, admin, **options)


async def test_deploy_loads_and_registers(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path
) -> None:
    done = await _deploy(registry, server.base_url, adapter, name="sam-v1")
    record = done.record
    assert (record.name, record.status, record.canary_share) == (
        "sam-v1",
        AdapterStatus.CANARY,
        0.25,
    )
    assert record.report == GATE_PASSED and not record.forced and done.served_base == "tiny"
    assert server.adapters == {"sam-v1": str(adapter.resolve())}
    assert [r.name for r in await registry.live()] == ["sam-v1"]
    # The default name is the persona and the hash.
    other = adapter.parent / "other"
    shutil.copytree(adapter, other)
    done = await _deploy(registry, server.base_url, other)
    assert done.record.name == f"sam-{done.record.sha256[:8]}"


async def test_the_gate_is_honoured_or_forced_past_on_the_record(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path
) -> None:
    (adapter / "train_report.json").write_text(json.dumps(GATE_FAILED))
    with pytest.raises(UsageError, match=r"the gate failed \(declines\).*--force"):
        await _deploy(registry, server.base_url, adapter)
    (adapter / "train_report.json").unlink()
    with pytest.raises(UsageError, match="not gated"):
        await _deploy(registry, server.base_url, adapter)
    (adapter / "train_report.json").write_text(json.dumps({"eval_loss_after": 1.0}))
    with pytest.raises(UsageError, match="gate has not run"):
        await _deploy(registry, server.base_url, adapter)
    assert server.adapters == {} and await registry.all() == []

    (adapter / "train_report.json").write_text(json.dumps(GATE_FAILED))
    done = await _deploy(registry, server.base_url, adapter, force=True, name="sam-forced")
    assert done.record.forced and "forced past the gate: the gate failed" in (
        done.record.reason or ""
    )
    assert done.gate is not None and "sam-forced" in server.adapters


async def test_a_mismatched_adapter_is_refused_before_loading(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path, tiny_lora_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    _write_config(adapter, base_model_name_or_path="meta-llama/Llama-3-8B")
    with pytest.raises(AdapterFileError, match=r"trained on 'meta-llama/Llama-3-8B'.*mismatched"):
        await _deploy(registry, server.base_url, adapter)
    # Rank above the server's --max-lora-rank (finetune.max_lora_rank).
    from bot.llm.tiny import build_tiny_lora

    model_dir = Path(_config(tiny_lora_dir)["base_model_name_or_path"])
    big = build_tiny_lora(model_dir, tmp_path / "r16", rank=16)
    (big / "train_report.json").write_text(json.dumps(GATE_PASSED))
    with pytest.raises(AdapterFileError, match="rank 16 is above the server's --max-lora-rank 8"):
        await _deploy(registry, server.base_url, big)
    assert server.admin_requests == [] and await registry.all() == []


async def test_the_base_model_is_matched_by_path_or_name(
    registry: AdapterRegistry, adapter: Path, tiny_model_dir: Path
) -> None:
    # A server that reports no path: the served name must then be what it was trained on.
    with FakeOpenAIServer(models=("tiny", "other")) as fake:
        with pytest.raises(UsageError, match="name the base model with --model"):
            await _deploy(registry, fake.base_url, adapter)
        with pytest.raises(UsageError, match="does not serve a base model 'nope'"):
            await _deploy(registry, fake.base_url, adapter, model="nope")
        with pytest.raises(AdapterFileError, match="mismatched"):
            await _deploy(registry, fake.base_url, adapter, model="tiny")
        _write_config(adapter, base_model_name_or_path="tiny")
        done = await _deploy(registry, fake.base_url, adapter, model="tiny")
        assert done.served_base == "tiny"
    # The same directory spelled another way is the same model.
    spelled = str(tiny_model_dir.resolve()) + "/./"
    _write_config(adapter, base_model_name_or_path=spelled)
    with FakeOpenAIServer(base_root=str(tiny_model_dir.resolve())) as fake:
        assert (await _deploy(registry, fake.base_url, adapter, name="again")).record


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (Reply.http_error(400, message="LoRA rank 16 is greater than max_lora_rank 8"),
         BackendError, "HTTP 400: LoRA rank 16 is greater than max_lora_rank 8"),
        (Reply.http_error(404), BackendError, "does not load adapters at run time"),
        (Reply.http_error(500, message="boom\n\x1b[31mred"), BackendUnavailable, "HTTP 500: boom"),
        (Reply.http_error(503), BackendUnavailable, "HTTP 503"),
    ],
)  # fmt: skip
async def test_a_server_that_refuses_to_load(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path,
    reply: Reply, error: type[BotError], message: str,
) -> None:  # fmt: skip
    server.script_admin(reply)
    with pytest.raises(error, match=message) as info:
        await _deploy(registry, server.base_url, adapter)
    assert "\n" not in str(info.value) and "vLLM at http://127.0.0.1" in str(info.value)
    assert await registry.all() == []  # nothing registered that vLLM does not serve


async def test_a_server_that_is_down_or_a_bad_url(registry: AdapterRegistry, adapter: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot be reached.*is it running") as info:
        await _deploy(registry, f"http://127.0.0.1:{_closed_port()}/v1", adapter)
    assert "\n" not in str(info.value)
    for url in ["", "localhost:8000", "ftp://x/v1", "http://", "http://user:hunter2@/v1"]:
        with pytest.raises(UsageError, match="--base-url") as bad:
            VLLMAdmin(url)
        assert "hunter2" not in str(bad.value)


async def test_hostile_names_and_personas(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path
) -> None:
    for name in ["../x", "a b", "x" * 100, "$(id)", "nul\x00"]:
        with pytest.raises(UsageError, match="adapter name"):
            await _deploy(registry, server.base_url, adapter, name=name)
    with pytest.raises(UsageError, match="persona id"):
        await _deploy(registry, server.base_url, adapter, persona_id="Sam/../x")
    with pytest.raises(UsageError, match="from 0 to 1"):
        await _deploy(registry, server.base_url, adapter, canary_share=2.0)
    await _deploy(registry, server.base_url, adapter, name="sam-v1")
    with pytest.raises(UsageError, match="already registered"):
        await _deploy(registry, server.base_url, adapter, name="sam-v1")
    server.adapters["taken"] = "/elsewhere"
    with pytest.raises(UsageError, match="already serves a model 'taken'"):
        await _deploy(registry, server.base_url, adapter, name="taken")
    assert server.admin_requests == [
        ("load", {"lora_name": "sam-v1", "lora_path": str(adapter.resolve())})
    ]


async def test_a_restarted_server_gets_its_adapters_back(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path, tmp_path: Path
) -> None:
    await _deploy(registry, server.base_url, adapter, name="sam-v1", canary_share=1.0)
    other = tmp_path / "v2"
    shutil.copytree(adapter, other)
    await _deploy(registry, server.base_url, other, name="sam-v2", canary_share=0.1)
    third = tmp_path / "v3"
    shutil.copytree(adapter, third)
    await _deploy(registry, server.base_url, third, name="sam-v3", canary_share=0.1)  # retires v2
    async with VLLMAdmin(server.base_url) as admin:
        assert (await ensure_loaded(registry, admin)).loaded == []  # nothing missing
        server.restart()
        result = await ensure_loaded(registry, admin)
        assert sorted(result.loaded) == ["sam-v1", "sam-v3"] and result.failed == {}
        assert set(server.adapters) == {"sam-v1", "sam-v3"}  # not the retired sam-v2
        # One that fails to load is reported; the others still load.
        server.restart()
        server.script_admin(Reply.http_error(400, message="No adapter found"))
        result = await ensure_loaded(registry, admin)
        assert list(result.failed) == ["sam-v1"] and "No adapter found" in result.failed["sam-v1"]
        assert result.loaded == ["sam-v3"]


# -- the running bot: replies record the adapter; rollback; the keeper reloads --------

PERSONA = """\
version: 1
id: sam
name: Sam
description: A test persona.
language: en
system_prompt: You are Sam.
"""


async def test_the_bot_routes_records_rolls_back_and_reloads(
    tmp_path: Path, server: FakeOpenAIServer, adapter: Path
) -> None:
    import asyncio
    import sqlite3

    from bot.app import open_app
    from bot.config import load_settings
    from bot.messages import Actor, Incoming, Scope
    from bot.train.canary import AdapterRouter, in_canary

    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "sam.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "sam", "watch": False},
            "llm": {"backend": "openai", "model": "tiny", "base_url": server.base_url,
                    "max_retries": 0},
            "finetune": {"adapter_check_s": 1},
        },
    )  # fmt: skip

    def message(user: str) -> Incoming:
        scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="sam")
        return Incoming(
            scope=scope, actor=Actor(platform="test", id=user, display_name=user), text="hello"
        )

    def models() -> dict[str, list[str]]:
        with sqlite3.connect(tmp_path / "bot.db") as conn:
            rows = conn.execute(
                "SELECT c.channel, m.model FROM messages m JOIN conversations c"
                " ON c.id = m.conversation_id WHERE m.direction = 'out' ORDER BY m.id"
            ).fetchall()
        out: dict[str, list[str]] = {}
        for channel, model in rows:
            out.setdefault(channel.removeprefix("dm-"), []).append(model)
        return out

    share = 0.5
    users = [f"u{i}" for i in range(40)]
    routed = [u for u in users if in_canary(message(u).scope.conversation_key, "sam-v1", share)]
    assert 5 < len(routed) < 35
    async with open_app(settings) as app:
        router = app.engine.adapters
        assert isinstance(router, AdapterRouter)
        await app.engine.handle(message(users[0]))
        assert models() == {users[0]: ["tiny"]}  # no adapter yet: the base model

        await _deploy(AdapterRegistry(app.db), server.base_url, adapter, name="sam-v1",
                      canary_share=share)  # fmt: skip
        router.invalidate()
        for user in users:
            await app.engine.handle(message(user))
        seen = models()
        for user in users:
            assert seen[user][-1] == ("sam-v1" if user in routed else "tiny"), user
        # What reached the server asked for the adapter by name.
        assert sum(r["model"] == "sam-v1" for r in server.requests) == len(routed)

        # A rollback sends the canary's conversations back to the base model.
        await AdapterRegistry(app.db).rollback("sam")
        router.invalidate()
        await app.engine.handle(message(routed[0]))
        assert models()[routed[0]][-2:] == ["sam-v1", "tiny"]

        # The keeper loads a live adapter again when the server restarts.
        await _deploy(AdapterRegistry(app.db), server.base_url, adapter, name="sam-v2",
                      canary_share=1.0)  # fmt: skip
        server.restart()
        for _ in range(100):
            if "sam-v2" in server.adapters:
                break
            await asyncio.sleep(0.05)
        assert server.adapters == {"sam-v2": str(adapter.resolve())}


async def test_a_server_that_hangs_or_answers_garbage(
    registry: AdapterRegistry, server: FakeOpenAIServer, adapter: Path
) -> None:
    server.script_admin(Reply.hang(30))
    async with VLLMAdmin(server.base_url, timeout_s=0.5) as admin:
        with pytest.raises(BackendUnavailable, match="no answer to /load_lora_adapter"):
            await deploy(registry, admin, persona_id="sam", adapter_dir=adapter, canary_share=0.1)
        for body, message in [
            (b"<html>not json</html>", "answered no model list"),
            (b'{"data": 5}', "answered no model list"),
            (b"[" * 100_000, "answered no model list"),
            (b"x" * (2 << 20), "more than 1048576 bytes"),
        ]:
            server.models_body = body
            with pytest.raises(BackendError, match=message) as info:
                await admin.models()
            assert "\n" not in str(info.value)
    assert await registry.all() == []
