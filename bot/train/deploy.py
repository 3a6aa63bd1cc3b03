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

The vLLM side is `VLLMAdmin`: bounded requests (timeouts, a capped answer), and the
server's refusals as `BackendError` with its own message, a server that cannot be
reached as `BackendUnavailable`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import structlog

from bot.errors import BackendError, BackendUnavailable, UsageError
from bot.logs import mask_url_credentials
from bot.train.registry import (
    AdapterRecord,
    AdapterRegistry,
    check_adapter_name,
    check_persona_id,
)

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

CONFIG_NAME = "adapter_config.json"
REPORT_NAME = "train_report.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
#: Bounds on what is read from files and from the server.
_MAX_CONFIG_BYTES = 1 << 20
_MAX_HEADER_BYTES = 64 << 20
_MAX_ANSWER_BYTES = 1 << 20


class AdapterFileError(UsageError):
    """An adapter directory that cannot be served; the message names the file and why."""

    label = "adapter file error"


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """What `inspect_adapter` found in an adapter directory."""

    path: Path
    base_model: str
    rank: int
    sha256: str
    report: dict[str, Any] | None  # None: no train_report.json


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if path.exists() and not path.is_file():  # a pipe would block the read forever
        raise AdapterFileError(f"{path}: {what} is not a regular file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise AdapterFileError(f"{path}: no {what}") from None
    except OSError as exc:
        raise AdapterFileError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise AdapterFileError(f"{path}: {what} larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AdapterFileError(f"{path}: {what} is not valid JSON ({_short(exc, 120)})") from None
    if not isinstance(data, dict):
        raise AdapterFileError(f"{path}: {what} is not a JSON object")
    return data


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a safetensors header, bounded; AdapterFileError if corrupt."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise AdapterFileError(f"{path}: truncated ({size} bytes), not a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER_BYTES, size - 8):
                raise AdapterFileError(f"{path}: corrupt safetensors header (length {length})")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise AdapterFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AdapterFileError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise AdapterFileError(f"{path}: corrupt safetensors header")
    shapes: dict[str, list[int]] = {}
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("shape"), list):
            raise AdapterFileError(f"{path}: corrupt safetensors header (tensor {name!r})")
        offsets = meta.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[1], int):
            end = max(end, offsets[1])
        shapes[str(name)] = [int(d) for d in meta["shape"] if isinstance(d, int)]
    if 8 + length + end > size:
        raise AdapterFileError(f"{path}: truncated: the header promises {end} bytes of tensors")
    if not shapes:
        raise AdapterFileError(f"{path}: holds no tensors")
    return shapes


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def inspect_adapter(directory: Path) -> AdapterInfo:
    """Read and check the adapter in `directory` (see the module docstring)."""
    path = Path(directory)
    if not path.exists():
        raise AdapterFileError(f"{path}: no such adapter directory")
    if not path.is_dir():
        raise AdapterFileError(f"{path}: not a directory (give the adapter's directory)")
    config = _read_json(path / CONFIG_NAME, CONFIG_NAME + " (is this a peft adapter?)")
    where = path / CONFIG_NAME
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise AdapterFileError(f"{where}: peft_type {peft_type!r}; only LoRA adapters are served")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterFileError(f"{where}: 'r' (the LoRA rank) must be a positive integer")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise AdapterFileError(f"{where}: no base_model_name_or_path (the model it was trained on)")
    weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
    if weights is None:
        raise AdapterFileError(f"{path}: no adapter weights ({' or '.join(WEIGHT_NAMES)})")
    if weights.suffix == ".safetensors":
        for name, shape in _safetensors_shapes(weights).items():
            # peft stores lora_A as (r, in) and lora_B as (out, r).
            if not shape:
                continue
            got = shape[0] if "lora_A" in name else shape[-1] if "lora_B" in name else rank
            if got != rank:
                raise AdapterFileError(
                    f"{weights}: tensor {name} has rank {got}, the config says r={rank} "
                    "(a corrupt or mismatched adapter)"
                )
    report_path = path / REPORT_NAME
    report = _read_json(report_path, REPORT_NAME) if report_path.exists() else None
    return AdapterInfo(
        path=path.resolve(),
        base_model=base.strip(),
        rank=rank,
        sha256=_hash_files([path / CONFIG_NAME, weights]),
        report=report,
    )


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


# -- the server -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One entry of vLLM's `/v1/models`: the base model or a loaded adapter."""

    id: str
    root: str | None = None
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_base_url(url: str) -> str:
    """`url` without a trailing slash if it is an http(s) URL; UsageError otherwise."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(
            f"--base-url {_short(mask_url_credentials(url), 120)!r}: "
            "an http(s) URL such as http://127.0.0.1:8000/v1"
        )
    return url.strip().rstrip("/")


class VLLMAdmin:
    """Loads, unloads and lists adapters on one vLLM server (`base_url` ends in /v1)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0):
        self.base_url = check_base_url(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers=headers
        )

    @property
    def shown_url(self) -> str:
        return mask_url_credentials(self.base_url)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._client.stream(method, url, json=body) as answer:
                raw = b""
                async for chunk in answer.aiter_bytes():
                    raw += chunk
                    if len(raw) > _MAX_ANSWER_BYTES:
                        raise BackendError(
                            f"vLLM at {self.shown_url}: {path} answered more than "
                            f"{_MAX_ANSWER_BYTES} bytes"
                        )
        except httpx.TimeoutException:
            raise BackendUnavailable(f"vLLM at {self.shown_url}: no answer to {path}") from None
        except httpx.HTTPError as exc:
            why = _short(exc, 120) or type(exc).__name__
            raise BackendUnavailable(
                f"vLLM at {self.shown_url} cannot be reached ({why}); is it running?"
            ) from None
        text = raw.decode("utf-8", errors="replace")
        if answer.status_code >= 400:
            raise self._refusal(path, answer.status_code, text)
        try:
            return json.loads(text) if text.strip() else None
        except (ValueError, RecursionError):
            return text  # vLLM answers the LoRA routes with plain text

    def _refusal(self, path: str, status: int, text: str) -> BackendError:
        detail: object = text
        try:
            body = json.loads(text)
            if isinstance(body, dict):
                inner = body.get("error", body)
                detail = inner.get("message", inner) if isinstance(inner, dict) else inner
        except (ValueError, RecursionError):
            pass
        where = f"vLLM at {self.shown_url}: {path}: HTTP {status}"
        if status == 404 and "lora" in path:
            return BackendError(
                f"{where}: the server does not load adapters at run time (start it with "
                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            )
        error = BackendUnavailable if status >= 500 else BackendError
        return error(f"{where}: {_short(detail)}")

    async def models(self) -> list[ServedModel]:
        """What the server serves: its base model(s) and the adapters loaded."""
        answer = await self._call("GET", "/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"vLLM at {self.shown_url}: /models answered no model list")
        out = []
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                root, parent = entry.get("root"), entry.get("parent")
                out.append(
                    ServedModel(
                        entry["id"],
                        root if isinstance(root, str) else None,
                        parent if isinstance(parent, str) else None,
                        entry,
                    )
                )
        return out

    async def load(self, name: str, path: str) -> None:
        """Load the adapter at `path` (on the server's disk) as `name`."""
        await self._call("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload(self, name: str) -> None:
        """Unload the adapter served as `name`."""
        await self._call("POST", "/unload_lora_adapter", {"lora_name": name})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> VLLMAdmin:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


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
