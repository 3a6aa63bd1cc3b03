"""Training a persona's LoRA adapter on its export, with peft and TRL.

`train_adapter(job)` reads and verifies the export (bot/train/data.py), loads the
base model and its tokenizer, measures the loss on the validation split, trains a
LoRA adapter (TRL's `SFTTrainer` on pre-tokenized records whose labels cover only
the assistant's tokens, or `DPOTrainer` on the preference pairs), measures again,
and writes the adapter and `train_report.json` into `job.out`.

It runs on the GPU when torch sees one, else on the CPU. Checkpoints go to
`OUT/checkpoints/` every `finetune.save_steps` steps; `resume=True` continues from
the newest one, with the loss measured before the first run (kept in
`OUT/checkpoints/start.json`) and refusing an export other than the one it began on.

torch, transformers, peft, trl and datasets come with the `train` extra; they are
imported when training starts.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bot.config import FinetuneSettings
from bot.errors import BackendUnavailable, UsageError
from bot.llm.control_tokens import ControlTokens
from bot.train.data import ExportData, Method, load_export, neutralise_record, tokenize_records
from bot.train.report import write_report

__all__ = ["TrainJob", "adapter_files_present", "train_adapter"]

_log = structlog.get_logger(__name__)

_INSTALL_HINT = "install the train extra: pip install 'personabot[local,train]'"
_CHECKPOINTS = "checkpoints"
_START = "start.json"


def _lazy(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"training needs {module}: {_INSTALL_HINT}") from exc


@dataclass(frozen=True)
class TrainJob:
    """What to train: a persona's export, a base model, where the adapter goes."""

    persona: str
    data: Path
    base_model: str
    out: Path
    settings: FinetuneSettings = field(default_factory=FinetuneSettings)
    method: Method | None = None  # None: settings.method
    resume: bool = False
    progress: bool = True
    #: Extra `transformers.TrainerCallback`s (tests interrupt a run with one).
    callbacks: Sequence[Any] = ()
    #: Keep OUT/checkpoints after a run that finished (they only serve --resume).
    keep_checkpoints: bool = False

    @property
    def chosen_method(self) -> Method:
        """The method this job trains with."""
        return self.method or self.settings.method


def adapter_files_present(directory: Path) -> bool:
    """True when `directory` holds an adapter (its `adapter_config.json`)."""
    return (Path(directory) / "adapter_config.json").is_file()


def _prepare_out(job: TrainJob, export: ExportData) -> Path | None:
    """Checks `job.out`; the checkpoint to resume from (None: a fresh start)."""
    out, checkpoints = job.out, job.out / _CHECKPOINTS
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r}: exists and is not a directory")
    if not job.resume:
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(
                f"--out {str(out)!r}: not empty; name a new directory, or pass --resume "
                "to continue an interrupted run there"
            )
        return None
    found = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    if not found:
        raise UsageError(f"--resume: no checkpoint in {checkpoints} to continue from")
    start = _read_start(checkpoints)
    if start.get("export_manifest_sha256") != export.manifest_sha256:
        raise UsageError(
            f"--resume: the run in {out} was trained on another export "
            f"(manifest {str(start.get('export_manifest_sha256'))[:12]}…); "
            "resume it with the same --data, or start a new --out"
        )
    if start.get("method") != job.chosen_method:
        raise UsageError(f"--resume: the run in {out} used --method {start.get('method')}")
    if start.get("base_model") != job.base_model:
        raise UsageError(
            f"--resume: the run in {out} trains {start.get('base_model')!r}, "
            f"not {job.base_model!r}"
        )
    return found[-1]


