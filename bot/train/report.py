"""`train_report.json`: what an adapter learned from, how it did, and whether it may serve.

The report sits beside the adapter (`adapter_config.json`) and is written whole or
not at all (a temporary file renamed into place), so a reader never sees half a
report. Keys (docs/finetune.md):

    persona, method, base_model, export_dir, export_manifest_sha256, files
    eval_loss_before, eval_loss_after       mean loss on the validation split
    steps, epochs, time_s, train_tokens, tokens_per_s, device, resumed_from
    lora: {rank, alpha, dropout, target_modules}, hyperparameters: {...}
    gate: {passed, checks: [{name, passed, detail, ...}]}   (added by the gate)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bot.train.data import TrainDataError

__all__ = ["REPORT_NAME", "read_report", "write_report"]

REPORT_NAME = "train_report.json"


def write_report(adapter_dir: Path, report: dict[str, Any]) -> Path:
    """Write `report` as `adapter_dir/train_report.json`, atomically; its path."""
    path = Path(adapter_dir) / REPORT_NAME
    text = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_report(adapter_dir: Path) -> dict[str, Any]:
    """The report beside the adapter in `adapter_dir`; `TrainDataError` when there is
    none or it is not a JSON object."""
    path = Path(adapter_dir) / REPORT_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainDataError(
            f"{path}: no training report (was the adapter made by `bot train`?)"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TrainDataError(f"{path}: not a readable report ({exc})") from None
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: not a JSON object")
    return data
