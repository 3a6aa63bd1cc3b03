"""`bot memory import` and `--queries` files against hostile input: every bad line is
named as file:line in one clear error (exit 2) and nothing is imported; what is
imported can be searched, shown and forgotten, whoever spoke first."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.memory.batch import read_queries
from bot.memory.importer import ImportLine, check_file
from bot.memory.lines import MAX_LINE_BYTES, InputFileError, read_lines

GOOD = {
    "platform": "console",
    "space": None,
    "channel": "dm-ann",
    "user": "ann",
    "display_name": "Ann",
    "persona": "tess",
    "role": "user",
    "text": "My sister Mia lives in Lisbon",
    "timestamp": "2026-05-01T10:00:00Z",
}


def line(**kw: object) -> bytes:
    return json.dumps({**GOOD, **kw}, ensure_ascii=False).encode()


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOT_MEMORY__EMBEDDING_MODEL", "none")
    monkeypatch.setattr("bot.logs.configure_logging", lambda **kw: None)
    monkeypatch.chdir(tmp_path)


def bot(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def stored(db: Path) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT user_id, direction, text FROM messages ORDER BY id").fetchall()


HOSTILE: list[tuple[str, bytes, str]] = [
    ("latin-1", line() + b"\n" + line(text="caf\xe9").replace(b"caf\xc3\xa9", b"caf\xe9"),
     ":2: not UTF-8: byte 0xe9 at column"),
    ("utf-16", "\ufeff".encode("utf-16-le") + line().decode().encode("utf-16-le"),
     ":1: the file is UTF-16"),
    ("nul byte", line() + b"\n" + line()[:10] + b"\x00" + line()[10:], ":2: NUL byte at column 11"),
    ("huge line", line() + b"\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n" + line(),
     ":2: line longer than 1,048,576 bytes"),
    ("whitespace text", line(text=" \t\u3000 "), ":1: text: is empty or only whitespace"),
    ("control-only text", line(text="\u0000\u0007"), ":1: text: is empty or only whitespace"),
    ("malformed json", line() + b"\n{\"platform\": ", ":2: (line): Invalid JSON"),
    ("not an object", b"[1, 2]", ":1: (line): Input should be an object"),
    ("missing field", b'{"platform": "console"}', ":1: channel: Field required"),
    ("unknown field", line(extra=1), ":1: extra: Extra inputs are not permitted"),
    ("bad role", line(role="system"), ":1: role: String should match pattern"),
    ("padded user", line(user=" ann"), ":1: user: must not start or end with whitespace"),
    ("surrogate user", line(user="ann").replace(b'"ann"', b'"\\udcff"'),
     ":1: (line): Invalid JSON: lone leading surrogate"),
    ("control in user", line(user="a\u0007b"), ":1: user: must not contain control characters"),
    ("empty channel", line(channel=""), ":1: channel: must not be empty"),
    ("bad persona", line(persona="../etc"), ":1: persona: String should match pattern"),
    ("bad time", line(timestamp="yesterday"), ":1: timestamp: Input should be a valid datetime"),
    ("huge text", line(text="x" * 100_001), ":1: text: String should have at most 100000"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "content", "expected"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_bad_line_is_one_clear_error_and_nothing_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, content: bytes, expected: str
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(content)
    db = tmp_path / "m.db"
    code, out, err = bot(capsys, "memory", "import", str(data), "--db", str(db))
    assert code == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert f"{data}{expected}" in last, err
    assert "Traceback" not in err
    assert stored(db) == []


def test_every_bad_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join([line(), b"nope", line(), line(role="x"), b"\xff"]))
    code, _, err = bot(capsys, "memory", "import", str(data), "--db", str(tmp_path / "m.db"))
    assert code == 2
    lines = err.strip().splitlines()
    assert any(f"{data}:4: role" in x for x in lines) and any(
        f"{data}:5: not UTF-8" in x for x in lines
    )
    assert f"{data}:2: (line): Invalid JSON" in lines[-1] and "2 more problem line(s)" in lines[-1]


def test_bom_crlf_blank_lines_and_line_separators_are_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(
        b"\xef\xbb\xbf"
        + line()
        + b"\r\n\r\n   \r\n"
        + line(text="one\u2028two \u4f60\u597d")
        + b"\r\n"
    )
    db = tmp_path / "m.db"
    code, out, err = bot(capsys, "memory", "import", str(data), "--db", str(db))
    assert code == 0, err
    assert "imported 2 message(s)" in out
    assert [r[2] for r in stored(db)] == [GOOD["text"], "one\u2028two 你好"]


def test_an_assistant_line_first_belongs_to_the_person(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(
        b"\n".join(
            [
                line(role="assistant", text="Hi Ann, I am Tess, a keeper of lighthouses"),
                line(text="Hello Tess!", timestamp="2026-05-01T10:01:00Z"),
            ]
        )
    )
    db = tmp_path / "m.db"
    assert bot(capsys, "memory", "import", str(data), "--db", str(db))[0] == 0
    rows = stored(db)
    assert [(r[0], r[1]) for r in rows] == [(1, "out"), (1, "in")]  # both Ann's
    code, out, _ = bot(
        capsys, "memory", "search", "--user", "ann", "--persona", "tess",
        "--query", "lighthouses", "--json", "--db", str(db),
    )  # fmt: skip
    assert code == 0
    hits = json.loads(out)
    assert [h["text"] for h in hits] == ["Hi Ann, I am Tess, a keeper of lighthouses"]
    code, out, _ = bot(
        capsys, "memory", "forget", "--user", "ann", "--id", hits[0]["id"], "--db", str(db)
    )
    assert code == 0 and "1 messages" in out
    assert [r[2] for r in stored(db)] == ["Hello Tess!"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400))
def test_any_bytes_give_lines_or_a_named_problem(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "any.jsonl"
    data.write_bytes(content)
    try:
        check_file(data)
    except InputFileError as exc:
        assert exc.problems and all(p.startswith(f"{data}:") for p in exc.problems)
        assert "\n" not in str(exc)
    try:
        for item in read_lines(data):
            assert item.problem is not None or "\n" not in item.text
    except InputFileError as exc:
        assert "UTF-16" in str(exc)


@given(st.text(max_size=60))
def test_any_text_is_stored_clean_or_refused(value: str) -> None:
    try:
        parsed = ImportLine.model_validate({**GOOD, "text": value})
    except ValueError:
        return
    assert parsed.text.strip()
    parsed.text.encode("utf-8")  # no lone surrogate can reach SQLite


def test_query_files(tmp_path: Path) -> None:
    data = tmp_path / "q.txt"
    data.write_bytes(
        b"\xef\xbb\xbfwhere does my sister live\r\n\n"
        + b'{"query": "exam", "id": 7, "k": 3, "now": "2026-05-02T00:00:00"}\n'
    )
    first, second = read_queries(data)
    assert (first.text, first.line) == ("where does my sister live", 1)
    assert (second.text, second.id, second.k, second.line) == ("exam", 7, 3, 3)
    assert second.now is not None and second.now.tzinfo is not None
    bad = tmp_path / "bad.txt"
    bad.write_bytes(
        b'ok\n{"query": 1}\n{"query": "x", "k": 0}\n{"q": "x"}\n\xfe\n{"query": "x", "now": "soon"}'
    )
    with pytest.raises(InputFileError) as caught:
        read_queries(bad)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [
        f"{bad}:{n}" for n in (2, 3, 4, 5, 6)
    ]


@pytest.mark.parametrize("make", ["missing", "directory", "empty"])
def test_files_that_are_not_there_or_hold_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str
) -> None:
    data = tmp_path / "in.jsonl"
    if make == "directory":
        data.mkdir()
    elif make == "empty":
        data.write_bytes(b"\n  \n")
    db = tmp_path / "m.db"
    code, out, err = bot(capsys, "memory", "import", str(data), "--db", str(db))
    if make == "empty":
        assert code == 0 and "imported 0 message(s)" in out and not db.exists()
        return
    assert code == 2 and f"{data}: cannot read it" in err and len(err.strip().splitlines()) == 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.text(max_size=40).map(str.encode),
            st.builds(
                lambda q, k: json.dumps({"query": q, "k": k}).encode(),
                st.text(max_size=20),
                st.integers(-5, 2000),
            ),
        ),
        max_size=6,
    )
)
def test_any_query_file_gives_queries_or_named_problems(tmp_path: Path, lines: list[bytes]) -> None:
    data = tmp_path / "q.txt"
    data.write_bytes(b"\n".join(lines))
    try:
        found = read_queries(data)
    except InputFileError as exc:
        assert all(p.startswith(f"{data}:") for p in exc.problems)
        return
    for query in found:
        query.text.encode("utf-8")  # nothing a tokenizer or SQLite refuses
        assert query.k is None or 1 <= query.k <= 1000


def test_imported_history_is_never_answered_expired_or_resent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Imported lines are history: a user line with no answer after it, and the
    persona's lines, must not look unfinished to the recovery that runs on start (it
    would answer them late, expire them with an away notice, or send old replies)."""
    import asyncio

    from bot.db import Database
    from bot.memory.ledger import Ledger

    path = tmp_path / "history.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                line(role="assistant", text="Hello Ann, I am Tess"),
                line(text="Hi Tess"),
                line(role="assistant", text="How was Lisbon?"),
                line(text="Lovely, thanks"),  # no answer follows
            ]
        )
        + b"\n"
    )
    db = tmp_path / "bot.db"
    code, _, err = bot(capsys, "memory", "import", str(path), "--db", str(db))
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        statuses = conn.execute("SELECT direction, status FROM messages ORDER BY id").fetchall()
    assert statuses == [
        ("out", "delivered"),
        ("in", "answered"),
        ("out", "delivered"),
        ("in", "answered"),
    ]

    async def unfinished() -> list[object]:
        opened = Database.open(f"sqlite:///{db}")
        try:
            return list(await Ledger(opened).unfinished("console"))
        finally:
            await opened.aclose()

    assert asyncio.run(unfinished()) == []
