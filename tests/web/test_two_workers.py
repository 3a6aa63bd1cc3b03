"""Two real `bot run` workers on one PostgreSQL database, each with its ops port:
exactly one reports `personabot_leader{role="scheduler"} 1`, and after kill -9 of
that one the other reports it within seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_engine import PERSONA
from tests.web.test_bot_run import _free_port, _wait_for

LEADS = re.compile(r'personabot_leader\{role="scheduler",worker="([^"]+)"\} 1\.0')


def _start(tmp_path: Path, url: str, name: str, port: int, llm: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "BOT_DATABASE__URL": url,
            "BOT_PERSONAS__DIRS": f'["{tmp_path / "personas"}"]',
            "BOT_PERSONAS__DEFAULT": "tester",
            "BOT_PERSONAS__WATCH": "false",
            "BOT_MEMORY__ENABLED": "false",
            "BOT_CONSOLE__ENABLED": "true",
            "BOT_LLM__BACKEND": "openai",
            "BOT_LLM__BASE_URL": llm,
            "BOT_LOGGING__FORMAT": "json",
            "BOT_OPS__PORT": str(port),
            "BOT_WORKER_ID": name,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _leaders(ports: dict[str, int]) -> set[str]:
    found: set[str] = set()
    for port in ports.values():
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            continue
        found.update(LEADS.findall(text))
    return found


def test_one_worker_leads_and_another_takes_over(
    tmp_path: Path, postgres_url: str, fake_openai: FakeOpenAIServer
) -> None:
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    ports = {"w1": _free_port(), "w2": _free_port()}
    procs = {
        name: _start(tmp_path, postgres_url, name, port, fake_openai.base_url)
        for name, port in ports.items()
    }
    try:
        for port in ports.values():
            assert _wait_for(f"http://127.0.0.1:{port}/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while len(leaders := _leaders(ports)) != 1:
            assert time.monotonic() < deadline, f"leaders: {leaders}"
            time.sleep(0.2)
        (leader,) = leaders
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(timeout=10)
        survivor = next(name for name in ports if name != leader)
        deadline = time.monotonic() + 30
        while _leaders({survivor: ports[survivor]}) != {survivor}:
            assert time.monotonic() < deadline, "no takeover within 30 s"
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
