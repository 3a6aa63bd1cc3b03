"""Putting a LoRA adapter into a running vLLM, and keeping it there.

`inspect_adapter` reads an adapter directory and refuses, with one line naming the
file and the problem, anything vLLM would choke on or serve wrongly: no
`adapter_config.json`, a config that is not LoRA or has no rank, weights missing or
whose header is corrupt, tensors whose rank disagrees with the config. `deploy`
then checks the adapter against the server (the base model it was trained on, the
highest rank the server takes) and the gate's verdict in `train_report.json`, loads
it (`POST /v1/load_lora_adapter`), and registers it. `ensure_loaded` compares the
registry's live adapters with `/v1/models` and loads again what a restarted vLLM
lost.

The files are read in `bot.train.adapter_files`, the vLLM side is `VLLMAdmin`
(`bot.train.vllm_admin`); both are exported from here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from bot.errors import BackendError, UsageError
from bot.train.adapter_files import (
    REPORT_NAME,
    AdapterFileError,
    AdapterInfo,
    inspect_adapter,
)
from bot.train.registry import (
    AdapterRecord,
    AdapterRegistry,
    check_adapter_name,
    check_persona_id,
)
from bot.train.vllm_admin import ServedModel, VLLMAdmin

__all__ = [
    "AdapterFileError",
    "AdapterInfo",
    "ServedModel",
    "VLLMAdmin",
    "deploy",
    "ensure_loaded",
    "inspect_adapter",
]

log = structlog.get_logger("bot.train.deploy")


def gate_problem(report: Mapping[str, Any] | None) -> str | None:
    """Why the report does not allow serving (None: the gate passed)."""
    if report is None:
        return f"no {REPORT_NAME}: the adapter was not gated (train it with `bot train`)"
    gate = report.get("gate")
    if not isinstance(gate, dict):
        return f"{REPORT_NAME} has no gate result: the gate has not run"
    if gate.get("passed") is not True:
        failed = [
            str(c.get("name"))
            for c in gate.get("checks") or []
            if isinstance(c, dict) and not c.get("passed")
        ]
        return "the gate failed" + (f" ({', '.join(failed)})" if failed else "")
    return None


def _base_of(models: list[ServedModel], model: str | None, url: str) -> ServedModel:
    bases = [m for m in models if m.parent is None]
    if model is not None:
        found = next((m for m in bases if m.id == model), None)
        if found is None:
            served = ", ".join(m.id for m in bases) or "nothing"
            raise UsageError(f"vLLM at {url} does not serve a base model {model!r} ({served})")
        return found
    if len(bases) != 1:
        served = ", ".join(m.id for m in bases) or "no base model"
        raise UsageError(f"vLLM at {url} serves {served}: name the base model with --model")
    return bases[0]


def _same_model(trained_on: str, served: ServedModel) -> bool:
    names = {served.id, *([served.root] if served.root else [])}
    if trained_on in names:
        return True
    try:  # both local directories: the same one however it is spelled
        mine = Path(trained_on).expanduser().resolve(strict=True)
        return any(mine == Path(n).resolve(strict=True) for n in names if n and Path(n).exists())
    except (OSError, RuntimeError):
        return False


@dataclass(frozen=True, slots=True)
class Deployment:
    """What `deploy` did."""

    record: AdapterRecord
    served_base: str
    gate: str | None  # None: passed; else why it was forced past


async def deploy(
    registry: AdapterRegistry,
    admin: VLLMAdmin,
    *,
    persona_id: str,
    adapter_dir: Path,
    canary_share: float,
    name: str | None = None,
    model: str | None = None,
    max_rank: int | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> Deployment:
    """Check, load and register an adapter as the persona's canary (see the module
    docstring). Nothing is registered unless vLLM loaded it; nothing stays loaded
    when registering fails."""
    check_persona_id(persona_id)
    if not 0.0 <= canary_share <= 1.0:
        raise UsageError(f"--canary {canary_share!r}: a share from 0 to 1")
    info = inspect_adapter(adapter_dir)
    served_name = check_adapter_name(name or f"{persona_id}-{info.sha256[:8]}")
    if await registry.get(served_name) is not None:
        raise UsageError(f"an adapter named {served_name!r} is already registered")
    problem = gate_problem(info.report)
    if problem is not None and not force:
        raise UsageError(f"{adapter_dir}: not deployed: {problem} (--force deploys it anyway)")
    if max_rank is not None and info.rank > max_rank:
        raise AdapterFileError(
            f"{adapter_dir}: rank {info.rank} is above the server's --max-lora-rank "
            f"{max_rank} (finetune.max_lora_rank)"
        )
    models = await admin.models()
    base = _base_of(models, model, admin.shown_url)
    if not _same_model(info.base_model, base):
        raise AdapterFileError(
            f"{adapter_dir}: trained on {info.base_model!r}, but vLLM at {admin.shown_url} "
            f"serves {base.id!r} ({base.root or 'no path given'}): a mismatched adapter"
        )
    if any(m.id == served_name for m in models):
        raise UsageError(f"vLLM at {admin.shown_url} already serves a model {served_name!r}")
    await admin.load(served_name, str(info.path))
    reason = None if problem is None else f"forced past the gate: {problem}"
    if reason is not None:
        log.warning("adapters.forced", adapter=served_name, persona=persona_id, reason=problem)
    try:
        record = await registry.register(
            name=served_name,
            persona_id=persona_id,
            path=str(info.path),
            sha256=info.sha256,
            base_model=info.base_model,
            rank=info.rank,
            report=info.report or {},
            canary_share=canary_share,
            forced=reason is not None,
            reason=reason,
            now=now,
        )
    except BaseException:
        try:
            await admin.unload(served_name)
        except BackendError as exc:
            log.warning("adapters.unload_failed", adapter=served_name, error=str(exc))
        raise
    log.info("adapters.deployed", adapter=served_name, persona=persona_id, share=canary_share)
    return Deployment(record, base.id, problem)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What `ensure_loaded` found: adapters loaded again, and failures by name."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


async def ensure_loaded(registry: AdapterRegistry, admin: VLLMAdmin) -> ReloadResult:
    """Load again every live adapter (canary or serving) that `/v1/models` lacks, as
    after a vLLM restart. One that fails is reported and the rest still load."""
    live = await registry.live()
    if not live:
        return ReloadResult()
    served = {m.id for m in await admin.models()}
    result = ReloadResult()
    for record in live:
        if record.name in served:
            continue
        try:
            await admin.load(record.name, record.path)
        except BackendError as exc:
            result.failed[record.name] = str(exc)
            log.error("adapters.reload_failed", adapter=record.name, error=str(exc))
        else:
            result.loaded.append(record.name)
            log.info("adapters.reloaded", adapter=record.name)
    return result
