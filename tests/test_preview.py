"""`bot personas preview`: the prompt the engine would send, lore that fired and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.app import open_app
from bot.llm import ApproxTokenCounter
from bot.llm.mock import MockBackend
from bot.personas import load_persona
from bot.personas.lorebook import LORE_HEADING
from bot.personas.preview import HistoryMessage, build_preview
from tests.test_cli import REPO, bot
from tests.test_engine import PERSONA, dm, make_settings
from tests.test_engine_lore import PLACED


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    (tmp_path / "bot.toml").write_text(
        f'[personas]\ndirs = ["{REPO / "personas"}"]\ndefault = "biscuit"\nwatch = false\n',
        encoding="utf-8",
    )
    return tmp_path


def test_preview_of_a_shipped_english_persona(shipped: Path, tiny_model_dir: Path) -> None:
    history = shipped / "history.json"
    history.write_text(
        json.dumps(
            [
                {"role": "user", "content": "Good morning!"},
                {"role": "assistant", "content": "Woof! Morning!"},
            ]
        ),
        encoding="utf-8",
    )
    result = bot(
        "personas", "preview", "biscuit", "--message", "Is the cat on the fence?",
        "--history", str(history), "--tokenizer", str(tiny_model_dir), cwd=shipped,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"persona biscuit (Biscuit) · tokenizer {tiny_model_dir} · prompt ")
    roles = [line.split(" · ")[0] for line in out.splitlines() if line.startswith("── [")]
    assert roles == ["── [0] system", "── [1] user", "── [2] assistant", "── [3] user"]
    assert "fired  home · after_char · " in out and " · constant" in out
    assert "fired  Mr Whiskers · after_char · " in out
    assert "key 'cat' in the new message" in out
    assert "the park" not in out.split("\nlore · ")[1]  # no key of it anywhere


def test_preview_json_of_a_shipped_chinese_persona(shipped: Path, tiny_model_dir: Path) -> None:
    persona = load_persona(REPO / "personas" / "xiaoyu.yaml").persona
    entry = next(e for e in persona.lore.entries if e.keys)
    key = entry.keys[0]
    result = bot(
        "personas", "preview", "xiaoyu", "--message", f"我们聊聊{key}吧", "--format", "json",
        "--tokenizer", str(tiny_model_dir), "--user", "小明", cwd=shipped,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["persona"] == "xiaoyu"
    assert [m["role"] for m in data["messages"]] == ["system", "user"]
    assert data["messages"][1]["content"] == f"我们聊聊{key}吧"
    assert all(m["tokens"] > 0 for m in data["messages"])
    fired = {f["entry"]: f for f in data["lore"]["fired"]}
    label = entry.name or f"entries.{persona.lore.entries.index(entry)}"
    assert fired[label]["why"] == f"key {key!r} in the new message"
    assert fired[label]["tokens"] > 0
    assert data["lore"]["tokens"] <= data["lore"]["budget_tokens"]
    assert data["prompt_tokens"] <= data["budget_tokens"]


HOSTILE = [
    (b"\xff\xfe\x00garbage", "not valid UTF-8 (byte 0xff at offset 0)"),
    (b"[{\"role\": \"user\", \"content\": ", "not JSON (line 1"),
    (b'[{"role": "system", "content": "x"}]', "message 1: role must be 'user' or 'assistant'"),
    (b'[{"role": "user", "content": 5}]', "message 1: content must be text"),
    (b'["just text"]', "message 1: expected an object"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"role": "user", "content": "a"}\n' * 2001, "more than 2000 messages"),
    (b" " * (4 * 1024 * 1024 + 1), "larger than 4 MiB"),
]


@pytest.mark.parametrize(("data", "says"), HOSTILE)
def test_a_hostile_history_file_is_one_line_and_exit_2(
    shipped: Path, data: bytes, says: str
) -> None:
    history = shipped / "history.json"
    history.write_bytes(data)
    result = bot(
        "personas", "preview", "biscuit", "-m", "hi", "--history", str(history), cwd=shipped
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nobody", "-m", "hi"], "no persona 'nobody'"),
        (["biscuit", "-m", "hi", "--history", "/nonexistent/h.json"], "cannot read"),
        (["biscuit", "-m", "hi", "--history", "/"], "is a directory"),
        (["biscuit", "-m", "hi", "--format", "yaml"], "--format must be text or json"),
    ],
)
def test_bad_arguments_are_usage_errors(shipped: Path, args: list[str], says: str) -> None:
    result = bot("personas", "preview", *args, cwd=shipped)
    assert result.returncode == 2 and says in result.stderr, result.stderr


async def test_preview_builds_the_prompt_the_engine_sends(tmp_path: Path) -> None:
    """Same persona, history and message: the preview's messages are the request's."""
    personas = tmp_path / "personas"
    personas.mkdir()
    path = personas / "tester.yaml"
    path.write_text(PERSONA + PLACED, encoding="utf-8")
    backend = MockBackend(lambda req: "ok")
    async with open_app(make_settings(tmp_path), backend=backend, watch=False) as app:
        await app.engine.handle(dm("hello"))
        await app.engine.handle(dm("and the tide?"))
    sent = backend.requests[-1].messages
    history = [HistoryMessage("user", "hello"), HistoryMessage("assistant", "ok")]
    preview = build_preview(
        load_persona(path), "and the tide?", history, backend.tokens, user="Ann", platform="test"
    )
    assert preview.prompt.messages == sent
    assert LORE_HEADING in sent[0].content
    assert {f.label for f in preview.lore.fired} == {"before", "after", "deep", "bottom",
                                                      "very deep"}


def test_json_and_text_agree_on_counts() -> None:
    loaded = load_persona(REPO / "personas" / "biscuit.yaml")
    preview = build_preview(loaded, "walkies with the cat?", [], ApproxTokenCounter())
    data: dict[str, Any] = preview.as_json()
    text = preview.as_text()
    for fired in data["lore"]["fired"]:
        assert f"fired  {fired['entry']} · " in text and f"{fired['tokens']} tokens" in text
    assert f"prompt {data['prompt_tokens']} of {data['budget_tokens']} tokens" in text
