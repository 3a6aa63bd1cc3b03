"""Reading a persona's export for training, checked, and turning it into tokens.

`load_export(dir, persona, method)` reads what `bot export` wrote (docs/export.md):
the manifest, then the persona's train and validation files, each checked against
the sha256 the manifest recorded for it before a line of it is used, each line
checked for the record shape. Every problem is one `TrainDataError` naming the file
(and line), never a traceback: a missing directory, no manifest, a tampered file,
an empty split, a malformed line, a persona the export does not hold.

`tokenize_chat(tokenizer, messages, ...)` renders a record with the tokenizer's own
chat template (the one the server uses to build prompts) and labels only the
assistant's tokens: everything else is -100. Every content is neutralised first
(`bot.llm.control_tokens`), exactly as the backends do when serving, so a person's
raw `<|im_start|>` never becomes a special token at training time either.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.errors import UsageError
from bot.llm.control_tokens import ControlTokens

__all__ = [
    "IGNORE_INDEX",
    "ExportData",
    "TrainDataError",
    "assistant_spans",
    "load_export",
    "manifest_sha256",
    "neutralise_record",
    "tokenize_chat",
    "tokenize_records",
]

#: The label of a token that is not trained on (PyTorch's cross-entropy ignore index).
IGNORE_INDEX = -100

Method = Literal["sft", "dpo"]

# One record is one window of a conversation (40 messages by default): a line past
# this is not an export's and is refused before it is parsed.
_MAX_LINE_BYTES = 8 << 20
_MAX_MANIFEST_BYTES = 64 << 20
_ROLES = ("system", "user", "assistant")
# A persona id as persona files spell it (bot/personas/schema.py): it names a
# directory of the export, so nothing else may reach the file system.
_PERSONA_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TrainDataError(UsageError):
    """The export cannot be trained on; the message names the file and the problem."""

    label = "training data error"


@dataclass(frozen=True)
class ExportData:
    """One persona's records from one export, verified against its manifest."""

    path: Path
    persona: str
    method: Method
    manifest_sha256: str
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)  # relpath -> sha256 used


def manifest_sha256(export_dir: Path) -> str:
    """The sha256 of the export's manifest.json (what a report says it learned from)."""
    return hashlib.sha256((export_dir / "manifest.json").read_bytes()).hexdigest()


