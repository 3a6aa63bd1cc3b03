"""`bot moderators add|list|remove` (the dashboard's accounts) and `bot dashboard`
(the dashboard on its own, beside or without `bot run`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection

    from bot.config import Settings

__all__ = ["dashboard_command", "moderators_app"]

moderators_app = typer.Typer(
    no_args_is_help=True, help="The dashboard's accounts: add, list, remove."
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL or SQLite file (default from config)."),
]


def _url(db: str | None) -> str | None:
    if db is None:
        return None
    if "://" in db:
        return db
    if any(c in db for c in "?#"):
        raise UsageError(f"--db {db!r}: a file name with '?' or '#' is not supported")
    return f"sqlite:///{db}"


def _settings(config: Path | None, db: str | None, extra: dict[str, Any] | None = None) -> Settings:
    from bot.config import load_settings, merge_overrides

    return load_settings(config, merge_overrides({"database": {"url": _url(db)}, **(extra or {})}))


def _check_existing(settings: Settings) -> None:
    """Refuse a database file that exists but is not a usable SQLite database (a
    missing one is created by the command that writes)."""
    from bot.db import check_database, sqlite_path

    path = sqlite_path(settings.database.url)
    if path is None or path.exists():
        check_database(settings.database.url)


def _in_database(settings: Settings, work: Callable[[Connection], Any], *, must_exist: bool) -> Any:
    from bot.db import create_db_engine, upgrade

    engine = create_db_engine(
        settings.database.url,
        busy_timeout_ms=settings.database.busy_timeout_ms,
        must_exist=must_exist,
    )
    try:
        if settings.database.migrate_on_start or not must_exist:
            upgrade(engine)
        with engine.begin() as conn:
            return work(conn)
    finally:
        engine.dispose()


def _read_password() -> str:
    line = sys.stdin.readline()
    if not line:
        raise UsageError("--password-stdin: nothing on standard input")
    return line.rstrip("\r\n")


def _shown(who: Any) -> dict[str, Any]:
    return {
        "name": who.name,
        "role": who.role.label,
        "personas": None if who.personas is None else sorted(who.personas),
        "via": who.via,
    }


@moderators_app.command("add")
def moderators_add(
    name: Annotated[str, typer.Argument(help="Account name: letters, digits, '_', '.', '-'.")],
    role: Annotated[str, typer.Option(help="admin, moderator or viewer.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    persona: Annotated[
        list[str] | None,
        typer.Option(
            "--persona", help="A persona this moderator may change (repeat; none: every persona)."
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Add an account, or replace the role, password and personas of an existing one
    (its sessions end). The password comes on stdin, never on the command line."""
    from bot.web.dashboard.store import Role, add_moderator, audit, check_name, find_moderator

    level = Role.parse(role)
    check_name(name)
    if not password_stdin:
        raise UsageError(
            "give the password on standard input with --password-stdin "
            "(a password in the arguments would stay in the shell's history)"
        )
    if persona and level != Role.MODERATOR:
        raise UsageError(f"--persona limits a moderator; the role {level.label} has no such limit")
    settings = _settings(config, db)
    _check_existing(settings)  # a file that is not a database: say so before asking
    password = _read_password()

    def work(conn: Connection) -> Any:
        old = find_moderator(conn, name)
        who = add_moderator(conn, name, level, password, personas=persona or None)
        before = None if old is None else _shown(old)
        audit(conn, "cli", "moderator.add", f"moderator:{name}", before, _shown(who))
        return who

    who = _in_database(settings, work, must_exist=False)
    limit = "every persona" if who.personas is None else ", ".join(sorted(who.personas))
    typer.echo(f"{who.name}: {who.role.label}" + (f" ({limit})" if level == Role.MODERATOR else ""))


@moderators_app.command("list")
def moderators_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Every account: name, role, personas (never a password hash)."""
    from bot.web.dashboard.store import list_moderators

    settings = _settings(config, db)
    accounts = _in_database(settings, list_moderators, must_exist=True)
    for who in accounts:
        shown = _shown(who)
        if as_json:
            typer.echo(json.dumps(shown, ensure_ascii=False))
        else:
            personas = "*" if shown["personas"] is None else ",".join(shown["personas"])
            typer.echo(f"{who.name}\t{who.role.label}\t{personas}\t{who.via}")
    if not accounts and not as_json:
        typer.echo("no accounts: bot moderators add NAME --role admin --password-stdin", err=True)


@moderators_app.command("remove")
def moderators_remove(
    name: Annotated[str, typer.Argument(help="The account to remove.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove an account; its sessions end at once."""
    from bot.web.dashboard.store import audit, find_moderator, remove_moderator

    settings = _settings(config, db)

    def work(conn: Connection) -> bool:
        old = find_moderator(conn, name)
        if old is None or not remove_moderator(conn, name):
            return False
        audit(conn, "cli", "moderator.remove", f"moderator:{name}", _shown(old), None)
        return True

    if not _in_database(settings, work, must_exist=True):
        raise UsageError(f"no account named {name[:80]!r} (bot moderators list)")
    typer.echo(f"removed {name}")


def dashboard_command(
    host: Annotated[str | None, typer.Option(help="Address (default dashboard.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default dashboard.port, 8080).")
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the moderators' dashboard until interrupted (no platform adapters)."""
    from bot.cli import _logging
    from bot.db import check_database

    extra: dict[str, Any] = {"dashboard": {"host": host, "port": port}}
    settings = _settings(config, db, extra)
    # The dashboard shows a bot's database: a mistyped path is refused, never served
    # as a new empty one (`bot db upgrade` or `bot run` creates it).
    check_database(settings.database.url)
    _logging(settings)
    asyncio.run(serve_dashboard(settings))


async def serve_dashboard(settings: Settings) -> None:
    """Open the bot's parts (no adapters) and serve the dashboard until a signal."""
    from bot.app import open_app
    from bot.cli_run import _on_signals, progress
    from bot.web.dashboard.app import start_dashboard
    from bot.web.dashboard.store import list_moderators

    async with open_app(settings) as bot:
        accounts = await bot.db.read(list_moderators)
        server = await start_dashboard(bot, settings)
        try:
            progress(f"dashboard on {server.url}")
            if not accounts:
                progress("no accounts yet: bot moderators add NAME --role admin --password-stdin")
            stop = asyncio.Event()
            _on_signals(stop)
            await stop.wait()
        finally:
            await server.stop()
