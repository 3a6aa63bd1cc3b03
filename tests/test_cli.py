"""The `bot` command driven as a subprocess, the way people and scripts use it."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.db import head_revision
from tests.fakes.openai_server import FakeOpenAIServer, Reply

REPO = Path(__file__).resolve().parent.parent
PERSONA = (
    (REPO / "tests" / "test_engine.py")
    .read_text(encoding="utf-8")
    .split('PERSONA = """\\\n')[1]
    .split('"""')[0]
)


def bot(
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    full_env.update(
        {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
        encoding="utf-8",
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        '[personas]\ndirs = ["personas"]\ndefault = "tester"\nwatch = false\n'
        '[database]\nurl = "sqlite:///data/bot.db"\n',
        encoding="utf-8",
    )
    return tmp_path


def test_chat_scripted_with_the_local_tiny_model(workdir: Path, tiny_model_dir: Path) -> None:
    result = bot(
        "chat",
        "--backend",
        "transformers",
        "--model",
        str(tiny_model_dir),
        stdin="hello there\n你好，今天怎么样？\n\n",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[3] == ""  # one line per input line, the empty one too
    assert lines[0] and lines[1] and lines[2] == ""
    with sqlite3.connect(workdir / "data" / "bot.db") as conn:
        stored = conn.execute(
            "select m.direction, m.text, c.platform, m.backend from messages m "
            "join conversations c on c.id = m.conversation_id order by m.id"
        ).fetchall()
    assert [row[:3] for row in stored[::2]] == [
        ("in", "hello there", "console"),
        ("in", "你好，今天怎么样？", "console"),
    ]
    assert all(row[0] == "out" and row[3] == "transformers" for row in stored[1::2]), stored
    assert [row[1].replace("\\", "\\\\").replace("\n", "\\n") for row in stored[1::2]] == lines[:2]


def test_chat_jsonl_against_an_openai_server(workdir: Path, fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script(Reply(text="Hi! I'm Tess.\nNice to meet you."))
    result = bot(
        "chat",
        "--backend",
        "openai",
        "--base-url",
        fake_openai.base_url,
        "--format",
        "jsonl",
        "--db",
        str(workdir / "other.db"),
        stdin="hi\n",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert record["reply"] == "Hi! I'm Tess.\nNice to meet you." and record["error"] is False
    assert (workdir / "other.db").exists()


def test_chat_with_failing_backend_apologises_keeps_going_and_exits_3(
    workdir: Path, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.default = Reply.http_error(500)
    result = bot(
        "chat",
        "--backend",
        "openai",
        "--base-url",
        fake_openai.base_url,
        stdin="one\ntwo\n",
        cwd=workdir,
        env={"BOT_LLM__MAX_RETRIES": "0"},
    )
    assert result.returncode == 3, result.stderr
    assert (
        result.stdout.splitlines()
        == ["Sorry, I lost my train of thought for a moment. Could you say that again?"] * 2
    )
    assert "backend error: 2 of 2 message(s) got the apology" in result.stderr
    with sqlite3.connect(workdir / "data" / "bot.db") as conn:
        assert conn.execute("select count(*), min(stage) from failures").fetchone() == (
            2,
            "generate",
        )


def test_chat_with_nothing_listening_exits_3_at_once(workdir: Path) -> None:
    started = time.monotonic()
    result = bot(
        "chat",
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        stdin="one\n",
        cwd=workdir,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""  # nothing was read or answered
    [line] = [x for x in result.stderr.splitlines() if not x.startswith("[")]
    assert line.startswith("backend error: cannot reach an OpenAI-compatible server at ")
    assert time.monotonic() - started < 30


def test_chat_against_a_server_that_never_answers_exits_3_in_bounded_time(
    workdir: Path,
) -> None:
    # A socket that accepts connections and never says a word.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        started = time.monotonic()
        result = bot(
            "chat",
            "--backend",
            "openai",
            "--base-url",
            url,
            stdin="hello?\n",
            cwd=workdir,
            env={"BOT_LLM__CONNECT_TIMEOUT_S": "1"},
        )
    assert result.returncode == 3, result.stderr
    assert "did not answer within 1 s" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_chat_whose_completions_hang_exits_3_after_the_timeout(
    workdir: Path, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.default = Reply.hang(60)
    started = time.monotonic()
    result = bot(
        "chat",
        "--backend",
        "openai",
        "--base-url",
        fake_openai.base_url,
        stdin="hi\n",
        cwd=workdir,
        env={"BOT_LLM__TIMEOUT_S": "1", "BOT_LLM__MAX_RETRIES": "0"},
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("Sorry, I lost my train of thought")
    assert time.monotonic() - started < 40


def test_unknown_persona_fails_clearly(workdir: Path) -> None:
    result = bot("chat", "--persona", "nobody", cwd=workdir, stdin="hi\n")
    assert result.returncode == 1
    assert "nobody" in result.stderr and "tester" in result.stderr


def test_bad_config_exits_2_naming_key_value_expectation(workdir: Path) -> None:
    result = bot("config", "show", cwd=workdir, env={"BOT_LLM__MAX_CONCURRENCY": "many"})
    assert result.returncode == 2
    assert "llm.max_concurrency = 'many'" in result.stderr and "valid integer" in result.stderr
    bad = bot("chat", "--backend", "gpt4", cwd=workdir)
    assert bad.returncode == 2 and "--backend" in bad.stderr


def test_config_show_masks_secrets(workdir: Path) -> None:
    result = bot("config", "show", cwd=workdir, env={"BOT_LLM__API_KEY": "sk-supersecretvalue123"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["llm"]["api_key"] == "**********"
    assert "sk-supersecretvalue123" not in result.stdout + result.stderr
    in_urls = bot(
        "config",
        "show",
        cwd=workdir,
        env={
            "BOT_DATABASE__URL": "postgresql+psycopg://bot:pg-secret-123@db:5432/bot",
            "BOT_LLM__BASE_URL": "https://llm-token-789@gpu-box:8000/v1",
            "BOT_TELEGRAM__WEBHOOK_URL": "https://bot.example/telegram?token=tg-secret-456",
        },
    )
    assert in_urls.returncode == 0, in_urls.stderr
    shown = json.loads(in_urls.stdout)
    assert shown["database"]["url"] == "postgresql+psycopg://bot:**********@db:5432/bot"
    assert shown["llm"]["base_url"] == "https://**********@gpu-box:8000/v1"
    assert shown["telegram"]["webhook_url"] == "https://bot.example/telegram?token=**********"


def test_personas_check_reports_every_problem_with_location(workdir: Path) -> None:
    bad = workdir / "personas" / "bad.yaml"
    bad.write_text("version: 1\nid: Bad Id\nname: 5\ntemperature: 3\n", encoding="utf-8")
    result = bot("personas", "check", cwd=workdir)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("personas/bad.yaml:2:5: id:") for line in lines), lines
    assert any(":4:1: temperature:" in line for line in lines), lines
    assert any("system_prompt" in line for line in lines), lines
    ok = bot("personas", "check", str(workdir / "personas" / "tester.yaml"), cwd=workdir)
    assert ok.returncode == 0, ok.stdout


def test_personas_schema_and_db_commands(workdir: Path) -> None:
    schema = bot("personas", "schema", cwd=workdir)
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"]
    upgraded = bot("db", "upgrade", "--db", str(workdir / "x.db"), cwd=workdir)
    assert upgraded.returncode == 0 and "revision" in upgraded.stdout
    current = bot("db", "current", "--db", str(workdir / "x.db"), cwd=workdir)
    assert current.returncode == 0, current.stderr
    now, head = current.stdout.split()[1::2]
    assert now == head == head_revision()


def test_run_without_any_adapter_is_a_config_error(workdir: Path) -> None:
    result = bot("run", cwd=workdir)
    assert result.returncode == 2 and "no adapter is enabled" in result.stderr


def test_run_answers_then_stops_cleanly_on_sigterm(
    workdir: Path, fake_openai: FakeOpenAIServer
) -> None:
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(
        {
            "BOT_CONSOLE__ENABLED": "true",
            "BOT_LLM__BACKEND": "openai",
            "BOT_LLM__BASE_URL": fake_openai.base_url,
            "BOT_LOGGING__FORMAT": "json",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=workdir,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("hello from run\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "Hello there!"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # stdin stays open: the read must not hold us
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "bot.started" in events and "bot.stopping" in events


def _offline_env(tmp: Path) -> dict[str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Not told to be offline; the "hub" is a closed local port; an empty cache.
    return {
        "HF_HUB_OFFLINE": "",
        "TRANSFORMERS_OFFLINE": "",
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HOME": str(tmp / "hf"),
    }


def test_chat_offline_without_the_model_says_so_at_once(workdir: Path) -> None:
    started = time.monotonic()
    result = bot(
        "chat",
        "--model",
        "someone/not-here",
        stdin="hi\n",
        cwd=workdir,
        env=_offline_env(workdir),
    )
    assert result.returncode == 3, result.stderr
    assert "backend error: model 'someone/not-here' is not on this machine" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.monotonic() - started < 30  # not a minute of retries


def test_models_fetch_offline_is_exit_3_at_once(workdir: Path) -> None:
    started = time.monotonic()
    result = bot("models", "fetch", "someone/not-here", cwd=workdir, env=_offline_env(workdir))
    assert result.returncode == 3, result.stderr
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_chat_shows_progress_and_keeps_logs_off_stdout(workdir: Path, tiny_model_dir: Path) -> None:
    result = bot("chat", "--model", str(tiny_model_dir), stdin="hello\n", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"[loading {tiny_model_dir}]" in result.stderr
    assert "[ready: Tess (tester)]" in result.stderr
    assert len(result.stdout.splitlines()) == 1  # the reply, and nothing else
    assert "Loading weights" not in result.stderr + result.stdout


def test_personas_list_prints_only_the_list(workdir: Path) -> None:
    (workdir / "personas" / "broken.yaml").write_text("id: [\n", encoding="utf-8")
    result = bot("personas", "list", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("tester\tTess\t")
    assert len(result.stdout.splitlines()) == 1  # no log lines on stdout
    assert "broken.yaml" in result.stderr
