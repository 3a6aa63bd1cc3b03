"""A bot process for the kill -9 test: `python -m tests.inbox.crashy WORKDIR`.

WORKDIR holds `events.jsonl` (what the "platform" has for the bot, in order), `ack`
(how many of them the bot confirmed: the platform redelivers everything after it,
as Telegram does after the last confirmed offset) and `sent.jsonl` (what reached
the platform, appended and flushed before a send returns). The process feeds the
events in batches, committing each batch to the inbox BEFORE confirming it, and
exits 0 once everything is handled and delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from bot.app import open_app
from bot.inbox import RawEvent
from bot.llm.mock import MockBackend
from tests.inbox.conftest import settings_for
from tests.inbox.platform import JsonPlatform

BATCH = 25


async def reply(req: Any) -> str:
    await asyncio.sleep(0.003)
    return f"re:{req.messages[-1].content}"


def _ack(workdir: Path) -> int:
    try:
        return int((workdir / "ack").read_text() or 0)
    except FileNotFoundError:
        return 0


def _confirm(workdir: Path, offset: int) -> None:
    tmp = workdir / "ack.tmp"
    tmp.write_text(str(offset))
    os.replace(tmp, workdir / "ack")


async def main(workdir: Path) -> int:
    lines = (workdir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    settings = settings_for(workdir, away=False)
    async with open_app(settings, backend=MockBackend(reply), watch=False) as app:
        platform = JsonPlatform(app.services, log_path=workdir / "sent.jsonl")
        platform.max_message_length = 4000
        platform.deliver_delay_s = 0.002
        async with platform.processing():
            offset = _ack(workdir)
            while offset < len(lines):
                batch = lines[offset : offset + BATCH]
                events = [
                    RawEvent(
                        key=json.loads(line)["id"], payload=line, chat=json.loads(line)["chat"]
                    )
                    for line in batch
                ]
                await platform.accept(events)  # committed ...
                offset += len(batch)
                _confirm(workdir, offset)  # ... and only then confirmed
                await asyncio.sleep(0.01)
            assert app.inbox is not None and platform.worker is not None
            while True:
                counts = await app.inbox.counts("json")
                unfinished = await app.ledger.unfinished("json")
                if not counts.get("pending") and platform.worker.backlog == 0 and not unfinished:
                    break
                await asyncio.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