def _read_start(checkpoints: Path) -> dict[str, Any]:
    try:
        data = json.loads((checkpoints / _START).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: {checkpoints / _START} is missing or broken ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--resume: {checkpoints / _START} is not a JSON object")
    return data


def _load_base(base_model: str, cuda: bool) -> tuple[Any, Any]:
    torch = _lazy("torch")
    transformers = _lazy("transformers")
    dtype = torch.float32
    if cuda and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(base_model)
        model = transformers.AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    except OSError as exc:
        raise BackendUnavailable(
            f"--base-model {base_model!r}: cannot be loaded: not a local model directory, "
            f"and not in the Hugging Face cache or reachable on the hub ({exc})"
        ) from None
    except Exception as exc:  # a broken config or weights: the library's own words
        raise BackendUnavailable(
            f"--base-model {base_model!r}: cannot be loaded ({type(exc).__name__}: {exc})"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            f"--base-model {base_model!r}: its tokenizer has no chat template; training "
            "must use the template the server builds prompts with"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(
            f"--base-model {base_model!r}: needs a fast tokenizer (tokenizer.json) to find "
            "the assistant's tokens"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _lora_config(settings: FinetuneSettings) -> Any:
    peft = _lazy("peft")
    targets: Any = settings.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return peft.LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _common_args(job: TrainJob, cuda: bool, checkpoints: Path) -> dict[str, Any]:
    s = job.settings
    torch = _lazy("torch")
    return {
        "output_dir": str(checkpoints),
        "num_train_epochs": s.epochs,
        "max_steps": s.max_steps or -1,
        "per_device_train_batch_size": s.batch_size,
        "per_device_eval_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.grad_accum,
        "learning_rate": s.learning_rate,
        "warmup_steps": s.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        "lr_scheduler_type": "linear",
        "logging_steps": 10,
        "save_strategy": "steps",
        "save_steps": s.save_steps,
        "save_total_limit": 2,
        "eval_strategy": "no",  # measured before and after, on the whole validation split
        "report_to": [],
        "seed": s.seed,
        "use_cpu": not cuda,
        "bf16": cuda and bool(torch.cuda.is_bf16_supported()),
        "disable_tqdm": not job.progress,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        # Recomputing activations saves GPU memory; on the CPU it only costs time.
        "gradient_checkpointing": cuda,
        "max_length": s.max_length,
    }


def _trainer(job: TrainJob, export: ExportData, tokenizer: Any, model: Any, cuda: bool) -> Any:
    trl = _lazy("trl")
    datasets = _lazy("datasets")
    control = ControlTokens.for_tokenizer(tokenizer)
    checkpoints = job.out / _CHECKPOINTS
    args = _common_args(job, cuda, checkpoints)
    lora = _lora_config(job.settings)
    callbacks = list(job.callbacks)
    if job.chosen_method == "sft":
        limit = job.settings.max_length
        train_rows, dropped = tokenize_records(tokenizer, export.train, control, limit)
        eval_rows, _ = tokenize_records(tokenizer, export.validation, control, limit)
        if not train_rows or not eval_rows:
            raise UsageError(
                f"every record is longer than finetune.max_length ({job.settings.max_length} "
                "tokens) before its first reply; raise it"
            )
        if dropped:
            _log.warning("train.records_dropped", dropped=dropped, reason="too long")
        config = trl.SFTConfig(**args, packing=False, dataset_num_proc=None)
        return trl.SFTTrainer(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(train_rows),
            eval_dataset=datasets.Dataset.from_list(eval_rows),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=callbacks,
        )
    # DPO: TRL applies the chat template to prompt + chosen / rejected itself.
    train = [neutralise_record(r, control) for r in export.train]
    validation = [neutralise_record(r, control) for r in export.validation]
    config = trl.DPOConfig(**args, beta=job.settings.dpo_beta)
    return trl.DPOTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(train),
        eval_dataset=datasets.Dataset.from_list(validation),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )


def _quiet_progress(trainer: Any) -> None:
    """Keep the progress bar, drop the metrics it prints to stdout after each log
    (stdout is the command's answer; the report has the numbers)."""
    transformers = _lazy("transformers")
    base = transformers.trainer_callback.ProgressCallback

    class QuietProgress(base):  # type: ignore[misc, valid-type]
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            return None

    if trainer.pop_callback(base) is not None:
        trainer.add_callback(QuietProgress())


def _eval_loss(trainer: Any) -> float:
    metrics = trainer.evaluate()
    loss = float(metrics["eval_loss"])
    if not math.isfinite(loss):
        raise UsageError(f"the validation loss is {loss}; the data or settings cannot train")
    return loss


def _fix_adapter_config(out: Path, base_model: str) -> None:
    # vLLM and peft find the base model by this name: the one training used, a
    # local directory as an absolute path.
    path = out / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    local = Path(base_model).expanduser()
    config["base_model_name_or_path"] = str(local.resolve()) if local.is_dir() else base_model
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def train_adapter(job: TrainJob) -> dict[str, Any]:
    """Train the adapter `job` describes; the report written beside it.

    Raises `TrainDataError` (the export), `UsageError` (the options, --resume),
    `BackendUnavailable` (the base model, missing libraries).
    """
    export = load_export(job.data, job.persona, job.chosen_method)
    resume_from = _prepare_out(job, export)
    torch = _lazy("torch")
    cuda = bool(torch.cuda.is_available())
    tokenizer, model = _load_base(job.base_model, cuda)
    trainer = _trainer(job, export, tokenizer, model, cuda)
    _quiet_progress(trainer)
    checkpoints = job.out / _CHECKPOINTS
    if resume_from is None:
        loss_before = _eval_loss(trainer)
        checkpoints.mkdir(parents=True, exist_ok=True)
        start = {
            "eval_loss_before": loss_before,
            "export_manifest_sha256": export.manifest_sha256,
            "method": job.chosen_method,
            "base_model": job.base_model,
        }
        (checkpoints / _START).write_text(json.dumps(start) + "\n", encoding="utf-8")
    else:
        loss_before = float(_read_start(checkpoints)["eval_loss_before"])
    began = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    elapsed = time.monotonic() - began
    loss_after = _eval_loss(trainer)
    trainer.model.save_pretrained(str(job.out), safe_serialization=True)
    _fix_adapter_config(job.out, job.base_model)
    state = trainer.state
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    s = job.settings
    report: dict[str, Any] = {
        "persona": job.persona,
        "method": job.chosen_method,
        "base_model": job.base_model,
        "export_dir": str(export.path.resolve()),
        "export_manifest_sha256": export.manifest_sha256,
        "files": export.files,
        "train_records": len(export.train),
        "validation_records": len(export.validation),
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
        "steps": int(state.global_step),
        "epochs": float(state.epoch or 0.0),
        "time_s": round(elapsed, 3),
        "train_tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "device": "cuda" if cuda else "cpu",
        "resumed_from": resume_from.name if resume_from else None,
        "lora": {
            "rank": s.lora_rank,
            "alpha": s.lora_alpha,
            "dropout": s.lora_dropout,
            "target_modules": list(s.target_modules),
        },
        "hyperparameters": {
            "learning_rate": s.learning_rate,
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "grad_accum": s.grad_accum,
            "max_steps": s.max_steps,
            "max_length": s.max_length,
            "seed": s.seed,
            **({"dpo_beta": s.dpo_beta} if job.chosen_method == "dpo" else {}),
        },
    }
    write_report(job.out, report)
    if not job.keep_checkpoints:
        remove_checkpoints(job.out)
    _log.info(
        "train.done",
        persona=job.persona,
        steps=report["steps"],
        eval_loss_before=loss_before,
        eval_loss_after=loss_after,
        tokens_per_s=report["tokens_per_s"],
    )
    return report


def remove_checkpoints(out: Path) -> None:
    """Drop the checkpoints of a finished run (they are only for --resume)."""
    shutil.rmtree(Path(out) / _CHECKPOINTS, ignore_errors=True)
