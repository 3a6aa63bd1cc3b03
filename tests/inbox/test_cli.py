"""`bot inbox list|replay` as a subprocess, on a database with failed events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot.db import Database
from bot.inbox import Inbox, RawEvent
from tests.test_cli import bot


def prepare(path: Path) -> list[int]:
    async def go() -> list[int]:
        db = Database.open(f"sqlite:///{path}")
        try:
            inbox = Inbox(db)
            await inbox.accept(
                "telegram",
                [
                    RawEvent(key=str(k), payload=json.dumps({"update_id": k}), chat="1")
                    for k in (1, 2, 3)
                ],
            )
            events = await inbox.pending("telegram", limit=10)
            await inbox.done(events[0].id)
            await inbox.fail(events[1].id, "ValueError: a poll without allows_revoting\x1b[31m")
            return [e.id for e in events]
        finally:
            await db.aclose()

    return asyncio.run(go())


def test_list_shows_failed_events_with_their_reason_and_replay_puts_them_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    done, failed, pending = prepare(path)
    listed = bot("inbox", "list", "--status", "failed", "--db", str(path))
    assert listed.returncode == 0, listed.stderr
    assert "allows_revoting" in listed.stdout and "\x1b" not in listed.stdout
    assert len(listed.stdout.strip().splitlines()) == 1
    rows = bot("inbox", "list", "--json", "--db", str(path))
    statuses = {
        json.loads(line)["id"]: json.loads(line)["status"] for line in rows.stdout.splitlines()
    }
    assert statuses == {done: "done", failed: "failed", pending: "pending"}

    replayed = bot("inbox", "replay", "--failed", "--db", str(path))
    assert replayed.returncode == 0 and f"1 event(s) back to pending: {failed}" in replayed.stdout
    again = bot("inbox", "list", "--status", "pending", "--json", "--db", str(path))
    assert sorted(json.loads(line)["id"] for line in again.stdout.splitlines()) == [failed, pending]
    # Ids that cannot be replayed are named, and the exit code says so.
    partly = bot("inbox", "replay", str(done), "999", "--db", str(path))
    assert partly.returncode == 1 and "999" in partly.stderr


def test_mistakes_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    prepare(path)
    for args, code in (
        (["inbox", "replay", "--db", str(path)], 2),
        (["inbox", "list", "--status", "lost", "--db", str(path)], 2),
        (["inbox", "list", "--db", str(tmp_path / "missing.db")], 3),
        (["inbox", "replay", "abc", "--db", str(path)], 2),
    ):
        result = bot(*args)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip()
