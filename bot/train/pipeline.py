"""From an export to a gated adapter, and the weekly chain that runs it.

`gate_adapter` replays the gate (bot/train/gate.py) for a trained adapter through
the in-process transformers backend: the base model with the candidate adapter
against the current model (the base model, or the adapter serving now), and writes
the verdict into the adapter's `train_report.json`. The adapter is checked first
(`bot.train.deploy.inspect_adapter`: corrupt files, a rank the weights disagree
with) and must have been trained on the base model it is compared on.

`after_export` is what the scheduled export does next when `finetune.enabled`: on
a host with a GPU, for each persona in the export, train, gate, and (when the gate
passed and a `deploy` hook is given) deploy the adapter as a canary. A gate that
fails leaves the current model serving. Without a GPU it only logs, once per run,
that the export was made and nothing was trained. One persona's failure is logged
with its reason and does not stop the others.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from bot.config import Settings
from bot.db import Database
from bot.errors import BotError
from bot.personas.schema import Persona
from bot.train.data import Method
from bot.train.deploy import AdapterFileError, AdapterInfo, inspect_adapter
from bot.train.gate import GateResult, Side, run_gate
from bot.train.report import read_report, write_report

__all__ = [
    "Deploy",
    "PersonaOutcome",
    "after_export",
    "gate_adapter",
    "has_gpu",
    "vllm_deploy",
]

log = structlog.get_logger(__name__)

#: Deploys a gated adapter as the persona's canary: (persona id, adapter dir).
Deploy = Callable[[str, Path], Awaitable[Any]]


def has_gpu() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def _checked(adapter: Path, base_model: str, what: str) -> AdapterInfo:
    info = inspect_adapter(adapter)
    if not _same_model(info.base_model, base_model):
        raise AdapterFileError(
            f"{adapter}: the {what} adapter was trained on {info.base_model!r}, not on "
            f"{base_model!r}: a mismatched adapter"
        )
    return info


async def gate_adapter(
    adapter_dir: Path,
    persona: Persona,
    *,
    base_model: str,
    settings: Settings,
    current_adapter: Path | None = None,
) -> GateResult:
    """Run the gate for the adapter in `adapter_dir` and record it in its report."""
    from bot.llm.transformers_backend import TransformersBackend

    report = read_report(adapter_dir)
    info = _checked(adapter_dir, base_model, "candidate")
    lora = report.get("lora")
    rank = lora.get("rank") if isinstance(lora, dict) else None
    if rank is not None and info.rank != rank:
        raise AdapterFileError(
            f"{adapter_dir}: the adapter has rank {info.rank}, its report says {rank}: "
            "the files do not belong together"
        )
    current = None
    if current_adapter is not None:
        current = _checked(current_adapter, base_model, "current").path
    backend = await TransformersBackend.create(
        base_model, device=settings.llm.device, dtype=settings.llm.dtype
    )
    try:
        result = await run_gate(
            report,
            persona,
            Side(backend, str(info.path), "candidate"),
            Side(backend, None if current is None else str(current), "current"),
            settings.finetune,
        )
    finally:
        await backend.aclose()
    report["gate"] = result.as_dict()
    write_report(adapter_dir, report)
    log.info(
        "train.gate",
        adapter=str(adapter_dir),
        persona=persona.id,
        passed=result.passed,
        failed=[c.name for c in result.failures()],
    )
    return result


@dataclass(frozen=True)
class PersonaOutcome:
    """What the chain did for one persona: `trained`, `gate_failed`, `deployed`,
    `failed` (with the reason)."""

    persona: str
    status: str
    adapter: str | None = None
    reason: str | None = None


def _personas_in(manifest: dict[str, Any], method: Method) -> list[str]:
    stem = "chat" if method == "sft" else "dpo"
    files = manifest.get("files") or {}
    return sorted(
        rel.split("/", 1)[0]
        for rel in files
        if isinstance(rel, str) and rel.endswith(f"/{stem}.train.jsonl")
    )


async def after_export(
    settings: Settings,
    export_dir: Path,
    manifest: dict[str, Any],
    now: datetime,
    *,
    deploy: Deploy | None = None,
    gpu: bool | None = None,
) -> list[PersonaOutcome] | str:
    """Train, gate and deploy what the export at `export_dir` holds (see the module).

    Returns the outcome per persona, or why nothing was trained."""
    from bot.personas import PersonaRegistry
    from bot.train.train import TrainJob, train_adapter

    ft = settings.finetune
    if not ft.enabled:
        return "finetune.enabled is off"
    if not (has_gpu() if gpu is None else gpu):
        reason = "no GPU on this host: the export was made, no adapter was trained"
        log.warning("finetune.skipped", export=str(export_dir), reason=reason)
        return reason
    base_model = ft.base_model or settings.llm.model
    registry = PersonaRegistry(settings.personas.dirs)
    await registry.load_all()
    outcomes: list[PersonaOutcome] = []
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for persona_id in _personas_in(manifest, ft.method):
        out = ft.out_dir / persona_id / stamp
        try:
            loaded = registry.get(persona_id)
            job = TrainJob(persona_id, export_dir, base_model, out, ft, progress=False)
            await asyncio.to_thread(train_adapter, job)
            result = await gate_adapter(
                out, loaded.persona, base_model=base_model, settings=settings
            )
            if not result.passed:
                why = "; ".join(c.detail for c in result.failures())
                log.warning("finetune.gate_failed", persona=persona_id, reason=why)
                outcomes.append(PersonaOutcome(persona_id, "gate_failed", str(out), why))
                continue
            if deploy is None:
                outcomes.append(PersonaOutcome(persona_id, "trained", str(out)))
                continue
            await deploy(persona_id, out)
            outcomes.append(PersonaOutcome(persona_id, "deployed", str(out)))
        except BotError as exc:
            log.error("finetune.failed", persona=persona_id, error=str(exc))
            outcomes.append(PersonaOutcome(persona_id, "failed", str(out), str(exc)))
        except Exception as exc:  # one persona's bug must not stop the others
            log.exception("finetune.failed", persona=persona_id)
            reason = f"{type(exc).__name__}: {exc}"
            outcomes.append(PersonaOutcome(persona_id, "failed", str(out), reason))
    return outcomes


def vllm_deploy(settings: Settings, db: Database) -> Deploy | None:
    """The hook that deploys a gated adapter into the configured vLLM server as a
    canary of `finetune.canary_share` (bot/train/deploy.py); None when the bot does
    not talk to a vLLM server (`llm.backend` is not openai)."""
    if settings.llm.backend != "openai":
        return None

    async def deploy_canary(persona_id: str, adapter_dir: Path) -> Any:
        from bot.train.deploy import VLLMAdmin, deploy
        from bot.train.registry import AdapterRegistry

        key = settings.llm.resolved_api_key()
        async with VLLMAdmin(
            settings.llm.base_url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.llm.timeout_s,
        ) as admin:
            return await deploy(
                AdapterRegistry(db),
                admin,
                persona_id=persona_id,
                adapter_dir=adapter_dir,
                canary_share=settings.finetune.canary_share,
                max_rank=settings.finetune.max_lora_rank,
            )

    return deploy_canary
