"""Verification catches what differs: a changed text, an instant off by a
microsecond, a flipped boolean, a float's last bit, a blob's byte, a row gone, a row
added; `--verify-only` from the command line names the table, the key and the
column, never the values."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bot.cli import main
from bot.db import create_db_engine
from bot.dbcopy import copy_database, verify_databases
from bot.dbcopy.values import encode_row


def _execute(url: str, sql: str) -> None:
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


CHANGES = [
    ("messages", "UPDATE messages SET text = text || ' ' WHERE id = 5", "id=5 differs in text"),
    (
        "messages",
        "UPDATE messages SET created_at = created_at + interval '1 microsecond' WHERE id = 8",
        "id=8 differs in created_at",
    ),
    ("users", "UPDATE users SET is_bot = NOT is_bot WHERE id = 2", "id=2 differs in is_bot"),
    (
        "messages",
        "UPDATE messages SET latency_ms = latency_ms * (1 + 1e-15) WHERE id = 2",
        "id=2 differs in latency_ms",
    ),
    (
        "embeddings",
        "UPDATE embeddings SET vector = overlay(vector placing '\\x00'::bytea from 3) WHERE id = 4",
        "id=4 differs in vector",
    ),
    ("feedback", "DELETE FROM feedback WHERE id = 1", "id=1 missing in the target"),
    (
        "lore_timers",
        "UPDATE lore_timers SET cooldown_until = cooldown_until + 1 "
        "WHERE entry_key = '城堡' AND conversation_id = 2",
        "conversation_id=2, persona_id='p', entry_key='城堡' differs in cooldown_until",
    ),
    (
        "persona_versions",
        "INSERT INTO persona_versions (persona_id, content_hash, path, source, loaded_at) "
        "VALUES ('q', 'b', '/q', 'x', now())",
        "id=2 only in the target",
    ),
]


@pytest.mark.parametrize(("table", "sql", "expected"), CHANGES, ids=[c[2] for c in CHANGES])
def test_a_changed_row_is_caught(
    filled_sqlite: str,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    table: str,
    sql: str,
    expected: str,
) -> None:
    assert copy_database(filled_sqlite, postgres_url).ok
    _execute(postgres_url, sql)
    checks = {c.name: c for c in verify_databases(filled_sqlite, postgres_url)}
    assert [name for name, c in checks.items() if not c.ok] == [table]
    assert checks[table].differences == 1
    assert checks[table].shown == [expected]
    code, out, err = _run(
        capsys, "db", "copy", "--from", filled_sqlite, "--to", postgres_url, "--verify-only"
    )
    assert code == 1
    assert f"{table}: MISMATCH" in out and expected in out
    assert err.strip() == f"verification failed: {table} differ"


def test_verify_only_of_a_good_copy_is_silent_on_stderr_but_one_line(
    filled_sqlite: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_database(filled_sqlite, postgres_url)
    code, out, err = _run(
        capsys, "db", "copy", "--from", filled_sqlite, "--to", postgres_url, "--verify-only"
    )
    assert code == 0, err
    assert "messages: " in out and ", ok" in out and "MISMATCH" not in out
    assert err.strip().startswith("verified: ")


def test_a_changed_source_after_the_copy_is_caught_too(
    filled_sqlite: str, postgres_url: str
) -> None:
    copy_database(filled_sqlite, postgres_url)
    _execute(filled_sqlite, "UPDATE facts SET importance = 0.25 WHERE id = 1")
    bad = [c for c in verify_databases(filled_sqlite, postgres_url) if not c.ok]
    assert [c.shown for c in bad] == [["id=1 differs in importance"]]


def test_the_encoding_tells_types_and_boundaries_apart() -> None:
    rows = [
        [1],
        [1.0],
        [True],
        ["1"],
        [b"1"],
        [None],
        [""],
        ["a", "b"],
        ["ab", ""],
        ["a", "b", None],
    ]
    encoded = {encode_row(r) for r in rows}
    assert len(encoded) == len(rows)
    assert encode_row([0.1 + 0.2]) != encode_row([0.3])
