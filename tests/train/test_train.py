"""Training on the CPU with the tiny model: the loss goes down, the report says what
happened, --resume continues, and mistakes are one clear error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from bot.cli import app
from bot.cli_errors import run_app
from bot.errors import BackendUnavailable, UsageError
from bot.llm.base import ChatMessage, ChatRequest, Sampling
from bot.llm.transformers_backend import TransformersBackend
from bot.train.report import REPORT_NAME, read_report
from bot.train.train import TrainJob, train_adapter

from .conftest import chat_records, tiny_settings, write_export, write_persona


def test_sft_steps_lower_the_eval_loss(trained: tuple[Path, Path], tiny_model: Path) -> None:
    export, adapter = trained
    report = read_report(adapter)
    assert report["eval_loss_after"] < report["eval_loss_before"]
    assert report["steps"] == 6 and report["method"] == "sft"
    assert report["base_model"] == str(tiny_model)
    manifest = (export / "manifest.json").read_bytes()
    assert report["export_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert report["time_s"] > 0 and report["train_tokens"] > 0 and report["tokens_per_s"] > 0
    assert report["device"] == "cpu" and report["lora"]["rank"] == 8
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert config["base_model_name_or_path"] == str(tiny_model.resolve())
    assert not (adapter / "checkpoints").exists()  # a finished run keeps no checkpoints


async def test_the_adapter_serves_in_the_transformers_backend(
    trained: tuple[Path, Path], tiny_model: Path
) -> None:
    _, adapter = trained
    messages = (ChatMessage("system", "You are Biscuit."), ChatMessage("user", "Hi!"))
    greedy = Sampling(temperature=0.0, max_tokens=8)
    async with TransformersBackend(str(tiny_model)) as backend:
        base = await backend.complete(ChatRequest(messages, greedy))
        tuned = await backend.complete(ChatRequest(messages, greedy, adapter=str(adapter)))
    assert tuned.model == str(adapter)
    assert tuned.text != base.text  # the adapter changed what the model says


def test_dpo_steps_lower_the_eval_loss(
    biscuit_export: Path, tiny_model: Path, tmp_path: Path
) -> None:
    job = TrainJob(
        "biscuit",
        biscuit_export,
        str(tiny_model),
        tmp_path / "dpo",
        tiny_settings(max_steps=4),
        method="dpo",
        progress=False,
    )
    report = train_adapter(job)
    # DPO starts at log 2 (the policy is its own reference) and goes down.
    assert report["eval_loss_before"] == pytest.approx(0.6931, abs=1e-3)
    assert report["eval_loss_after"] < report["eval_loss_before"]
    assert report["hyperparameters"]["dpo_beta"] == 0.1
    assert (tmp_path / "dpo" / REPORT_NAME).is_file()


class _Crash(TrainerCallback):  # type: ignore[misc]
    """Stops a run after `at` steps, as a killed process would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= self.at:
            raise KeyboardInterrupt
        return control


def test_resume_continues_from_the_last_checkpoint(
    biscuit_export: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    settings = tiny_settings(max_steps=4, save_steps=2)
    first = TrainJob("biscuit", biscuit_export, str(tiny_model), out, settings, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(TrainJob(**{**first.__dict__, "callbacks": [_Crash(at=3)]}))
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert not (out / REPORT_NAME).exists()
    before = json.loads((out / "checkpoints" / "start.json").read_text())["eval_loss_before"]

    with pytest.raises(UsageError, match="not empty; name a new directory, or pass --resume"):
        train_adapter(first)
    other = write_export(
        tmp_path / "other",
        {
            "biscuit/chat.train.jsonl": chat_records(5),
            "biscuit/chat.validation.jsonl": chat_records(2, offset=50),
        },
    )
    with pytest.raises(UsageError, match="trained on another export"):
        train_adapter(TrainJob(**{**first.__dict__, "data": other, "resume": True}))

    report = train_adapter(TrainJob(**{**first.__dict__, "resume": True}))
    assert report["resumed_from"] == "checkpoint-2"
    assert report["steps"] == 4
    assert report["eval_loss_before"] == before  # measured once, before the first step
    assert report["eval_loss_after"] < before


def test_resume_without_a_checkpoint(
    biscuit_export: Path, tiny_model: Path, tmp_path: Path
) -> None:
    job = TrainJob(
        "biscuit", biscuit_export, str(tiny_model), tmp_path / "x", tiny_settings(), resume=True
    )
    with pytest.raises(UsageError, match="--resume: no checkpoint in"):
        train_adapter(job)


def test_a_missing_base_model(biscuit_export: Path, tmp_path: Path) -> None:
    job = TrainJob("biscuit", biscuit_export, str(tmp_path / "nope"), tmp_path / "o")
    with pytest.raises(BackendUnavailable, match=r"--base-model .* cannot be loaded"):
        train_adapter(job)


def test_cli_trains_and_gates(
    biscuit_export: Path,
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    personas = write_persona(tmp_path / "personas")
    config = tmp_path / "bot.toml"
    config.write_text(
        f'[personas]\ndirs = ["{personas}"]\n'
        "[finetune]\nmax_steps = 4\nlearning_rate = 0.005\nlora_rank = 4\n"
        "gate_max_new_tokens = 4\ngate_example_tolerance = 1.0\n"
    )
    out = tmp_path / "adapter"
    argv = ["train", "--persona", "biscuit", "--data", str(biscuit_export)]
    argv += ["--base-model", str(tiny_model), "--out", str(out), "-c", str(config)]
    assert run_app(app, argv) == 0
    printed = capsys.readouterr().out
    assert "validation loss" in printed and "tokens/s on cpu" in printed
    assert "train_runtime" not in printed  # the trainer's metrics stay off stdout
    assert "gate passed" in printed
    report = read_report(out)
    assert report["gate"]["passed"] is True
    names = [c["name"] for c in report["gate"]["checks"]]
    assert names == ["loss", "examples", "declines", "human_claims", "disclosure"]

    # A persona that is not loaded: found out before any training.
    argv[2] = "nobody"
    argv[argv.index(str(out))] = str(tmp_path / "other")
    assert run_app(app, argv) == 1
    assert "no persona 'nobody' is loaded" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LORA_RANK", "0"),
        ("METHOD", "ppo"),
        ("LEARNING_RATE", "-1"),
        ("TARGET_MODULES", "[]"),
        ("MAX_LENGTH", "1"),
        ("BATCH_SIZE", "lots"),
        ("GATE_MAX_HUMAN_CLAIMS", "-1"),
    ],
)
def test_hostile_finetune_settings_are_a_config_error(
    key: str,
    value: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(f"BOT_FINETUNE__{key}", value)
    argv = ["train", "--persona", "biscuit", "--data", str(tmp_path), "--base-model", "x"]
    argv += ["--out", str(tmp_path / "o"), "--no-gate"]
    assert run_app(app, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: ") and f"finetune.{key.lower()}" in err
    assert err.count("\n") == 1
