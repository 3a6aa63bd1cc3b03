"""Kill -9 of a real `bot db copy` process mid-copy, then the same command again:
it continues from the progress record and ends with every table verified."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.db import create_db_engine, upgrade
from tests.dbcopy.test_copy import _counts
from tests.fakes.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent.parent


def _bot(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli", "db", "copy", *args]


def _progress(url: str) -> dict[str, tuple[int, str]]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("bot_dbcopy_progress"):
                return {}
            rows = conn.execute(sa.text("SELECT name, rows, state FROM bot_dbcopy_progress"))
            return {
                r.name: (int(r.rows), str(r.state)) for r in rows if not r.name.startswith("index:")
            }
    finally:
        engine.dispose()


def test_kill_9_mid_copy_then_the_rerun_finishes_it(
    filled_sqlite: str, postgres_url: str, postgres_server: PostgresServer
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Slowed down (20 rows/s, batches of 3) so that the kill lands mid-copy.
    proc = subprocess.Popen(
        _bot("--from", filled_sqlite, "--to", postgres_url, "--batch-size", "3", "--rate", "20"),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            state = _progress(postgres_url)
            if sum(rows for name, (rows, _) in state.items() if name != "*") >= 10:
                break
            assert time.monotonic() < deadline, "the copy never got going"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = _progress(postgres_url)
    copied = {name: rows for name, (rows, _) in state.items() if name != "*"}
    source = _counts(filled_sqlite)
    assert 0 < sum(copied.values()) < sum(source.values())
    # What the record says is exactly what the target holds (batch and record commit
    # together), so nothing is copied twice or skipped.
    there = _counts(postgres_url)
    assert all(there[name] == rows for name, rows in copied.items())

    # A second copy from another source is refused while this one is unfinished.
    twin = Path(filled_sqlite.removeprefix("sqlite:///")).with_name("twin.db")
    shutil.copyfile(filled_sqlite.removeprefix("sqlite:///"), twin)
    other = subprocess.run(
        _bot("--from", f"sqlite:///{twin}", "--to", postgres_url),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert other.returncode == 3
    assert "holds an unfinished copy of another database" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1

    again = subprocess.run(
        _bot("--from", filled_sqlite, "--to", postgres_url, "--format", "json"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "resuming the copy" in again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"] is True and report["ok"] is True
    assert report["rows"] == source
    assert _counts(postgres_url) == source
    assert _progress(postgres_url) == {}
    # The secondary indexes dropped for the load are all back, as migrations make them.
    fresh = postgres_server.new_database()
    try:
        engine = create_db_engine(fresh)
        upgrade(engine)
        engine.dispose()
        assert _indexes(postgres_url) == _indexes(fresh)
        assert any("hnsw" in definition for definition in _indexes(fresh).values())
    finally:
        postgres_server.drop_database(fresh)


def _indexes(url: str) -> dict[str, str]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                    "AND tablename != 'alembic_version'"
                )
            )
            return {name: definition for name, definition in rows}
    finally:
        engine.dispose()


def test_an_interruption_while_the_indexes_are_off_leaves_them_written_down(
    filled_sqlite: str,
    postgres_url: str,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.dbcopy import copy_database, steps
    from bot.errors import StorageError

    def lost(*_args: object) -> None:
        raise StorageError("connection lost")

    monkeypatch.setattr(steps, "backfill", lost)
    with pytest.raises(StorageError, match="connection lost"):
        copy_database(filled_sqlite, postgres_url)
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        saved = conn.execute(
            sa.text("SELECT count(*) FROM bot_dbcopy_progress WHERE name LIKE 'index:%'")
        ).scalar_one()
    engine.dispose()
    assert saved > 0
    assert not any("hnsw" in d for d in _indexes(postgres_url).values())
    monkeypatch.undo()
    result = copy_database(filled_sqlite, postgres_url)
    assert result.resumed and result.ok and result.vectors
    fresh = postgres_server.new_database()
    try:
        engine = create_db_engine(fresh)
        upgrade(engine)
        engine.dispose()
        assert _indexes(postgres_url) == _indexes(fresh)
    finally:
        postgres_server.drop_database(fresh)
