"""`bot db copy` on real databases: a SQLite file the stores filled, copied to a real
PostgreSQL and back, every table compared; the copied database used by the stores."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.db import Database, create_db_engine
from bot.dbcopy import copy_database, verify_databases
from bot.dbcopy.schema import reflect, skipped_table
from bot.memory.ledger import Ledger
from bot.messages import Actor, Incoming, Scope
from tests.dbcopy.fill import T0

#: Tables the filler writes through the stores (others, new migrations' included, are
#: copied and compared all the same, empty).
FILLED = {
    "apscheduler_jobs", "consent_events", "conversations", "embeddings", "facts",
    "failures", "feedback", "inbox_events", "lore_timers", "messages",
    "moderation_actions", "person_limits", "persona_bindings", "persona_versions",
    "safety_events", "summaries", "users",
}  # fmt: skip


def _counts(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: int(conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one())
                for name in reflect(conn).tables
                if not skipped_table(name)
            }
    finally:
        engine.dispose()


def test_sqlite_to_postgres_and_back_keeps_every_row(
    filled_sqlite: str, postgres_url: str, tmp_path: Path
) -> None:
    said: list[str] = []
    result = copy_database(filled_sqlite, postgres_url, batch_size=7, say=said.append)
    assert result.ok, [c.line() for c in result.checks if not c.ok]
    source = _counts(filled_sqlite)
    assert _counts(postgres_url) == source
    # Every table of the schema at head is copied (and compared), not just a list.
    assert {c.name for c in result.checks} == set(source)
    assert {n for n, rows in source.items() if rows > 0} >= FILLED
    assert result.rows["messages"] == source["messages"] > 50
    assert result.total_rows == sum(source.values())
    assert "verifying: counts and checksums of every table" in said
    # The progress record is gone once every table matched.
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("bot_dbcopy_progress")
        # A fact superseded by a newer one (a link to a later row) survives.
        links = conn.execute(
            sa.text("SELECT count(*) FROM facts WHERE superseded_by > id")
        ).scalar_one()
        assert links > 0
    engine.dispose()

    back = f"sqlite:///{tmp_path}/back.db"
    result = copy_database(postgres_url, back, batch_size=11)
    assert result.ok
    checks = verify_databases(filled_sqlite, back)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    # The two SQLite files agree checksum for checksum with the PostgreSQL copy.
    there = {c.name: c.source_sha256 for c in result.checks}
    assert {c.name: c.source_sha256 for c in checks} == there
    # FTS5 indexes are derived: the insert triggers rebuilt them in the new file.
    conn = sqlite3.connect(f"{tmp_path}/back.db")
    try:
        for fts in ("messages_fts", "messages_fts_tri", "facts_fts", "facts_fts_tri"):
            conn.execute(f"INSERT INTO {fts}({fts}) VALUES ('integrity-check')")
        hits = conn.execute(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'canal'"
        ).fetchone()[0]
        assert hits > 0
        assert conn.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == source["messages"]
    finally:
        conn.close()


def _postings_in_step(url: str) -> None:
    """The word search's postings (not copied: the target's triggers fill them as the
    rows arrive) are exactly what the copied messages and facts say."""
    from tests.memory.test_pg_postings import _in_step

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert _in_step(conn) > 0
    finally:
        engine.dispose()


async def test_the_stores_keep_working_on_the_copy(filled_sqlite: str, postgres_url: str) -> None:
    copy_database(filled_sqlite, postgres_url)
    _postings_in_step(postgres_url)
    before = _counts(postgres_url)["messages"]
    db = Database.open(postgres_url)
    try:
        ledger = Ledger(db)
        scope = Scope(platform="telegram", channel="dm-0", user="user0", persona="p")
        actor = Actor(platform="telegram", id="user0", display_name="Person 0")
        stored = await ledger.record_incoming(
            Incoming(scope=scope, actor=actor, text="after the move", received_at=T0),
            "after the move",
        )
        # The sequences were reset: the new row takes the next id, not a copied one.
        assert stored.message_id == before + 1
        assert stored.conversation_id == 1 and stored.user_id == 1
        history = await ledger.history(stored.conversation_id, limit=3)
        assert history[-1].text == "after the move"
        assert history[0].created_at.tzinfo is not None
    finally:
        await db.aclose()


def test_postgres_to_postgres(filled_sqlite: str, postgres_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    copy_database(filled_sqlite, postgres_url)
    other = postgres_server.new_database()
    try:
        result = copy_database(postgres_url, other, batch_size=13)
        assert result.ok
        assert _counts(other) == _counts(filled_sqlite)
        _postings_in_step(other)
    finally:
        postgres_server.drop_database(other)


def test_datetimes_are_the_same_instant_on_both_sides(
    filled_sqlite: str, postgres_url: str
) -> None:
    copy_database(filled_sqlite, postgres_url)
    src = create_db_engine(filled_sqlite)
    dst = create_db_engine(postgres_url)
    try:
        with src.connect() as a, dst.connect() as b:
            raw = a.execute(sa.text("SELECT created_at FROM messages WHERE id = 3")).scalar_one()
            # The PostgreSQL session's zone must not shift a stored instant.
            b.execute(sa.text("SET TIME ZONE 'Asia/Tokyo'"))
            at = b.execute(sa.text("SELECT created_at FROM messages WHERE id = 3")).scalar_one()
        assert raw == "2026-05-01 12:01:00.123456"
        assert at == T0 + timedelta(minutes=1, microseconds=123456)
    finally:
        src.dispose()
        dst.dispose()


def test_backfill_vectors_runs_after_the_copy(filled_sqlite: str, postgres_url: str) -> None:
    module = pytest.importorskip("bot.memory.pg_search")
    if not hasattr(module, "backfill_vectors"):
        pytest.skip("bot.memory.pg_search has no backfill_vectors yet")
    result = copy_database(filled_sqlite, postgres_url)
    assert result.ok
    conn = sqlite3.connect(filled_sqlite.removeprefix("sqlite:///"))
    try:
        stored = conn.execute("SELECT count(*) FROM embeddings WHERE kind != 'forget'").fetchone()
    finally:
        conn.close()
    assert result.vectors == stored[0] > 0


def test_a_database_the_stores_filled_on_postgresql_moves_to_sqlite(
    postgres_url: str, tmp_path: Path
) -> None:
    import asyncio

    from tests.dbcopy.fill import fill

    asyncio.run(fill(postgres_url, people=2, turns=8))
    back = f"sqlite:///{tmp_path}/from_pg.db"
    result = copy_database(postgres_url, back, batch_size=5)
    assert result.ok, [c.line() for c in result.checks if not c.ok]
    assert _counts(back) == _counts(postgres_url)
    assert result.rows["embeddings"] > 0 and result.rows["messages"] == 32
    conn = sqlite3.connect(f"{tmp_path}/from_pg.db")
    try:
        # Blobs are bytes again, times naive UTC text as SQLAlchemy writes them.
        blob, at = conn.execute("SELECT vector, created_at FROM embeddings LIMIT 1").fetchone()
        assert isinstance(blob, bytes) and len(blob) == 32 * 4
        assert len(at) == len("2026-05-01 12:00:00.000000") and "+" not in at
    finally:
        conn.close()
