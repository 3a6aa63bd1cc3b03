"""Fixtures for training tests: the tiny model, and exports written by the real writer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.export.formats import dpo_record, openai_record
from bot.export.writer import DatasetWriter

SYSTEM = "You are Biscuit, a cheerful dog."

# A persona that always answers the same way: a few steps learn it, so the
# validation loss must go down.
REPLIES = ["Woof! Walk?", "Woof! Ball?", "Woof! Treat?"]
QUESTIONS = ["Good morning!", "How are you?", "What do you want?", "Hello there", "Hi!"]


def chat_records(n: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """`n` small chat windows in the export's OpenAI shape."""
    out = []
    for i in range(offset, offset + n):
        turns = [
            ("user", QUESTIONS[i % len(QUESTIONS)]),
            ("assistant", REPLIES[i % len(REPLIES)]),
        ]
        if i % 2:
            turns += [("user", "And then?"), ("assistant", REPLIES[(i + 1) % len(REPLIES)])]
        out.append(openai_record(SYSTEM, turns))
    return out


def dpo_records(n: int) -> list[dict[str, Any]]:
    """`n` preference pairs: the dog's reply over a flat one."""
    return [
        dpo_record(
            SYSTEM,
            [("user", QUESTIONS[i % len(QUESTIONS)])],
            REPLIES[i % len(REPLIES)],
            "I am a language model and cannot help.",
            "feedback",
        )
        for i in range(n)
    ]


def write_export(
    out: Path,
    files: dict[str, Sequence[dict[str, Any]]],
) -> Path:
    """An export directory at `out` with `files` (relpath -> records) and a manifest."""
    with DatasetWriter(out) as writer:
        for rel, records in files.items():
            handle = writer.file(rel)
            for record in records:
                handle.write(record)
        writer.commit({"note": "test export"})
    return out


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`bot train` configures logging onto the stream it sees (capsys's, in a test):
    put it back, so later tests do not log into a closed file."""
    import logging

    import structlog

    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = handlers


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight model, built once per session."""
    from bot.llm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def biscuit_export(tmp_path: Path) -> Path:
    """An SFT + DPO export for persona `biscuit`."""
    return write_export(
        tmp_path / "export",
        {
            "biscuit/chat.train.jsonl": chat_records(24),
            "biscuit/chat.validation.jsonl": chat_records(6, offset=100),
            "biscuit/dpo.train.jsonl": dpo_records(12),
            "biscuit/dpo.validation.jsonl": dpo_records(4),
        },
    )


def tiny_settings(**overrides: Any) -> Any:
    """Finetune settings for a few quick steps on the tiny model."""
    from bot.config import FinetuneSettings

    values: dict[str, Any] = {
        "max_steps": 6,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "save_steps": 2,
        "warmup_ratio": 0.0,
        "gate_max_new_tokens": 8,
    }
    values.update(overrides)
    return FinetuneSettings(**values)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    """(export, adapter): one SFT run on the tiny model, shared by the gate tests."""
    from bot.train.train import TrainJob, train_adapter

    root = tmp_path_factory.mktemp("trained")
    export = write_export(
        root / "export",
        {
            "biscuit/chat.train.jsonl": chat_records(24),
            "biscuit/chat.validation.jsonl": chat_records(6, offset=100),
        },
    )
    out = root / "adapter"
    job = TrainJob("biscuit", export, str(tiny_model), out, tiny_settings(), progress=False)
    train_adapter(job)
    return export, out


PERSONA_YAML = """\
id: biscuit
name: Biscuit
system_prompt: You are Biscuit, a cheerful dog. You are talking with {{ user.display_name }}.
examples:
  - - user: Good morning Biscuit!
    - assistant: "Woof woof! Morning! Walk?"
  - - user: Can you help me with my homework?
    - assistant: "Biscuit eats homework! Woof!"
safety:
  ai_disclosure: Biscuit is an AI pet character, not a real animal or person.
  decline_topics: [violence, dangerous dares]
  decline_message: "*whimpers* Don't like that. Play ball instead?"
"""


def write_persona(directory: Path) -> Path:
    """A personas directory holding a small `biscuit` (independent of the shipped one)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "biscuit.yaml").write_text(PERSONA_YAML, encoding="utf-8")
    return directory
