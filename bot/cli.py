"""The `bot` command: wiring only; the work happens in the parts it calls.

Exit codes: 0 ok, 1 problems found (e.g. `personas check`), 2 bad configuration
or arguments, 3 storage, backend or every platform unavailable.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.config import Settings, load_settings, merge_overrides
from bot.errors import AdapterError, BackendError, ConfigError, PersonaError, StorageError
from bot.logs import configure_logging

if TYPE_CHECKING:
    from adapters.base import Adapter
    from bot.app import App

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Persona bots that remember: chat, run, check personas, manage the database.",
)
personas_app = typer.Typer(no_args_is_help=True, help="Check and describe persona files.")
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the effective configuration.")
models_app = typer.Typer(no_args_is_help=True, help="Local model helpers.")
app.add_typer(personas_app, name="personas")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(__import__("bot.export.cli", fromlist=["_"]).export_app, name="export")
app.add_typer(__import__("bot.memory.cli", fromlist=["_"]).memory_app, name="memory")
app.add_typer(__import__("bot.scheduler.cli", fromlist=["_"]).schedule_app, name="schedule")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="BOT_CONFIG", help="TOML config file (default ./bot.toml)."
    ),
]


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(config, merge_overrides(overrides or {}))


def _logging(settings: Settings, *, quiet: bool = False) -> None:
    secrets = []
    key = settings.llm.api_key
    if key is not None:
        secrets.append(key.get_secret_value())
    level = (
        "WARNING"
        if quiet and settings.logging.level in ("INFO", "DEBUG")
        else settings.logging.level
    )
    configure_logging(level=level, fmt=settings.logging.format, secrets=secrets)


def _db_url(db: Path | None) -> str | None:
    return f"sqlite:///{db}" if db is not None else None


# -- chat and run ---------------------------------------------------------------------


@app.command()
def chat(
    persona: Annotated[
        str | None, typer.Option(help="Persona id (default: personas.default).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="transformers (local) or openai (a vLLM server).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model hub id or local directory.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file (default from config).")] = None,
    output: Annotated[
        str, typer.Option("--format", help="Scripted output: text (one line a reply) or jsonl.")
    ] = "text",
    config: ConfigOption = None,
) -> None:
    """Chat with a persona in the terminal (scriptable when stdin is a pipe)."""
    if backend not in (None, "transformers", "openai"):
        raise ConfigError(f"--backend = {backend!r}: expected 'transformers' or 'openai'")
    if output not in ("text", "jsonl"):
        raise ConfigError(f"--format = {output!r}: expected 'text' or 'jsonl'")
    settings = _settings(
        config,
        {
            "llm": {"backend": backend, "model": model, "base_url": base_url},
            "database": {"url": _db_url(db)},
        },
    )
    _logging(settings, quiet=True)
    asyncio.run(_chat(settings, persona or settings.personas.default, output))


async def _chat(settings: Settings, persona: str, output: str) -> None:
    from adapters.console import ConsoleAdapter
    from bot.app import open_app

    async with open_app(settings) as bot:
        bot.personas.get(persona)  # unknown persona: fail before reading any input
        console = ConsoleAdapter(
            bot.services,
            persona=persona,
            user_id=settings.console.user_id,
            display_name=settings.console.display_name,
            output_format="jsonl" if output == "jsonl" else "text",
        )
        stop = asyncio.Event()
        _on_signals(stop)
        await console.run(stop)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the bot: every adapter enabled in the config, next to the engine."""
    settings = _settings(config)
    _logging(settings)
    asyncio.run(_run(settings))


async def _run(settings: Settings) -> None:
    import structlog

    from bot.app import open_app

    log = structlog.get_logger("bot.run")
    async with open_app(settings) as bot:
        adapters: list[Adapter] = []
        if settings.console.enabled:
            from adapters.console import ConsoleAdapter

            adapters.append(
                ConsoleAdapter(
                    bot.services,
                    persona=settings.personas.default,
                    user_id=settings.console.user_id,
                    display_name=settings.console.display_name,
                )
            )
        if settings.discord.token is not None:
            from adapters.discord import DiscordAdapter

            adapters.append(
                DiscordAdapter(
                    bot.services, settings.discord, default_persona=settings.personas.default
                )
            )
        if settings.telegram.token is not None:
            from adapters.telegram import TelegramAdapter

            adapters.append(
                TelegramAdapter(
                    bot.services, settings.telegram, default_persona=settings.personas.default
                )
            )
        if not adapters:
            raise ConfigError(
                "no adapter is enabled: set DISCORD_TOKEN or TELEGRAM_TOKEN in the environment, "
                "or console.enabled = true"
            )
        stop = asyncio.Event()
        _on_signals(stop)
        scheduler = await _start_scheduler(bot, settings, adapters)
        tasks: dict[asyncio.Future[Any], Adapter] = {
            asyncio.create_task(a.run(stop), name=f"adapter-{a.platform}"): a for a in adapters
        }
        log.info("bot.started", adapters=[a.platform for a in adapters])
        waiter: asyncio.Future[Any] = asyncio.create_task(stop.wait())
        running: set[asyncio.Future[Any]] = set(tasks)
        while running and not stop.is_set():
            done, running = await asyncio.wait(
                running | {waiter}, return_when=asyncio.FIRST_COMPLETED
            )
            running.discard(waiter)
            for task in done - {waiter}:
                # One adapter failing (a bad token, say) must not take the others down.
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    log.error("adapter.stopped", adapter=tasks[task].platform, error=str(error))
        log.info("bot.stopping")
        stop.set()  # adapters stop taking messages and finish the replies in hand
        if running:
            _, stuck = await asyncio.wait(running, timeout=settings.engine.reply_timeout_s)
            for task in stuck:
                task.cancel()
        waiter.cancel()
        if scheduler is not None:
            await scheduler.stop()
        if all(not t.cancelled() and t.exception() is not None for t in tasks):
            raise AdapterError("every adapter stopped with an error; see the log above")


