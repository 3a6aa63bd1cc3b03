"""`bot db copy` against mistakes and odd data: each is one line on stderr and the
documented exit code, and nothing is written where it should not be."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.cli import main
from bot.db import create_db_engine, head_revision, upgrade
from bot.dbcopy import copy_database
from bot.dbcopy.schema import Kind
from bot.dbcopy.values import BadValue, converter
from bot.errors import StorageError


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["db", "copy", *argv])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--from", "not a url", "--to", f"sqlite:///{tmp_path}/t.db")
    assert code == 2
    assert "--from 'not a url': not a database URL" in _one_line(err)
    code, _, err = _run(capsys, "--from", f"sqlite:///{tmp_path}/s.db", "--to", "mysql://h/db")
    assert code == 2
    assert "mysql is not supported" in _one_line(err)
    code, _, err = _run(capsys, "--from", "sqlite://", "--to", f"sqlite:///{tmp_path}/t.db")
    assert code == 2
    assert "not an in-memory database" in _one_line(err)
    assert not (tmp_path / "t.db").exists()


def test_an_unreachable_server_is_one_line_with_the_password_masked(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str
) -> None:
    target = "postgresql+psycopg://bot:hunter2@127.0.0.1:1/bot"
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", target)
    assert code == 3
    line = _one_line(err)
    assert line.startswith("storage error: --to postgresql+psycopg://bot:")
    assert "@127.0.0.1:1/bot: cannot connect" in line
    assert "cannot connect" in line and "hunter2" not in err


def test_a_missing_source_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(
        capsys, "--from", f"sqlite:///{tmp_path}/gone.db", "--to", f"sqlite:///{tmp_path}/t.db"
    )
    assert code == 3
    assert "--from: database file" in _one_line(err) and "does not exist" in err
    assert not (tmp_path / "gone.db").exists() and not (tmp_path / "t.db").exists()


def test_a_source_at_an_older_migration_says_what_to_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres_url: str
) -> None:
    old = tmp_path / "old.db"
    engine = create_db_engine(f"sqlite:///{old}")
    upgrade(engine, "0005")
    engine.dispose()
    code, _, err = _run(capsys, "--from", f"sqlite:///{old}", "--to", postgres_url)
    assert code == 3
    line = _one_line(err)
    assert f"is at migration 0005, this bot's newest is {head_revision()}" in line
    assert f"`bot db upgrade --db {old}`" in line
    # Nothing was done to the target.
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()


def test_not_a_bot_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    code, _, err = _run(
        capsys, "--from", f"sqlite:///{other}", "--to", f"sqlite:///{tmp_path}/t.db"
    )
    assert code == 3
    assert "not a bot database" in _one_line(err)
    (tmp_path / "junk.db").write_bytes(b"\x00garbage" * 100)
    code, _, err = _run(
        capsys, "--from", f"sqlite:///{tmp_path}/junk.db", "--to", f"sqlite:///{tmp_path}/t.db"
    )
    assert code == 3
    assert "is not a SQLite database" in _one_line(err)


def test_the_same_database_twice(capsys: pytest.CaptureFixture[str], filled_sqlite: str) -> None:
    path = filled_sqlite.removeprefix("sqlite:///")
    code, _, err = _run(
        capsys, "--from", filled_sqlite, "--to", f"sqlite:///{path}/../{Path(path).name}"
    )
    assert code == 2
    assert "same database" in _one_line(err)


def test_a_target_with_rows_is_refused(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    assert copy_database(filled_sqlite, postgres_url).ok
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url)
    assert code == 3
    line = _one_line(err)
    assert "is not empty" in line and "messages" in line and "--verify-only" in line


def test_a_target_migrated_but_empty_is_fine(filled_sqlite: str, postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    assert copy_database(filled_sqlite, postgres_url).ok


def _poke(url: str, sql: str) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE messages SET text = 'a' || char(0) || 'b' WHERE id = 3",
            "messages row id=3, column text: text with a NUL character (U+0000), which "
            "PostgreSQL cannot store; remove it in the source, or copy with --replace-nul",
        ),
        (
            "UPDATE messages SET created_at = 'yesterday' WHERE id = 4",
            "messages row id=4, column created_at: 'yesterday' is not a date and time",
        ),
        (
            "UPDATE messages SET prompt_tokens = 'many' WHERE id = 2",
            "messages row id=2, column prompt_tokens: 'many' is not an integer",
        ),
        (
            "UPDATE users SET is_bot = 7 WHERE id = 1",
            "users row id=1, column is_bot: 7 is not a boolean (0 or 1)",
        ),
    ],
)
def test_a_value_the_target_cannot_hold_is_named(
    capsys: pytest.CaptureFixture[str],
    filled_sqlite: str,
    postgres_url: str,
    sql: str,
    expected: str,
) -> None:
    _poke(filled_sqlite, sql)
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url)
    assert code == 3
    # Progress lines, then the one error line.
    errors = [line for line in err.splitlines() if line.startswith("storage error")]
    assert len(errors) == 1 and err.strip().endswith(errors[0])
    assert expected in errors[0]


def test_canonical_values() -> None:
    when = converter(Kind.DATETIME)
    expected = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert when("2026-05-01 10:00:00.000000") == expected
    assert when("2026-05-01 10:00:00") == expected
    assert when("2026-05-01T12:00:00+02:00") == expected
    assert when("2026-05-01 10:00:00.5") == expected.replace(microsecond=500000)
    assert when(datetime(2026, 5, 1, 10, 0)) == expected
    assert converter(Kind.BOOL)(1) is True and converter(Kind.BOOL)(0) is False
    assert converter(Kind.INT)(3.0) == 3
    assert converter(Kind.FLOAT)(3) == 3.0
    assert converter(Kind.BYTES)(memoryview(b"ab")) == b"ab"
    for kind, value in [
        (Kind.DATETIME, 1700000000),
        (Kind.BOOL, 2),
        (Kind.INT, 2.5),
        (Kind.FLOAT, "x"),
        (Kind.BYTES, "x"),
        (Kind.TEXT, b"\xff"),
    ]:
        with pytest.raises(BadValue):
            converter(kind)(value)
    with pytest.raises(BadValue):
        converter(Kind.TEXT, to_postgres=True)("a\x00b")
    assert converter(Kind.TEXT)("a\x00b") == "a\x00b"  # SQLite holds it


def test_a_storage_error_is_raised_not_printed(filled_sqlite: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is not empty"):
        copy_database(filled_sqlite, f"sqlite:///{tmp_path}/t.db")
        copy_database(filled_sqlite, f"sqlite:///{tmp_path}/t.db")


def test_a_target_database_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    missing = sa.make_url(postgres_url).set(database="no_such_db").render_as_string(False)
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", missing)
    assert code == 3
    line = _one_line(err)
    assert 'database "no_such_db" does not exist' in line and "create it first" in line


def test_a_bad_value_fixed_in_the_source_then_the_rerun_continues(
    filled_sqlite: str, postgres_url: str
) -> None:
    _poke(filled_sqlite, "UPDATE messages SET text = 'a' || char(0) || 'b' WHERE id = 40")
    with pytest.raises(StorageError, match="messages row id=40, column text"):
        copy_database(filled_sqlite, postgres_url, batch_size=10)
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        # The batches before the bad row are in, and recorded.
        assert conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one() == 30
        assert (
            conn.execute(
                sa.text("SELECT rows FROM bot_dbcopy_progress WHERE name = 'messages'")
            ).scalar_one()
            == 30
        )
    engine.dispose()
    _poke(filled_sqlite, "UPDATE messages SET text = 'ab' WHERE id = 40")
    result = copy_database(filled_sqlite, postgres_url, batch_size=10)
    assert result.resumed and result.ok


def test_a_record_from_another_bot_version_is_refused(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    _poke(filled_sqlite, "UPDATE users SET is_bot = 5 WHERE id = 3")
    with pytest.raises(StorageError):
        copy_database(filled_sqlite, postgres_url)
    engine = create_db_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE bot_dbcopy_progress SET revision = '0009' WHERE name = '*'"))
    engine.dispose()
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url)
    assert code == 3
    assert "unfinished copy made at migration 0009" in _one_line(err)


def test_two_copies_into_one_postgresql_at_once(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    engine = create_db_engine(postgres_url)
    with engine.connect() as other:  # what a first copy holds while it runs
        assert other.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext('bot db copy'))")
        ).scalar()
        code, _, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url)
        assert code == 3
        assert "another `bot db copy` is writing to this database" in _one_line(err)
    engine.dispose()
    assert copy_database(filled_sqlite, postgres_url).ok  # released with its session


def test_replace_nul_stores_it_as_the_bot_stores_new_text(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    _poke(filled_sqlite, "UPDATE messages SET text = 'a' || char(0) || 'b' WHERE id = 3")
    code, out, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url, "--replace-nul")
    assert code == 0, err
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        text = conn.execute(sa.text("SELECT text FROM messages WHERE id = 3")).scalar_one()
    engine.dispose()
    assert text == "a\ufffdb"
    # Compared as copied: equal with the flag, the one row named without it.
    code, _, _ = _run(
        capsys, "--from", filled_sqlite, "--to", postgres_url, "--verify-only", "--replace-nul"
    )
    assert code == 0
    code, out, _ = _run(capsys, "--from", filled_sqlite, "--to", postgres_url, "--verify-only")
    assert code == 1 and "id=3 differs in text" in out


def test_two_copies_into_one_sqlite_file_at_once(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, tmp_path: Path
) -> None:
    import fcntl

    target = tmp_path / "t.db"
    with (tmp_path / "t.db.dbcopy-lock").open("ab") as held:  # what a running copy holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = _run(capsys, "--from", filled_sqlite, "--to", f"sqlite:///{target}")
        assert code == 3
        assert "another `bot db copy` is writing to this database" in _one_line(err)
    assert copy_database(filled_sqlite, f"sqlite:///{target}").ok


def test_a_target_that_is_a_directory_or_junk(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, tmp_path: Path
) -> None:
    (tmp_path / "dir.db").mkdir()
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", f"sqlite:///{tmp_path}/dir.db")
    assert code == 3
    assert _one_line(err).startswith("storage error: --to: database ") and "directory" in err
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 64)
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", f"sqlite:///{tmp_path}/junk.db")
    assert code == 3
    assert "is not a SQLite database" in _one_line(err)
    assert (tmp_path / "junk.db").read_bytes() == b"not sqlite at all" * 64


def test_a_dangling_reference_in_the_source_is_named(
    capsys: pytest.CaptureFixture[str], filled_sqlite: str, postgres_url: str
) -> None:
    # Written while SQLite's foreign keys were off (they are per connection).
    _poke(filled_sqlite, "UPDATE feedback SET message_id = 999999 WHERE id = 2")
    code, _, err = _run(capsys, "--from", filled_sqlite, "--to", postgres_url)
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("storage error")]
    assert len(errors) == 1
    assert "a row of feedback refers to a row the source does not have" in errors[0]
    assert "fix or remove it in the source" in errors[0]
    assert "Key (message_id)=(999999) is not present" in errors[0]
