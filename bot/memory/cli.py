"""`bot memory`: show, forget, import and search long-term memories from a shell.

Wiring only: every command opens the database, builds the same `SQLiteMemory`
the bot runs with, and calls its public API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.config import Settings, load_settings, merge_overrides
from bot.errors import ConfigError

__all__ = ["ImportLine", "memory_app"]

memory_app = typer.Typer(
    no_args_is_help=True, help="Long-term memory: show, forget, import and search."
)

T = TypeVar("T")

UserOption = Annotated[str, typer.Option("--user", help="The person's platform user id.")]
PlatformOption = Annotated[str, typer.Option(help="The platform of --user.")]
DbOption = Annotated[Path | None, typer.Option(help="SQLite file (default from config).")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
]


def _settings(config: Path | None, db: Path | None) -> Settings:
    url = f"sqlite:///{db}" if db is not None else None
    return load_settings(config, merge_overrides({"database": {"url": url}}))


def _with_memory(
    settings: Settings, work: Callable[[Any, Any], Awaitable[T]], *, create: bool = False
) -> T:
    """Run `work(memory, ledger)` against the configured database (which must exist
    unless `create`: a mistyped --db is an error, not a new empty database)."""
    from bot.app import build_memory
    from bot.db import Database
    from bot.logs import configure_logging
    from bot.memory.ledger import Ledger

    configure_logging(level="WARNING", fmt="console")

    async def main() -> T:
        db = await asyncio.to_thread(
            Database.open,
            settings.database.url,
            migrate=settings.database.migrate_on_start,
            must_exist=not create,
        )
        memory = build_memory(db, settings.memory)
        try:
            return await work(memory, Ledger(db))
        finally:
            await memory.aclose()
            await db.aclose()

    return asyncio.run(main())


async def _user_id(memory: Any, platform: str, user: str) -> int:
    found: int | None = await memory.find_user(platform, user)
    if found is None:
        raise ConfigError(f"--user {user!r}: no such person on platform {platform!r}")
    return found


@memory_app.command("show")
def show(
    user: UserOption,
    platform: PlatformOption = "console",
    persona: Annotated[str | None, typer.Option(help="Only this persona.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List the facts and summaries kept about a person, with their ids."""

    async def work(memory: Any, _ledger: Any) -> list[Any]:
        items: list[Any] = await memory.list_memories(
            await _user_id(memory, platform, user), persona_id=persona
        )
        return items

    items = _with_memory(_settings(config, db), work)
    for item in items:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": item.ref,
                        "kind": item.kind,
                        "persona": item.persona_id,
                        "text": item.text,
                        "at": item.at.isoformat(),
                        "source_ids": list(item.source_ids),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(f"{item.ref}\t{item.at:%Y-%m-%d}\t{item.persona_id}\t{item.text}")
    if not items and not as_json:
        typer.echo("nothing remembered")


