import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

import bot.models  # noqa: F401
from bot.db import Database, create_db_engine, current_revision, head_revision, upgrade
from bot.errors import ConfigError, StorageError
from bot.memory.ledger import Ledger
from bot.memory.tables import include_object
from bot.messages import Actor, Incoming, Scope


def test_migrations_reach_head_and_match_the_models(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/m.db")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    upgrade(engine)  # idempotent
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/w.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_database_directory_is_created(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/a/b/c.db")
    upgrade(engine)
    assert (tmp_path / "a" / "b" / "c.db").exists()
    engine.dispose()


def test_invalid_url_is_a_clear_error() -> None:
    # A bad URL is a configuration mistake (exit 2), named with its credentials masked.
    with pytest.raises(ConfigError, match="not a database URL"):
        create_db_engine("no such url")
    with pytest.raises(ConfigError) as err:
        create_db_engine("nosuchdialect://bot:hunter2-pw@db/x")
    assert "hunter2-pw" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_is_refused_before_any_write(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    path.chmod(0o444)
    with pytest.raises(StorageError, match="not writable"):
        create_db_engine(f"sqlite:///{path}")


async def test_read_only_database_gives_clear_error_and_stays_intact(tmp_path: Path) -> None:
    # Works as root too: SQLite's own read-only mode refuses writes for everyone.
    path = tmp_path / "ro2.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    db = Database(create_db_engine(f"sqlite:///file:{path}?mode=ro&uri=true"))
    scope = Scope(platform="console", channel="c", user="u", persona="p")
    actor = Actor(platform="console", id="u", display_name="U")
    with pytest.raises(StorageError, match=r"read-only|readonly"):
        await Ledger(db).record_incoming(Incoming(scope=scope, actor=actor, text="x"), "x")
    await db.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_locked_database_is_a_clear_error_and_nothing_is_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = Database(create_db_engine(f"sqlite:///{path}", busy_timeout_ms=100))
    upgrade(db.engine)
    ledger = Ledger(db)
    scope = Scope(platform="console", channel="c", user="u", persona="p")
    actor = Actor(platform="console", id="u", display_name="U")
    await ledger.record_incoming(Incoming(scope=scope, actor=actor, text="first"), "first")

    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with pytest.raises(StorageError, match="locked"):
            await ledger.record_incoming(
                Incoming(scope=scope, actor=actor, text="second"), "second"
            )
    finally:
        holder.rollback()
        holder.close()
    stored = await ledger.record_incoming(Incoming(scope=scope, actor=actor, text="third"), "third")
    history = await ledger.history(stored.conversation_id, limit=10)
    assert [t.text for t in history] == ["first", "third"]
    await db.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_reads_see_committed_writes_and_run_beside_a_busy_writer(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path}/r.db")
    await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
    await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
    count = text("SELECT count(*) FROM t")
    assert await db.read(lambda c: c.execute(count).scalar_one()) == 1

    # The writer is held inside a transaction that has written a row; a read still
    # answers, from the last committed snapshot, without waiting for it.
    entered, release = threading.Event(), threading.Event()

    def slow_write(c: Connection) -> None:
        c.execute(text("INSERT INTO t VALUES (2)"))
        entered.set()
        release.wait(10)

    writing = asyncio.ensure_future(db.run(slow_write))
    await asyncio.to_thread(entered.wait, 10)
    assert await asyncio.wait_for(db.read(lambda c: c.execute(count).scalar_one()), 5) == 1
    release.set()
    await writing
    assert await db.read(lambda c: c.execute(count).scalar_one()) == 2
    await db.aclose()


async def test_a_read_that_writes_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path}/r.db")
    await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
    with pytest.raises(StorageError, match="attempt to write a readonly database"):
        await db.read(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
    assert await db.run(lambda c: c.execute(text("SELECT count(*) FROM t")).scalar_one()) == 0
    await db.aclose()


async def test_an_in_memory_database_reads_through_its_one_connection() -> None:
    db = Database.open("sqlite://")
    await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
    await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (7)")))
    assert await db.read(lambda c: c.execute(text("SELECT x FROM t")).scalar_one()) == 7
    await db.aclose()
