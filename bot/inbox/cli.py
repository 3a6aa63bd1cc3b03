"""`bot inbox list` and `bot inbox replay`: look at stored platform events, and put
failed ones back to be handled again (after the fix for what failed them).

Both open an existing database only. `replay` changes only the events' status: the
running bot's worker (or the next start's) handles them, in each chat's order.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.config import merge_overrides
from bot.errors import UsageError
from bot.inbox.store import InboxEvent
from bot.models import InboxStatus

__all__ = ["inbox_app"]

inbox_app = typer.Typer(
    no_args_is_help=True, help="Stored platform events: list them, replay failed ones."
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
]
DbOption = Annotated[Path | None, typer.Option(help="SQLite file (default from config).")]
PlatformOption = Annotated[str | None, typer.Option(help="Only this platform's events.")]


async def _with_inbox(config: Path | None, db: Path | None, action: Any) -> Any:
    from bot.app import open_app
    from bot.config import load_settings
    from bot.logs import configure_logging

    url = f"sqlite:///{db}" if db is not None else None
    settings = load_settings(
        config, merge_overrides({"personas": {"watch": False}, "database": {"url": url}})
    )
    configure_logging(level="WARNING", fmt=settings.logging.format)  # stdout is the answer
    async with open_app(settings, watch=False, memory=False, must_exist=True) as bot:
        assert bot.inbox is not None
        return await action(bot.inbox)


def _row(event: InboxEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "platform": event.platform,
        "key": event.key,
        "chat": event.chat,
        "status": event.status.value,
        "attempts": event.attempts,
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
        "reason": event.reason,
        "bytes": len(event.payload.encode("utf-8")),
        "truncated": event.truncated,
    }


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@inbox_app.command("list")
def inbox_list(
    status: Annotated[
        str | None, typer.Option(help="pending, done or failed (default: all).")
    ] = None,
    platform: PlatformOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """The newest stored events, newest first, with why each failed one failed."""
    wanted: InboxStatus | None = None
    if status is not None:
        try:
            wanted = InboxStatus(status.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in InboxStatus)
            raise UsageError(f"--status must be one of {choices}, not {status!r}") from None

    async def action(inbox: Any) -> list[InboxEvent]:
        found: list[InboxEvent] = await inbox.list(status=wanted, platform=platform, limit=limit)
        return found

    events = asyncio.run(_with_inbox(config, db, action))
    from bot.cli_errors import printable

    if as_json:
        for event in events:
            typer.echo(json.dumps(_row(event), ensure_ascii=False))
        return
    if not events:
        typer.echo("no events")
        return
    for event in events:
        line = (
            f"{event.id:>8}  {event.platform:<9} {_one_line(event.key, 20):<20} "
            f"{event.status.value:<8} {event.attempts:>2}  {event.received_at:%Y-%m-%d %H:%M:%S}"
        )
        if event.reason:
            line += f"  {_one_line(event.reason, 80)}"
        typer.echo(printable(line))


@inbox_app.command("replay")
def inbox_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Event ids to handle again.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed event.")] = False,
    platform: PlatformOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Put events back to pending: the running bot (or its next start) handles them
    again, in order within each chat. Events whose payload was cut (too large) or
    already cleared (handled long ago) cannot be replayed."""
    wanted = list(ids or [])
    if not wanted and not failed:
        raise UsageError("name event ids to replay, or --failed for every failed event")

    async def action(inbox: Any) -> list[int]:
        replayed: list[int] = await inbox.replay(wanted, failed=failed, platform=platform)
        return replayed

    replayed = asyncio.run(_with_inbox(config, db, action))
    missing = sorted(set(wanted) - set(replayed))
    typer.echo(f"{len(replayed)} event(s) back to pending: {' '.join(map(str, replayed)) or '-'}")
    if missing:
        typer.echo(
            "not replayed (no such event, still pending, or its payload is gone): "
            + " ".join(map(str, missing)),
            err=True,
        )
        raise typer.Exit(1)