@memory_app.command("forget")
def forget(
    user: UserOption,
    memory_id: Annotated[
        str | None, typer.Option("--id", help="The memory to forget (f12, s3, m45).")
    ] = None,
    forget_all: Annotated[
        bool, typer.Option("--all", help="Everything: facts, summaries, messages.")
    ] = False,
    platform: PlatformOption = "console",
    persona: Annotated[str | None, typer.Option(help="With --all: only this persona.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete one memory of a person, or all of them (exit 1 if refused)."""
    from bot.memory.store import ForgetRefused

    if (memory_id is None) == (not forget_all):
        raise ConfigError("give exactly one of --id ID or --all")
    target = "all" if forget_all else str(memory_id)

    async def work(memory: Any, _ledger: Any) -> dict[str, int]:
        uid = await _user_id(memory, platform, user)
        counts: dict[str, int] = await memory.forget(uid, target, persona_id=persona)
        return counts

    try:
        counts = _with_memory(_settings(config, db), work)
    except (ForgetRefused, KeyError, ValueError) as exc:
        typer.echo(f"refused: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(1) from None
    bookkeeping = ("reembedded", "failures_scrubbed")
    deleted = ", ".join(f"{n} {what}" for what, n in counts.items() if what not in bookkeeping)
    typer.echo(
        f"deleted {deleted}; re-embedded {counts.get('reembedded', 0)} later turn(s); "
        f"{counts.get('failures_scrubbed', 0)} failure record(s) lost their details"
    )


class ImportLine(BaseModel):
    """One line of a memory import file: a message as a platform would deliver it."""

    model_config = ConfigDict(extra="forbid")

    platform: str = Field(min_length=1, max_length=32)
    space: str | None = None
    channel: str = Field(min_length=1)
    user: str = Field(min_length=1)
    display_name: str = ""
    persona: str = Field(min_length=1, max_length=64)
    role: str = Field(pattern="^(user|assistant)$")
    text: str = Field(min_length=1)
    timestamp: datetime


@memory_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="JSONL: one message per line.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Store and index messages from a JSONL file (bad lines are reported and skipped;
    exit 1 if there were any)."""
    from bot.memory.ledger import ReplyRecord
    from bot.messages import Actor, Incoming, Scope

    try:
        raw_lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it ({exc.strerror})") from exc
    parsed: list[ImportLine] = []
    problems: list[str] = []
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            parsed.append(ImportLine.model_validate_json(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(line)"
            problems.append(f"{file}:{number}: {where}: {first['msg']}")

    async def work(memory: Any, ledger: Any) -> int:
        last_user: dict[str, tuple[int, int, int]] = {}  # conversation key -> ids
        count = 0
        for line in parsed:
            at = line.timestamp if line.timestamp.tzinfo else line.timestamp.replace(tzinfo=UTC)
            scope = Scope(
                platform=line.platform,
                space=line.space,
                channel=line.channel,
                user=line.user,
                persona=line.persona,
            )
            if line.role == "user":
                actor = Actor(platform=line.platform, id=line.user, display_name=line.display_name)
                incoming = Incoming(scope=scope, actor=actor, text=line.text, received_at=at)
                stored = await ledger.record_incoming(incoming, line.text)
                last_user[scope.conversation_key + line.user] = (
                    stored.conversation_id,
                    stored.user_id,
                    stored.message_id,
                )
                message_id = stored.message_id
            else:
                known = last_user.get(scope.conversation_key + line.user)
                uid = await memory.find_user(line.platform, line.user)
                cid = known[0] if known else await ledger.conversation_id(scope)
                message_id = await ledger.record_reply(
                    ReplyRecord(
                        conversation_id=cid,
                        user_id=uid,
                        reply_to_id=known[2] if known else None,
                        text=line.text,
                        persona_id=line.persona,
                        created_at=at,
                    )
                )
            memory.enqueue([("message", message_id)])
            count += 1
        await memory.flush()
        return count

    count = _with_memory(_settings(config, db), work, create=True) if parsed else 0
    for problem in problems:
        typer.echo(problem, err=True)
    typer.echo(f"imported {count} message(s)" + (f", skipped {len(problems)}" if problems else ""))
    if problems:
        raise typer.Exit(1)


@memory_app.command("search")
def search(
    user: UserOption,
    persona: Annotated[str, typer.Option(help="The persona whose memories to search.")],
    query: Annotated[str, typer.Option(help="What to look for.")],
    channel: Annotated[
        str | None, typer.Option(help="The channel's memories (default: the person's DMs).")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many results.")] = 10,
    platform: PlatformOption = "console",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Search a person's memories the way a turn would recall them."""
    from sqlalchemy import text

    from bot.memory.store import MemoryScope

    async def work(memory: Any, _ledger: Any) -> list[Any]:
        uid = await _user_id(memory, platform, user)
        where = "c.channel = :channel" if channel is not None else "c.is_direct"
        rows = await memory.db.run(
            lambda conn: list(
                conn.execute(
                    text(
                        "SELECT DISTINCT c.id FROM conversations c JOIN messages m "
                        "ON m.conversation_id = c.id WHERE m.user_id = :uid AND "
                        f"c.persona_id = :persona AND c.platform = :platform AND {where}"
                    ),
                    {"uid": uid, "persona": persona, "platform": platform, "channel": channel},
                ).scalars()
            )
        )
        hits: list[Any] = []
        for cid in rows:
            hits += await memory.search(MemoryScope(uid, int(cid)), query, k=k)
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    hits = _with_memory(_settings(config, db), work)
    if as_json:
        out = [
            {
                "id": h.ref,
                "kind": h.kind,
                "score": round(h.score, 6),
                "text": h.text,
                "at": h.at.isoformat(),
                "speaker": h.speaker,
                "source_ids": list(h.source_ids),
            }
            for h in hits
        ]
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for h in hits:
        typer.echo(f"{h.ref}\t{h.score:.4f}\t{h.at:%Y-%m-%d}\t{h.speaker}\t{h.text}")
