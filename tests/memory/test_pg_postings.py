"""The postings tables of PostgreSQL's word search (migration 0021) stay exactly what
the messages and facts say, whatever writes them: the bot's inserts, one statement
of many rows, text edits, soft deletes and their undoing, a kind or a scope changed,
a fact superseded, hard deletes, TRUNCATE. After every step the table is compared
with the postings recomputed from the rows through rows.py's own scope conditions,
so a migration that drifted from what search filters on would fail here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Connection, text

from bot.db import Database
from bot.memory.ledger import Ledger
from bot.memory.rows import FACT_SCOPE, MESSAGE_SCOPE
from tests.memory.conftest import say, scope_for

_IN_A_SCOPE = {
    # rows.py's conditions without the scope's own values: any person, any conversation.
    "message": MESSAGE_SCOPE.replace(
        "m.user_id = :uid AND m.conversation_id = :cid", "m.user_id IS NOT NULL"
    ),
    "fact": FACT_SCOPE.replace(
        "f.user_id = :uid AND f.conversation_id = :cid", "f.user_id IS NOT NULL"
    ),
}
_SOURCE = {"message": ("messages", "m", "message_terms"), "fact": ("facts", "f", "fact_terms")}


def _postings(conn: Connection, kind: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """(what the postings table holds, what the rows say it should hold)."""
    table, a, terms = _SOURCE[kind]
    assert ":uid" not in _IN_A_SCOPE[kind]  # the scope's values were replaced
    held = conn.execute(
        text(f"SELECT user_id, conversation_id, lexeme, item_id, len FROM {terms}")
    ).all()
    wanted = conn.execute(
        text(
            f"SELECT {a}.user_id, {a}.conversation_id, l, {a}.id, length({a}.search_words) "
            f"FROM {table} {a}, unnest(tsvector_to_array({a}.search_words)) AS l "
            f"WHERE {_IN_A_SCOPE[kind]}"
        )
    ).all()
    return {tuple(r) for r in held}, {tuple(r) for r in wanted}


def _in_step(conn: Connection) -> int:
    """Assert both tables are in step; return how many postings they hold."""
    total = 0
    for kind in _SOURCE:
        held, wanted = _postings(conn, kind)
        assert held == wanted, (kind, sorted(held ^ wanted)[:10])
        total += len(held)
    return total


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    db = Database.open(postgres_url)
    yield db
    await db.aclose()


def _fact(conn: Connection, uid: int, cid: int, words: str) -> int:
    return int(
        conn.execute(
            text(
                "INSERT INTO facts (user_id, persona_id, conversation_id, is_direct, text, "
                "source_ids, confidence, importance, created_at, updated_at) VALUES "
                "(:u, 'p', :c, true, :t, :s, 0.9, 0.5, now(), now()) RETURNING id"
            ),
            {"u": uid, "c": cid, "t": words, "s": json.dumps([])},
        ).scalar_one()
    )


async def test_postings_follow_every_kind_of_write(pg: Database) -> None:
    ledger = Ledger(pg)
    ann, a1, _ = await say(ledger, scope_for("ann"), "the zebra plays violin", reply="a zebra!")
    _, a2, _ = await say(ledger, scope_for("ann"), "my cat sleeps on the mat")
    bob, b1, _ = await say(ledger, scope_for("bob"), "zebra crossing near the river")
    assert a1 and a2 and b1

    def steps(conn: Connection) -> list[int]:
        sizes = [_in_step(conn)]
        sizes.append(sizes[0])
        run = [
            # a text edit: the old words out, the new in
            ("UPDATE messages SET text = 'a giraffe plays cello' WHERE id = :a1", {}),
            # soft delete, and its undoing
            ("UPDATE messages SET deleted_at = now() WHERE id = :a2", {}),
            ("UPDATE messages SET deleted_at = NULL WHERE id = :a2", {}),
            # a kind search never returns, and back
            ("UPDATE messages SET kind = 'command' WHERE id = :b1", {}),
            ("UPDATE messages SET kind = 'message' WHERE id = :b1", {}),
            # moved to another person and conversation, and to none
            ("UPDATE messages SET user_id = :bu, conversation_id = :bc WHERE id = :a2", {}),
            ("UPDATE messages SET user_id = NULL WHERE id = :a2", {}),
            # an update that changes nothing searchable fires nothing and breaks nothing
            ("UPDATE messages SET persona_id = persona_id WHERE id = :a1", {}),
        ]
        values = {"a1": a1, "a2": a2, "b1": b1, "bu": bob.user_id, "bc": bob.conversation_id}
        for statement, extra in run:
            conn.execute(text(statement), {**values, **extra})
            sizes.append(_in_step(conn))
        f1 = _fact(conn, ann.user_id, ann.conversation_id, "Ann plays the violin")
        f2 = _fact(conn, ann.user_id, ann.conversation_id, "Ann plays the cello now")
        sizes.append(_in_step(conn))
        conn.execute(text("UPDATE facts SET superseded_by = :n WHERE id = :o"), {"n": f2, "o": f1})
        sizes.append(_in_step(conn))
        conn.execute(text("UPDATE facts SET text = 'Ann teaches cello' WHERE id = :f"), {"f": f2})
        sizes.append(_in_step(conn))
        conn.execute(text("UPDATE facts SET superseded_by = NULL WHERE id = :f"), {"f": f1})
        conn.execute(text("DELETE FROM facts WHERE id = :f"), {"f": f2})
        sizes.append(_in_step(conn))
        conn.execute(text("DELETE FROM messages WHERE reply_to_id IS NOT NULL"))
        conn.execute(text("DELETE FROM messages WHERE id = :a1"), {"a1": a1})
        sizes.append(_in_step(conn))
        return sizes

    sizes = await pg.run(steps, alone=True)
    assert sizes[0] > 10 and len(set(sizes)) > 3  # the steps changed what is held
    assert sizes[-1] < sizes[0]


async def test_many_rows_in_one_statement_and_truncate(pg: Database) -> None:
    ledger = Ledger(pg)
    _, first, _ = await say(ledger, scope_for("ann"), "the first of many")

    def bulk(conn: Connection) -> list[int]:
        # One INSERT of 500 rows (a copy, an import) and one DELETE of them (a forget).
        columns = conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'messages' AND is_generated = 'NEVER' AND column_name NOT IN "
                "('id', 'text', 'platform_message_id')"
            )
        ).scalars()
        names = ", ".join(columns)
        conn.execute(
            text(
                f"INSERT INTO messages ({names}, text, platform_message_id) SELECT {names}, "
                "'row ' || g || ' of words: tiger ' || (g % 7), 'bulk-' || g "
                "FROM messages, generate_series(1, 500) AS g WHERE id = :id"
            ),
            {"id": first},
        )
        sizes = [_in_step(conn)]
        conn.execute(text("DELETE FROM messages WHERE platform_message_id LIKE 'bulk-%'"))
        sizes.append(_in_step(conn))
        conn.execute(text("TRUNCATE messages CASCADE"))
        sizes.append(_in_step(conn))
        return sizes

    many, after_delete, after_truncate = await pg.run(bulk, alone=True)
    assert many > 500 * 4 > after_delete > 0
    assert after_truncate == 0


async def test_a_search_finds_only_what_the_postings_say_is_searchable(pg: Database) -> None:
    """The same through the memory's search: an edited, deleted or moved message is
    found for what it says now, where it is now."""
    from bot.memory.pg_words import lexical_lists

    ledger = Ledger(pg)
    ann, a1, _ = await say(ledger, scope_for("ann"), "my zebra is called Stripes")
    _, a2, _ = await say(ledger, scope_for("ann"), "a zebra at the zoo")

    async def found(word: str) -> list[int]:
        lists = await pg.read(
            lambda conn: lexical_lists(conn, ann, ("message",), word, [], [], 10, {})
        )
        return [i for _, i in lists[0]] if lists else []

    assert set(await found("zebra")) == {a1, a2}
    await pg.run(
        lambda conn: conn.execute(
            text("UPDATE messages SET text = 'my horse is called Stripes' WHERE id = :i"),
            {"i": a1},
        )
    )
    assert await found("zebra") == [a2]
    assert await found("horse") == [a1]
    await pg.run(
        lambda conn: conn.execute(
            text("UPDATE messages SET deleted_at = now() WHERE id = :i"), {"i": a2}
        )
    )
    assert await found("zebra") == []
