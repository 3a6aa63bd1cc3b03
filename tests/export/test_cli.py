"""`bot export` as people run it: a subprocess, exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.export.conftest import KEY
from tests.export.ledger import Ledger


@pytest.fixture
def ledger(sqlite_ledger: Ledger) -> Ledger:
    """`--db` names a SQLite file (the PostgreSQL run is in test_scrub_export)."""
    return sqlite_ledger


REPO = Path(__file__).resolve().parents[2]


def _bot(*args: str, key: str | None = KEY, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env["PYTHONPATH"] = str(REPO)
    if key is not None:
        env["BOT_EXPORT__HMAC_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_export_from_the_command_line(ledger: Ledger, tmp_path: Path) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-cli")
    ledger.exchange(conv, alice, "hi, call me on +49 151 23456789", "Woof!")
    db = ledger.url.removeprefix("sqlite:///")
    out = tmp_path / "dataset"

    done = _bot("--db", db, "--out", str(out), "--persona", "pal", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pal/chat.train.jsonl\t1 record(s)" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["persona"] == "pal"
    line = (out / "pal/chat.train.jsonl").read_text()
    assert "<PHONE>" in line and "23456789" not in line

    again = _bot("--db", db, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2
    assert "not empty" in again.stderr and "--force" in again.stderr

    forced = _bot("--db", db, "--out", str(out), "--force", "--since", "2026-01-01", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


def test_bad_input_on_the_command_line(ledger: Ledger, tmp_path: Path) -> None:
    db = ledger.url.removeprefix("sqlite:///")
    out = str(tmp_path / "o")

    no_key = _bot("--db", db, "--out", out, key=None, cwd=tmp_path)
    assert no_key.returncode == 2
    assert "BOT_EXPORT__HMAC_KEY" in no_key.stderr

    bad_date = _bot("--db", db, "--out", out, "--since", "last tuesday", cwd=tmp_path)
    assert bad_date.returncode == 2
    assert "--since = 'last tuesday'" in bad_date.stderr

    missing = _bot("--db", str(tmp_path / "nope.db"), "--out", out, cwd=tmp_path)
    assert missing.returncode == 3
    assert "does not exist" in missing.stderr

    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = _bot("--db", db, "--out", str(blocked / "o"), cwd=tmp_path)
    assert unwritable.returncode == 3
    assert "cannot write" in unwritable.stderr
    assert not Path(out).exists()
