"""`bot memory`: show, forget, import and search long-term memories from a shell.

Wiring only: every command opens the database, builds the same `SQLiteMemory`
the bot runs with, and calls its public API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bot.config import Settings, load_settings, merge_overrides
from bot.errors import UsageError

__all__ = ["memory_app"]

memory_app = typer.Typer(
    no_args_is_help=True, help="Long-term memory: show, forget, import and search."
)

T = TypeVar("T")


def _name(value: str | None) -> str | None:
    """An id or name from the command line, as it can be stored: decodable, no control
    characters, not blank (a mistyped or garbled argument is a usage error)."""
    if value is None:
        return None
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise typer.BadParameter("is not valid UTF-8 (the shell passed undecodable bytes)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise typer.BadParameter("contains control characters")
    if not value.strip():
        raise typer.BadParameter("is empty")
    return value


UserOption = Annotated[
    str, typer.Option("--user", help="The person's platform user id.", callback=_name)
]
PlatformOption = Annotated[str, typer.Option(help="The platform of --user.", callback=_name)]
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
        raise UsageError(f"--user {user!r}: no such person on platform {platform!r}")
    return found


@memory_app.command("show")
def show(
    user: UserOption,
    platform: PlatformOption = "console",
    persona: Annotated[str | None, typer.Option(help="Only this persona.", callback=_name)] = None,
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
    persona: Annotated[
        str | None, typer.Option(help="With --all: only this persona.", callback=_name)
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete one memory of a person, or all of them (exit 1 if refused)."""
    from bot.memory.store import ForgetRefused

    if (memory_id is None) == (not forget_all):
        raise UsageError("give exactly one of --id ID or --all")
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
    bookkeeping = ("reembedded", "failures_scrubbed", "inbox_payloads")
    deleted = ", ".join(f"{n} {what}" for what, n in counts.items() if what not in bookkeeping)
    typer.echo(
        f"deleted {deleted}; re-embedded {counts.get('reembedded', 0)} later turn(s); "
        f"cleared the details of {counts.get('failures_scrubbed', 0)} failure record(s) "
        f"and {counts.get('inbox_payloads', 0)} inbox payload(s)"
    )


@memory_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="JSONL: one message per line.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Store and index messages from a JSONL file: all of them, or none when any line
    has a problem (each is named as file:line; exit 2)."""
    from bot.memory import importer
    from bot.memory.lines import InputFileError

    try:
        total = importer.check_file(file)
    except InputFileError as exc:
        for problem in exc.problems[1:]:  # the error itself names the first
            typer.echo(problem, err=True)
        raise

    async def work(memory: Any, ledger: Any) -> int:
        return await importer.import_file(file, memory, ledger)

    count = _with_memory(_settings(config, db), work, create=True) if total else 0
    typer.echo(f"imported {count} message(s)")


@memory_app.command("search")
def search(
    user: UserOption,
    persona: Annotated[
        str, typer.Option(help="The persona whose memories to search.", callback=_name)
    ],
    query: Annotated[str | None, typer.Option(help="What to look for.")] = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="A file of queries, one per line (text, or JSON with query/id/k/now); "
            "runs them all in one process and prints one JSON line per query with --json."
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="The channel's memories (default: the person's DMs).", callback=_name),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            help="The server or group of --channel (needed when "
            "several have a channel of that name).",
            callback=_name,
        ),
    ] = None,
    thread: Annotated[
        str | None, typer.Option(help="A thread inside --channel.", callback=_name)
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(help="The clock for recency and 'last week' (ISO 8601; default: now)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many results.")] = 10,
    platform: PlatformOption = "console",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Search a person's memories the way a turn would recall them."""
    from bot.memory.batch import Query, find_places, hits_json, parse_time, read_queries
    from bot.memory.store import MemoryScope
    from bot.text import clean_text

    if (query is None) == (queries is None):
        raise typer.BadParameter("give exactly one of --query TEXT or --queries FILE")
    if (space is not None or thread is not None) and channel is None:
        raise typer.BadParameter(
            "--space and --thread name where --channel is", param_hint="--space"
        )
    try:
        clock = parse_time(now) if now is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--now") from None
    batch = read_queries(queries) if queries is not None else [Query(clean_text(query or ""), 0)]

    async def work(memory: Any, _ledger: Any) -> list[list[Any]]:
        uid = await _user_id(memory, platform, user)
        places = await memory.db.read(
            lambda conn: find_places(
                conn, user_id=uid, persona=persona, platform=platform,
                channel=channel, space=space, thread=thread,
            )
        )  # fmt: skip
        spaces = sorted({p.space or "(none)" for p in places})
        if channel is not None and space is None and len(spaces) > 1:
            raise typer.BadParameter(
                f"{channel!r} is a channel in {len(spaces)} servers ({', '.join(spaces)}): "
                "pick one with --space",
                param_hint="--channel",
            )
        results = []
        for item in batch:
            hits: list[Any] = []
            for place in places:
                hits += await memory.search(
                    MemoryScope(uid, place.conversation_id),
                    item.text,
                    k=item.k or k,
                    now=item.now or clock,
                )
            hits.sort(key=lambda h: (-h.score, -h.id))
            results.append(hits[: item.k or k])
        return results

    results = _with_memory(_settings(config, db), work)
    if queries is None:
        hits = results[0]
        if as_json:
            typer.echo(json.dumps(hits_json(hits), ensure_ascii=False, indent=2))
            return
        for h in hits:
            typer.echo(f"{h.ref}\t{h.score:.4f}\t{h.at:%Y-%m-%d}\t{h.speaker}\t{h.text}")
        return
    for item, hits in zip(batch, results, strict=True):
        if as_json:
            line = {"line": item.line, "id": item.id, "query": item.text, "hits": hits_json(hits)}
            typer.echo(json.dumps(line, ensure_ascii=False))
            continue
        typer.echo(f"# {item.line}: {item.text}")
        for h in hits:
            typer.echo(f"{h.ref}\t{h.score:.4f}\t{h.at:%Y-%m-%d}\t{h.speaker}\t{h.text}")
