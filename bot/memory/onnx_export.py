"""The ONNX export of a sentence-transformers encoder, run as its own process.

`python -m bot.memory.onnx_export SOURCE FOLDER [LIMIT_S]` writes model.onnx,
tokenizer.json and settings.json (pooling, normalisation, lengths) into FOLDER, and
exits 0. It ends itself (SIGALRM) after LIMIT_S seconds (default `EXPORT_LIMIT_S`),
so a child whose parent was killed never outlives that either.
A model this recipe cannot export (other modules than Pooling and Normalize, a
pooling other than mean or cls, no fast tokenizer) exits `UNEXPORTABLE`, with the
reason as the last line of stderr; any other failure exits 1 with its traceback.

`bot.memory.onnx` starts it as a child rather than exporting in one of its own
threads: torch.export's tracing state is global to a process, and the exporter
writes to stdout, which this child may do freely (its stdout goes nowhere).
Nothing heavy is imported at module level: the parent imports `RECIPE` from here.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["EXPORT_LIMIT_S", "RECIPE", "UNEXPORTABLE", "Unexportable", "export", "main"]

#: Bump when the export recipe changes, so old caches are not reused.
RECIPE = 1
#: The exit status for a model this recipe does not export.
UNEXPORTABLE = 3
#: An export that has not finished by then never will (it takes ~35 s on 2 cores).
EXPORT_LIMIT_S = 900
_POOLING = ("mean", "cls")


class Unexportable(Exception):
    """The model is not one this recipe exports; the message says why."""


def export(source: str, folder: Path) -> None:
    """Export `source` (a sentence-transformers model on disk) into `folder`."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source, device="cpu", local_files_only=True)
    modules: list[Any] = list(model)
    kinds = [type(m).__name__ for m in modules]
    if (
        len(modules) < 2
        or kinds[1] != "Pooling"
        or any(k not in ("Pooling", "Normalize") for k in kinds[2:])
    ):
        raise Unexportable(f"cannot export {source!r}: modules {kinds}")
    pooling = str(modules[1].get_config_dict().get("pooling_mode", ""))
    if pooling not in _POOLING:
        raise Unexportable(f"cannot export {source!r}: pooling {pooling!r}")
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise Unexportable(f"cannot export {source!r}: no fast tokenizer")
    encoder = modules[0].auto_model.eval()

    class Hidden(torch.nn.Module):
        """The encoder's last hidden state for ids and mask (token types default)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state

    sample = tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    # Warnings about optional operator sets are noise; the export's errors still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(),
            (sample["input_ids"], sample["attention_mask"]),
            str(folder / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_shapes={
                "input_ids": {0: batch, 1: length},
                "attention_mask": {0: batch, 1: length},
            },
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    settings = {
        "source": source,
        "pooling": pooling,
        "normalize": "Normalize" in kinds,
        "max_seq_length": int(model.max_seq_length or 256),
        "pad_id": int(tokenizer.pad_token_id or 0),
        "pad_token": str(tokenizer.pad_token or "[PAD]"),
        "dimension": int(model.get_embedding_dimension() or 0),
    }
    # settings.json last: its presence is what says the export is complete.
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run one export from the command line; the exit status says how it went."""
    args = sys.argv[1:] if argv is None else argv
    try:
        limit = float(args[2]) if len(args) == 3 else float(EXPORT_LIMIT_S)
    except ValueError:
        limit = math.nan
    if len(args) not in (2, 3) or not 0 < limit <= 86_400:
        print("usage: python -m bot.memory.onnx_export SOURCE FOLDER [LIMIT_S]", file=sys.stderr)
        return 2
    signal.alarm(math.ceil(limit))  # SIGALRM's default action ends the process
    try:
        export(args[0], Path(args[1]))
    except Unexportable as exc:
        print(str(exc), file=sys.stderr)
        return UNEXPORTABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
