"""LoRA training throughput: tokens per second of `bot train`'s SFT path.

Builds models locally (no download): the tiny test model (bot/llm/tiny.py, hidden
64, 2 layers) and a "small" random Llama with the same tokenizer (hidden 256,
4 layers, 4 heads, about 3.7M parameters), writes a synthetic export of chat
windows through the real export writer, and trains a LoRA adapter (rank 16, all
linear layers) for a fixed number of steps with `train_adapter`. Reports, per
model: steps, trained tokens (non-padding input tokens), seconds of training
(without the evaluations before and after), tokens/s, device, the process's CPU
seconds for the whole run (evaluations included: on a shared machine the better
number), the load average, and the loss before and after. Prints, and writes
bench/results/train.json.

    python bench/train.py [--steps 20] [--records 200] [--models tiny,small]

On a GPU host the same script measures the GPU (torch picks it up by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from bot.config import FinetuneSettings  # noqa: E402
from bot.export.formats import openai_record  # noqa: E402
from bot.export.writer import DatasetWriter  # noqa: E402
from bot.llm.tiny import build_tiny_model  # noqa: E402
from bot.train.train import TrainJob, train_adapter  # noqa: E402

_LINES = [
    "Good morning! How did you sleep?",
    "I walked along the beach and collected shells today.",
    "Tell me about your friends and family, I would like to hear more.",
    "The weather is lovely: sunshine, a little wind, and the tide is low.",
    "你今天感觉怎么样？我们一起去公园散步吧。",
    "Thank you very much, see you tomorrow!",
]


def _records(n: int, offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(offset, offset + n):
        turns = []
        for k in range(6):  # three exchanges per window
            role = "user" if k % 2 == 0 else "assistant"
            turns.append((role, _LINES[(i + k) % len(_LINES)] + f" ({i}.{k})"))
        out.append(openai_record("You are Samantha, who lives by the sea.", turns))
    return out


def _export(root: Path, records: int) -> Path:
    out = root / "export"
    with DatasetWriter(out) as writer:
        for rel, recs in (
            ("samantha/chat.train.jsonl", _records(records)),
            ("samantha/chat.validation.jsonl", _records(max(4, records // 20), 10_000)),
        ):
            handle = writer.file(rel)
            for record in recs:
                handle.write(record)
        writer.commit({"note": "bench"})
    return out


def _small_model(tiny: Path, out: Path) -> Path:
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(tiny)
    config.hidden_size, config.intermediate_size = 256, 688
    config.num_hidden_layers, config.num_attention_heads = 4, 4
    config.num_key_value_heads, config.head_dim = 4, 64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--models", default="tiny,small")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "steps": args.steps,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = _export(root, args.records)
        tiny = build_tiny_model(root / "tiny")
        models = {"tiny": tiny}
        if "small" in args.models.split(","):
            models["small"] = _small_model(tiny, root / "small")
        for name in args.models.split(","):
            settings = FinetuneSettings(
                max_steps=args.steps, batch_size=4, lora_rank=16, save_steps=10_000
            )
            job = TrainJob(
                "samantha", export, str(models[name]), root / f"out-{name}", settings,
                progress=False,
            )
            began, cpu = time.monotonic(), time.process_time()
            report = train_adapter(job)
            run = {
                "model": name,
                "parameters": _parameters(models[name]),
                "steps": report["steps"],
                "train_tokens": report["train_tokens"],
                "train_s": report["time_s"],
                "tokens_per_s": report["tokens_per_s"],
                "device": report["device"],
                "wall_s": round(time.monotonic() - began, 2),
                "cpu_s": round(time.process_time() - cpu, 2),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "torch_threads": _torch_threads(),
                "eval_loss_before": round(report["eval_loss_before"], 4),
                "eval_loss_after": round(report["eval_loss_after"], 4),
            }
            results["runs"].append(run)
            print(json.dumps(run))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'train.json'}")


def _parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is no mapping
            total += _numel(handle, key)
    return total


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _numel(handle: Any, key: str) -> int:
    n = 1
    for dim in handle.get_slice(key).get_shape():
        n *= dim
    return n


if __name__ == "__main__":
    main()
