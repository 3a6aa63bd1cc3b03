"""Reading and checking a LoRA adapter directory before it is served.

`inspect_adapter` refuses, with one line naming the file and the problem, anything
vLLM would choke on or serve wrongly: no `adapter_config.json`, a config that is
not LoRA or has no rank, weights missing or whose header is corrupt, tensors whose
rank disagrees with the config. Every read is bounded (a config of at most 1 MiB,
a safetensors header of at most 64 MiB) and a pipe in place of a file is refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import UsageError

__all__ = [
    "CONFIG_NAME",
    "REPORT_NAME",
    "WEIGHT_NAMES",
    "AdapterFileError",
    "AdapterInfo",
    "inspect_adapter",
    "short",
]

CONFIG_NAME = "adapter_config.json"
REPORT_NAME = "train_report.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
#: Bounds on what is read from files.
_MAX_CONFIG_BYTES = 1 << 20
_MAX_HEADER_BYTES = 64 << 20


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


def short(text: object, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters (an error quoted in a message)."""
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
        raise AdapterFileError(f"{path}: {what} is not valid JSON ({short(exc, 120)})") from None
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