def load_export(export_dir: Path, persona: str, method: Method) -> ExportData:
    """The persona's train and validation records for `method` (chat files for SFT,
    DPO files for DPO), every file verified against the manifest's sha256."""
    if not _PERSONA_ID.fullmatch(persona):
        raise TrainDataError(
            f"--persona {persona[:80]!r}: a persona id is 1-64 lower-case letters, digits, "
            "'_' or '-'"
        )
    export_dir = Path(export_dir)
    if not export_dir.exists():
        raise TrainDataError(f"--data {str(export_dir)!r}: no such export directory")
    if not export_dir.is_dir():
        raise TrainDataError(f"--data {str(export_dir)!r}: not a directory")
    manifest_path = export_dir / "manifest.json"
    manifest, raw = _read_manifest(manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise TrainDataError(f"{manifest_path}: has no 'files' table; not a `bot export` manifest")
    personas = sorted({r.split("/", 1)[0] for r in files if isinstance(r, str) and "/" in r})
    if persona not in personas:
        held = ", ".join(personas) or "none"
        raise TrainDataError(
            f"{export_dir}: the export holds no records of persona {persona!r} "
            f"(it holds: {held})"
        )
    stem = "chat" if method == "sft" else "dpo"
    splits: dict[str, list[dict[str, Any]]] = {}
    used: dict[str, str] = {}
    for split in ("train", "validation"):
        rel = f"{persona}/{stem}.{split}.jsonl"
        entry = files.get(rel)
        if entry is None:
            raise TrainDataError(
                f"{export_dir}: no {split} split for persona {persona!r} ({rel} has no "
                f"records{'; raise export.validation_fraction' if split == 'validation' else ''})"
            )
        path = export_dir / rel
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(expected, str):
            raise TrainDataError(f"{manifest_path}: files[{rel!r}] has no sha256")
        records = list(_read_records(path, rel, expected, method))
        if not records:
            raise TrainDataError(f"{path}: the {split} split is empty")
        splits[split] = records
        used[rel] = expected
    return ExportData(
        path=export_dir,
        persona=persona,
        method=method,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        train=splits["train"],
        validation=splits["validation"],
        files=used,
    )


def _read_manifest(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise TrainDataError(f"{path}: larger than a manifest can be")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TrainDataError(
            f"{path.parent}: no manifest.json; not a complete `bot export` directory"
        ) from None
    except OSError as exc:
        raise TrainDataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrainDataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: not a JSON object")
    return data, raw


def _read_records(
    path: Path, rel: str, expected_sha: str, method: Method
) -> Iterator[dict[str, Any]]:
    # Hash the whole file before yielding anything: a tampered file is refused
    # before any of it is trained on.
    sha = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    except FileNotFoundError:
        raise TrainDataError(f"{path}: listed in the manifest but missing") from None
    except OSError as exc:
        raise TrainDataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if sha.hexdigest() != expected_sha:
        raise TrainDataError(
            f"{path}: its sha256 does not match the manifest (changed after the export); "
            "export again"
        )
    check = _check_chat if method == "sft" else _check_dpo
    with path.open("rb") as handle:
        for number, line in enumerate(iter(lambda: handle.readline(_MAX_LINE_BYTES + 1), b""), 1):
            where = f"{path}:{number}"
            if len(line) > _MAX_LINE_BYTES:
                raise TrainDataError(f"{where}: a line longer than {_MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise TrainDataError(f"{where}: not a JSON record ({exc})") from None
            problem = check(record)
            if problem is not None:
                raise TrainDataError(f"{where}: {problem}")
            yield record


def _messages_problem(messages: Any, what: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"{what}: expected a non-empty list of messages"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{what}[{i}]: expected an object with 'role' and 'content'"
        if message.get("role") not in _ROLES:
            return f"{what}[{i}].role: expected one of {', '.join(_ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"{what}[{i}].content: expected a string"
    return None


def _check_chat(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object with 'messages'"
    messages: Any = record.get("messages")
    problem = _messages_problem(messages, "messages")
    if problem is None and not any(m["role"] == "assistant" for m in messages):
        problem = "messages: no assistant message to learn from"
    return problem


def _check_dpo(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object with 'prompt', 'chosen' and 'rejected'"
    for key in ("prompt", "chosen", "rejected"):
        problem = _messages_problem(record.get(key), key)
        if problem is not None:
            return problem
    for key in ("chosen", "rejected"):
        if [m["role"] for m in record[key]] != ["assistant"]:
            return f"{key}: expected exactly one assistant message"
    return None


def neutralise_record(record: dict[str, Any], control: ControlTokens) -> dict[str, Any]:
    """`record` (chat or DPO) with every message content neutralised."""

    def clean(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        return [
            {"role": m["role"], "content": control.neutralise(m["content"])} for m in messages
        ]

    if "messages" in record:
        return {"messages": clean(record["messages"])}
    return {key: clean(record[key]) for key in ("prompt", "chosen", "rejected")}


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    return str(text)


def assistant_spans(
    tokenizer: Any, messages: Sequence[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A turn's span is what the template adds for it after the generation prompt: its
    content and its end-of-turn token (so the model learns to stop). Found by
    rendering the conversation up to each turn, which needs a template whose
    renderings of shorter conversations are prefixes of longer ones.
    """
    full = _render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not full.startswith(through) or not through.startswith(before):
            raise TrainDataError(
                "the chat template does not render a conversation as the prefixes of its "
                "turns, so the assistant's tokens cannot be told apart; use a base model "
                "whose template does"
            )
        if len(through) > len(before):
            spans.append((len(before), len(through)))
    return full, spans


def tokenize_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, max_length: int
) -> dict[str, list[int]] | None:
    """`input_ids`, `attention_mask` and `labels` (-100 outside the assistant's turns)
    of one neutralised conversation, cut to `max_length`; None when the cut leaves
    no assistant token to learn from."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoded["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for index, (start, end) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        # A token is the assistant's when it lies wholly inside one of its spans.
        if k < len(spans) and spans[k][0] <= start and end <= spans[k][1] and end > start:
            labels[index] = ids[index]
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def tokenize_records(
    tokenizer: Any, records: Sequence[dict[str, Any]], control: ControlTokens, max_length: int
) -> tuple[list[dict[str, list[int]]], int]:
    """The training rows of chat `records` (neutralised, then `tokenize_chat`), and
    how many were dropped for leaving no assistant token within `max_length`."""
    rows, dropped = [], 0
    for record in records:
        row = tokenize_chat(
            tokenizer, neutralise_record(record, control)["messages"], max_length=max_length
        )
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    return rows, dropped
