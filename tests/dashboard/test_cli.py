"""`bot moderators add|list|remove`, `bot dashboard` and the dashboard inside `bot run`,
as real processes on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.cli import app
from bot.cli_errors import run_app
from bot.db import create_db_engine
from tests.dashboard.conftest import PASSWORD, sign_in
from tests.test_engine import PERSONA
from tests.web.test_bot_run import _free_port, _wait_for


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "BOT_DATABASE__URL": url,
            "BOT_PERSONAS__DIRS": f'["{personas}"]',
            "BOT_PERSONAS__DEFAULT": "tester",
            "BOT_PERSONAS__WATCH": "false",
            "BOT_MEMORY__ENABLED": "false",
            "BOT_SCHEDULER__ENABLED": "false",
            "BOT_LLM__BACKEND": "openai",
            "BOT_LLM__BASE_URL": "http://127.0.0.1:9/v1",
            "BOT_LOGGING__FORMAT": "json",
            "BOT_SAFETY__DISCLOSE_FIRST_CONTACT": "false",
        }
    )
    return env


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def bot_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Ran]:
    """`bot_cli(tmp_path, url, *args, stdin=...)`: the `bot` command run in this process
    (as `bot.cli.main` runs it: exit codes and one-line errors), with the test's env."""

    def run(tmp_path: Path, url: str, *args: str, stdin: str | None = None) -> Ran:
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("BOT_")]:
                patch.delenv(key)
            for key, value in _env(tmp_path, url).items():
                patch.setenv(key, value)
            patch.chdir(tmp_path)
            patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
            capsys.readouterr()
            code = run_app(app, list(args))
            out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def _bot(
    tmp_path: Path, url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(tmp_path, url),
        cwd=tmp_path,
        timeout=120,
    )


def test_moderators_add_list_remove(
    tmp_path: Path, database_url: str, bot_cli: Callable[..., Ran]
) -> None:
    _bot = bot_cli
    add = _bot(
        tmp_path,
        database_url,
        *("moderators", "add", "ann", "--role", "moderator", "--persona", "tester"),
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert add.returncode == 0, add.stderr
    assert add.stdout == "ann: moderator (tester)\n"
    admin = _bot(
        tmp_path,
        database_url,
        "moderators",
        "add",
        "root",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert admin.returncode == 0, admin.stderr
    listed = _bot(tmp_path, database_url, "moderators", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows == [
        {"name": "ann", "role": "moderator", "personas": ["tester"], "via": "password"},
        {"name": "root", "role": "admin", "personas": None, "via": "password"},
    ]
    table = _bot(tmp_path, database_url, "moderators", "list")
    assert table.stdout.splitlines() == [
        "ann\tmoderator\ttester\tpassword",
        "root\tadmin\t*\tpassword",
    ]
    assert "argon2" not in listed.stdout + table.stdout and PASSWORD not in add.stdout + add.stderr
    # Replacing an account changes its role and ends its sessions; removing it, too.
    again = _bot(
        tmp_path,
        database_url,
        "moderators",
        "add",
        "ann",
        "--role",
        "viewer",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert again.returncode == 0 and again.stdout == "ann: viewer\n"
    removed = _bot(tmp_path, database_url, "moderators", "remove", "ann")
    assert removed.returncode == 0 and removed.stdout == "removed ann\n"
    gone = _bot(tmp_path, database_url, "moderators", "remove", "ann")
    assert gone.returncode == 2
    assert gone.stderr.strip() == "usage error: no account named 'ann' (bot moderators list)"
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        actions = conn.execute(
            text("SELECT actor, action, target FROM dashboard_audit ORDER BY id")
        ).all()
        hashes = conn.execute(text("SELECT before, after FROM dashboard_audit")).all()
    engine.dispose()
    assert [tuple(a) for a in actions] == [
        ("cli", "moderator.add", "moderator:ann"),
        ("cli", "moderator.add", "moderator:root"),
        ("cli", "moderator.add", "moderator:ann"),
        ("cli", "moderator.remove", "moderator:ann"),
    ]
    assert all("argon2" not in b + a for b, a in hashes)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("--role", "admin"),
            PASSWORD,
            "give the password on standard input with --password-stdin",
        ),
        (("--role", "admin", "--password-stdin"), "short\n", "password: at least 10 characters"),
        (
            ("--role", "admin", "--password-stdin"),
            "",
            "--password-stdin: nothing on standard input",
        ),
        (
            ("--role", "god", "--password-stdin"),
            PASSWORD,
            "role 'god': expected 'admin', 'moderator' or 'viewer'",
        ),
        (
            ("--role", "admin", "--persona", "x", "--password-stdin"),
            PASSWORD,
            "--persona limits a moderator; the role admin has no such limit",
        ),
        (
            ("--role", "moderator", "--persona", "../x", "--password-stdin"),
            PASSWORD,
            "persona '../x': not a persona id",
        ),
    ],
)
def test_moderators_add_refuses_bad_input_in_one_line(
    tmp_path: Path, args: tuple[str, ...], stdin: str, message: str, bot_cli: Callable[..., Ran]
) -> None:
    result = bot_cli(
        tmp_path, f"sqlite:///{tmp_path}/m.db", "moderators", "add", "ann", *args, stdin=stdin
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"usage error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_account_name_is_one_line(tmp_path: Path, bot_cli: Callable[..., Ran]) -> None:
    result = bot_cli(
        tmp_path,
        f"sqlite:///{tmp_path}/m.db",
        "moderators",
        "add",
        "a b\x1b[31m",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "\x1b" not in result.stderr


def test_bot_dashboard_serves_until_sigterm(tmp_path: Path, database_url: str) -> None:
    made = _bot(
        tmp_path,
        database_url,
        "moderators",
        "add",
        "root",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD,
    )
    assert made.returncode == 0, made.stderr
    port = _free_port()
    env = _env(tmp_path, "sqlite:///nowhere.db")  # --db wins over the environment
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "dashboard", "--port", str(port), "--db", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_for(f"{base}/login").status_code == 200
        with httpx.Client(base_url=base) as http:
            assert http.get("/").status_code == 303
        _sign_in_sync(base)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"[dashboard on http://127.0.0.1:{port}]" in err


def _sign_in_sync(base: str) -> None:
    import asyncio

    async def go() -> None:
        async with httpx.AsyncClient(base_url=base) as http:
            await sign_in(http, "root", PASSWORD)
            assert "root" in (await http.get("/")).text

    asyncio.run(go())


def test_bot_run_serves_the_dashboard_when_enabled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/run.db"
    made = _bot(
        tmp_path,
        url,
        "moderators",
        "add",
        "root",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD,
    )
    assert made.returncode == 0, made.stderr
    port = _free_port()
    env = _env(tmp_path, url)
    env.update(
        {
            "BOT_CONSOLE__ENABLED": "true",
            "BOT_DASHBOARD__ENABLED": "true",
            "BOT_DASHBOARD__PORT": str(port),
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
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_for(f"{base}/login").status_code == 200
        _sign_in_sync(base)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"dashboard.listening"' in err
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_a_taken_dashboard_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    assert _bot(tmp_path, url, "db", "upgrade").returncode == 0  # a missing one is refused
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _bot(tmp_path, url, "dashboard", "--port", str(port))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"config error: dashboard: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
