"""Forget means gone on PostgreSQL too, checked on the server's own files.

After a forget returns, the database's files (`base/<oid>/`: every table, TOAST
table and index, the GIN word and trigram indexes and the HNSW vector index among
them) hold no byte of the forgotten text, and neither do the WAL segments in
`pg_wal/` (the test server's role is a superuser, so the forget's WAL switches and
checkpoints run). A plain DELETE, or a plain VACUUM, leaves it: that is checked
too, so the test shows what the VACUUM FULL is for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from bot.db import Database
from bot.memory.ledger import Ledger
from bot.memory.store import Memory
from tests.fakes.postgres import PostgresServer
from tests.memory.conftest import HashEmbedder, say, scope_for
from tests.memory.test_forget import (
    FACT_MARK,
    MESSAGE_CJK,
    MESSAGE_MARK,
    SUMMARY_MARK,
    needles,
    tell,
)


def _files(db: Database) -> tuple[list[Path], list[Path]]:
    """The database's own files (base/<oid>) and the cluster's WAL segments."""

    def where(conn: Any) -> tuple[str, int]:
        conn.execute(text("CHECKPOINT"))  # what is in shared buffers reaches the files
        root = conn.execute(text("SHOW data_directory")).scalar_one()
        oid = conn.execute(
            text("SELECT oid FROM pg_database WHERE datname = current_database()")
        ).scalar_one()
        return str(root), int(oid)

    with db.engine.connect() as conn:
        root, oid = where(conn)
    base = [p for p in (Path(root) / "base" / str(oid)).iterdir() if p.is_file()]
    wal = [p for p in (Path(root) / "pg_wal").iterdir() if p.is_file()]
    return base, wal


def _holding(files: list[Path], *markers: str) -> list[str]:
    found = []
    for path in files:
        data = path.read_bytes().lower()
        for marker in markers:
            for needle in needles(marker):
                if needle.lower() in data:
                    found.append(f"{marker} in {path.name} as {needle!r}")
    return found


@pytest.fixture
async def told(postgres_url: str) -> AsyncIterator[Any]:
    db = Database.open(postgres_url)
    embedder = HashEmbedder()
    memory = Memory(db, embedder=embedder, embed_delay_s=0)
    story = await tell(db, memory, None)
    base, _ = _files(db)
    assert _holding(base, MESSAGE_MARK, FACT_MARK, SUMMARY_MARK)  # stored before
    yield db, memory, story
    await memory.aclose()
    await db.aclose()


@pytest.mark.parametrize(
    ("target", "gone", "kept"),
    [
        ("m2", [MESSAGE_MARK, MESSAGE_CJK], [FACT_MARK, SUMMARY_MARK]),
        ("dog_fact", [FACT_MARK], [MESSAGE_MARK, SUMMARY_MARK]),
        ("cooking_summary", [SUMMARY_MARK], [MESSAGE_MARK, FACT_MARK]),
        ("all", [MESSAGE_MARK, MESSAGE_CJK, FACT_MARK, SUMMARY_MARK], []),
    ],
)
async def test_no_byte_of_the_forgotten_text_is_left_in_the_servers_files(
    told: Any, target: str, gone: list[str], kept: list[str]
) -> None:
    db, memory, story = told
    ann = story.ids
    kind = {"fact": "f", "summary": "s"}.get(target.rsplit("_", 1)[-1], "m")
    ref = "all" if target == "all" else f"{kind}{ann[target]}"
    uid = await memory.find_user("t", "ann")
    with capture_logs() as logs:
        counts = await memory.forget(uid, ref)
    base, wal = _files(db)
    assert _holding(base, *gone) == []
    assert _holding(wal, *gone) == []
    for marker in [*kept, "gardening"]:  # Bob's message, and what was not asked
        assert _holding(base, marker), f"{marker} was deleted too"
    scrubbed = [e for e in logs if e["event"] == "memory.forget_scrubbed"]
    assert scrubbed and "wal" in scrubbed[0]
    assert [e for e in logs if e["event"] == "memory.forget_wal_left"] == []
    if target == "m2":
        assert counts["messages"] == 2 and counts["facts"] == 2 and counts["summaries"] == 1
        assert counts["followups"] == 1 and counts["reactions"] == 1
        assert counts["inbox_payloads"] == 2 and counts["reembedded"] == 1
        scope, *_ = await say(Ledger(db), scope_for("ann"), "anything else?")
        assert await memory.search(scope, MESSAGE_MARK) == []
        assert [h.id for h in await memory.search(scope, "cook tonight")][:1] == [ann["m3"]]


async def test_a_plain_delete_and_vacuum_leave_the_text_which_is_why_forget_rewrites(
    postgres_url: str,
) -> None:
    db = Database.open(postgres_url)
    try:
        ledger = Ledger(db)
        await say(ledger, scope_for("ann"), f"plain {MESSAGE_MARK} text")
        await say(ledger, scope_for("ann"), "another line after it")
        await db.run(
            lambda c: c.execute(text("DELETE FROM messages WHERE text LIKE :p"), {"p": "plain%"})
        )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM messages"))
        base, _ = _files(db)
        # The GIN word index keeps the lexeme (and the heap page may keep the tuple).
        assert _holding(base, MESSAGE_MARK)
    finally:
        await db.aclose()


async def test_a_server_that_recycles_wal_segments_is_reported(
    told: Any, postgres_server: PostgresServer
) -> None:
    """A recycled segment is renamed for reuse with the old bytes in it, so a forget
    on such a server says the WAL may keep the text, and what to set."""
    db, memory, story = told
    uid = await memory.find_user("t", "ann")
    server = postgres_server
    server._admin("ALTER SYSTEM SET wal_recycle = on")
    server._admin("SELECT pg_reload_conf()")
    try:
        await _until_wal_recycle(db, "on")
        with capture_logs() as logs:
            await memory.forget(uid, f"m{story.ids['m2']}")
        left = [e for e in logs if e["event"] == "memory.forget_wal_left"]
        assert left and "wal_recycle = off" in left[0]["reason"]
        assert left[0]["log_level"] == "warning"
    finally:
        server._admin("ALTER SYSTEM SET wal_recycle = off")
        server._admin("SELECT pg_reload_conf()")
        await _until_wal_recycle(db, "off")


async def _until_wal_recycle(db: Database, value: str) -> None:
    """The reload reaches new connections once the postmaster has read the file."""
    import asyncio

    for _ in range(100):
        with db.engine.connect() as conn:
            if conn.execute(text("SHOW wal_recycle")).scalar_one() == value:
                return
        db.engine.dispose()  # a fresh backend reads the reloaded file
        await asyncio.sleep(0.05)
    raise AssertionError(f"wal_recycle never became {value!r}")