async def _start_scheduler(bot: App, settings: Settings, adapters: list[Adapter]) -> Any:
    """Proactive messages and upkeep, sending through the running adapters."""
    if not settings.scheduler.enabled:
        return None
    from bot.scheduler.followups import FollowUpExtractor
    from bot.scheduler.service import Scheduler

    scheduler = Scheduler(
        db=bot.db,
        engine=bot.engine,
        personas=bot.personas,
        settings=settings.scheduler,
        default_zone=settings.engine.timezone,
        senders={adapter.platform: adapter for adapter in adapters},
        upkeep=bot.upkeep,
    )
    bot.engine.observers.append(
        FollowUpExtractor(
            db=bot.db,
            personas=bot.personas,
            backends=bot.backends,
            default_zone=settings.engine.timezone,
            horizon_days=settings.scheduler.followup_horizon_days,
            on_created=scheduler.schedule_followup,
        )
    )
    await scheduler.start()
    return scheduler


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# -- personas -------------------------------------------------------------------------


@personas_app.command("check")
def personas_check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or directories.")] = None,
    config: ConfigOption = None,
) -> None:
    """Validate persona files; print every problem as file:line:column: field: message."""
    from bot.personas import check_paths, find_persona_files

    targets = paths or _settings(config).personas.dirs
    problems = check_paths(targets)
    count = len(find_persona_files(targets)[0])
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} problem(s) in persona files", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {count} persona file(s) valid")


@personas_app.command("schema")
def personas_schema(
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write the JSON Schema of persona files, for editors (yaml-language-server)."""
    from bot.personas import persona_json_schema

    text = json.dumps(persona_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


@personas_app.command("list")
def personas_list(config: ConfigOption = None) -> None:
    """List the personas that load cleanly, with their content hashes."""
    from bot.personas import PersonaRegistry

    settings = _settings(config)
    registry = PersonaRegistry(settings.personas.dirs)
    problems = asyncio.run(registry.load_all())
    for pid in sorted(registry.ids()):
        loaded = registry.get(pid)
        typer.echo(f"{pid}\t{loaded.persona.name}\t{loaded.content_hash[:12]}\t{loaded.path}")
    for problem in problems:
        typer.echo(str(problem), err=True)


# -- database -------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    db: Annotated[Path | None, typer.Option(help="SQLite file (default from config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Apply database migrations up to the newest."""
    from bot.db import create_db_engine, current_revision, upgrade

    settings = _settings(config, {"database": {"url": _db_url(db)}})
    engine = create_db_engine(
        settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms
    )
    try:
        upgrade(engine)
        typer.echo(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(
    db: Annotated[Path | None, typer.Option(help="SQLite file (default from config).")] = None,
    config: ConfigOption = None,
) -> None:
    """Show the database's migration revision and the newest one this code ships."""
    from bot.db import create_db_engine, current_revision, head_revision

    settings = _settings(config, {"database": {"url": _db_url(db)}})
    engine = create_db_engine(settings.database.url)
    try:
        typer.echo(f"current: {current_revision(engine) or '(empty)'}  head: {head_revision()}")
    finally:
        engine.dispose()


# -- config and models ----------------------------------------------------------------


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    typer.echo(json.dumps(_settings(config).shown(), indent=2, ensure_ascii=False, default=str))


@models_app.command("tiny")
def models_tiny(
    directory: Annotated[Path, typer.Argument(help="Where to write the model.")],
) -> None:
    """Build a tiny random-weight model (for tests and offline demos; it babbles)."""
    from bot.llm.tiny import build_tiny_model

    path = build_tiny_model(directory)
    typer.echo(f"tiny model in {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `bot` console script; maps our errors to exit codes."""
    try:
        # Outside standalone mode click returns the code of a `typer.Exit` instead of exiting.
        code = app(args=argv, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (StorageError, BackendError, AdapterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    except PersonaError as exc:
        print(f"persona error: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
