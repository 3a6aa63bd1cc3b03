"""`bot schedule list` and `bot schedule run` as subprocesses over a seeded database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from tests.scheduler.test_service import SCHEDULED


def bot(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update({"HF_HUB_OFFLINE": "1", "BOT_MEMORY__EMBEDDING_MODEL": "none"})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_shows_each_persons_habit_in_their_zone_and_run_does_upkeep(tmp_path: Path) -> None:
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        '[personas]\ndirs = ["personas"]\ndefault = "tester"\n'
        f'[scheduler]\nbackup_dir = "{tmp_path / "backups"}"\n',
        encoding="utf-8",
    )
    settings = load_settings(
        tmp_path / "bot.toml",
        {
            "database": {"url": f"sqlite:///{tmp_path}/data/bot.db"},
            "personas": {"dirs": [str(tmp_path / "personas")]},
            "memory": {"embedding_model": "none"},
        },
    )

    async def seed() -> None:
        async with open_app(settings, backend=MockBackend(), watch=False) as app:
            scope = Scope(platform="telegram", channel="42", user="42", persona="tester")
            await app.engine.handle(
                Incoming(scope=scope, actor=Actor(platform="telegram", id="42"), text="hi")
            )
            await app.people.set_timezone("telegram", "42", "Asia/Tokyo")

    asyncio.run(seed())
    listed = bot(tmp_path, "schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["id"]: j for j in map(json.loads, listed.stdout.splitlines())}
    walk = jobs["habit:tester:walk:1"]
    assert walk["zone"] == "Asia/Tokyo" and walk["next_run"].endswith("T07:30:00+09:00")
    assert "sweep" in jobs and "upkeep:backup" in jobs
    ran = bot(tmp_path, "schedule", "run", "upkeep:backup")
    assert ran.returncode == 0, ran.stderr
    assert list((tmp_path / "backups").glob("bot-*.db"))
    due = bot(tmp_path, "schedule", "run", "habit:tester:walk:1")
    assert "due now" in due.stdout
    missing = bot(tmp_path, "schedule", "run", "habit:nobody:x:9")
    assert missing.returncode == 2 and "no job" in missing.stderr


def test_list_twice_moves_nothing_and_backup_without_a_directory_says_so(
    tmp_path: Path,
) -> None:
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        '[personas]\ndirs = ["personas"]\ndefault = "tester"\n', encoding="utf-8"
    )
    missing = bot(tmp_path, "schedule", "list")
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    assert not (tmp_path / "data").exists()  # listing created no database
    made = bot(tmp_path, "db", "upgrade")
    assert made.returncode == 0, made.stderr
    first = bot(tmp_path, "schedule", "list", "--json")
    second = bot(tmp_path, "schedule", "list", "--json")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout and '"sweep"' in first.stdout
    backup = bot(tmp_path, "schedule", "run", "upkeep:backup")
    assert backup.returncode == 2
    assert backup.stderr.strip() == (
        "config error: scheduler.backup_dir is not set: there is nowhere to back up to"
    )
    unknown = bot(tmp_path, "schedule", "run", "upkeep:vacuum")
    assert unknown.returncode == 2 and unknown.stderr.startswith("usage error: no upkeep job")
