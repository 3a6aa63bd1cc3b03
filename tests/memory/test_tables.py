"""Migration 0002: the FTS indexes follow every write, and downgrade removes it all."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from bot.db import create_db_engine, upgrade
from bot.db_migrate import alembic_config
from bot.memory.ledger import Ledger
from bot.messages import Actor, Incoming, Scope


async def test_fts_rows_follow_inserts_updates_and_deletes(tmp_path: Path) -> None:
    from bot.db import Database

    db = Database.open(f"sqlite:///{tmp_path}/f.db")
    scope = Scope(platform="t", channel="c", user="u", persona="p")
    stored = await Ledger(db).record_incoming(
        Incoming(scope=scope, actor=Actor(platform="t", id="u"), text="x"), "apples 苹果很好吃"
    )

    def count(conn, table: str, query: str) -> int:  # type: ignore[no-untyped-def]
        sql = f"SELECT count(*) FROM {table} WHERE {table} MATCH ?"
        return int(conn.exec_driver_sql(sql, (query,)).scalar())

    assert await db.run(lambda c: count(c, "messages_fts", '"apple"')) == 1  # porter stems
    assert await db.run(lambda c: count(c, "messages_fts_tri", '"苹果很"')) == 1
    await db.run(
        lambda c: c.exec_driver_sql(
            "UPDATE messages SET text = 'pears' WHERE id = ?", (stored.message_id,)
        )
    )
    assert await db.run(lambda c: count(c, "messages_fts", '"apples"')) == 0
    assert await db.run(lambda c: count(c, "messages_fts", '"pears"')) == 1
    await db.run(
        lambda c: c.exec_driver_sql("DELETE FROM messages WHERE id = ?", (stored.message_id,))
    )
    assert await db.run(lambda c: count(c, "messages_fts", '"pears"')) == 0
    await db.aclose()


def test_downgrade_to_0001_removes_the_memory_tables(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/d.db")
    upgrade(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    names = set(inspect(engine).get_table_names())
    assert not names & {"facts", "summaries", "embeddings", "messages_fts", "facts_fts_tri"}
    upgrade(engine)
    assert {"facts", "summaries", "embeddings", "messages_fts"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()
