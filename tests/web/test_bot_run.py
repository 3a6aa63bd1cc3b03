"""`bot run` as a real process with `ops.port` set: the port answers /healthz and
/readyz, and /metrics counts the turn it just answered (on a SQLite file and on
PostgreSQL); SIGTERM closes it with the rest."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.test_engine import PERSONA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bot_run_serves_its_ops_port(
    tmp_path: Path, database_url: str, fake_openai: FakeOpenAIServer
) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    fake_openai.default = Reply(text="Hello there!")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "BOT_DATABASE__URL": database_url,
            "BOT_PERSONAS__DIRS": f'["{personas}"]',
            "BOT_PERSONAS__DEFAULT": "tester",
            "BOT_PERSONAS__WATCH": "false",
            "BOT_MEMORY__ENABLED": "false",
            "BOT_SCHEDULER__ENABLED": "false",
            "BOT_CONSOLE__ENABLED": "true",
            "BOT_LLM__BACKEND": "openai",
            "BOT_LLM__BASE_URL": fake_openai.base_url,
            "BOT_LOGGING__FORMAT": "json",
            "BOT_OPS__PORT": str(port),
            "BOT_WORKER_ID": "worker-under-test",
            "BOT_SAFETY__DISCLOSE_FIRST_CONTACT": "false",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdin is not None and proc.stdout is not None
        health = _wait_for(f"{base}/healthz")
        assert health.json() == {"status": "ok", "worker": "worker-under-test"}
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "console"}

        proc.stdin.write("hello from run\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "Hello there!"
        text = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'personabot_turns_total{outcome="answered",platform="console"} 1.0' in text
        assert 'personabot_worker_info{worker="worker-under-test"} 1.0' in text
        assert 'personabot_delivery_seconds_count{platform="console"} 1.0' in text
        assert "personabot_queue_scrape_ok 1.0" in text

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"ops.listening"' in err
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_bot_run_with_its_ops_port_taken_is_one_line_and_exit_2(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(
            {
                "BOT_DATABASE__URL": f"sqlite:///{tmp_path}/bot.db",
                "BOT_PERSONAS__DIRS": f'["{personas}"]',
                "BOT_PERSONAS__DEFAULT": "tester",
                "BOT_PERSONAS__WATCH": "false",
                "BOT_MEMORY__ENABLED": "false",
                "BOT_CONSOLE__ENABLED": "true",
                "BOT_LLM__BACKEND": "openai",
                "BOT_LLM__BASE_URL": "http://127.0.0.1:9/v1",
                "BOT_LOGGING__FORMAT": "json",
                "BOT_OPS__PORT": str(port),
            }
        )
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "run"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"config error: ops: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another worker on this port?)"
    ]
