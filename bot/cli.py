"""The `bot` command: wiring only; the work happens in the parts it calls.

Exit codes (bot/cli_errors.py): 0 ok, 1 problems found (e.g. `personas check`),
2 bad arguments or configuration, 3 storage, backend or every platform
unavailable. A mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli_errors import run_app
from bot.cli_run import chat_session, progress, run_bot
from bot.config import Settings, load_settings, merge_overrides
from bot.errors import BackendError, UsageError
from bot.logs import configure_logging

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Persona bots that remember: chat, run, check personas, manage the database.",
)
personas_app = typer.Typer(no_args_is_help=True, help="Check and describe persona files.")
db_app = typer.Typer(no_args_is_help=True, help="Database migrations and copies.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the effective configuration.")
models_app = typer.Typer(no_args_is_help=True, help="Local model helpers.")
app.add_typer(personas_app, name="personas")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(__import__("bot.export.cli", fromlist=["_"]).export_app, name="export")
app.add_typer(__import__("bot.memory.cli", fromlist=["_"]).memory_app, name="memory")
app.add_typer(__import__("bot.scheduler.cli", fromlist=["_"]).schedule_app, name="schedule")
app.add_typer(__import__("bot.inbox.cli", fromlist=["_"]).inbox_app, name="inbox")
_cards = __import__("bot.personas.cards.cli", fromlist=["_"])
personas_app.command("import")(_cards.import_command)
personas_app.command("export")(_cards.export_command)
personas_app.command("preview")(__import__("bot.personas.preview", fromlist=["_"]).preview_command)
app.add_typer(__import__("bot.train.cli", fromlist=["_"]).train_app, name="train")
app.add_typer(__import__("bot.train.adapters_cli", fromlist=["_"]).adapters_app, name="adapters")
_dashboard = __import__("bot.web.dashboard.cli", fromlist=["_"])
app.add_typer(_dashboard.moderators_app, name="moderators")
app.command("dashboard")(_dashboard.dashboard_command)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="BOT_CONFIG", help="TOML config file (default ./bot.toml)."
    ),
]


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(config, merge_overrides(overrides or {}))


def _secrets(settings: Settings) -> list[str]:
    """The secret values the settings hold, for the log redactor."""
    values = [
        settings.llm.api_key,
        settings.discord.token,
        settings.telegram.token,
        settings.telegram.webhook_secret,
        settings.export.hmac_key,
        settings.dashboard.discord_client_secret,
    ]
    return [v.get_secret_value() for v in values if v is not None]


def _logging(settings: Settings, *, quiet: bool = False, file: Path | None = None) -> None:
    level = (
        "WARNING"
        if quiet and settings.logging.level in ("INFO", "DEBUG")
        else settings.logging.level
    )
    configure_logging(
        level=level, fmt=settings.logging.format, secrets=_secrets(settings), file=file
    )


def _db_url(db: Path | None) -> str | None:
    if db is None:
        return None
    if any(c in str(db) for c in "?#"):
        # In a URL these start SQLite options; such a file is reachable via database.url.
        raise UsageError(f"--db {str(db)!r}: a file name with '?' or '#' is not supported")
    return f"sqlite:///{db}"


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
    """Chat with a persona in the terminal (scriptable when stdin is a pipe).

    Exits 3 when the backend cannot be reached, or left a message unanswered."""
    if backend not in (None, "transformers", "openai"):
        raise UsageError(f"--backend {backend!r}: expected 'transformers' or 'openai'")
    if output not in ("text", "jsonl"):
        raise UsageError(f"--format {output!r}: expected 'text' or 'jsonl'")
    settings = _settings(
        config,
        {
            "llm": {"backend": backend, "model": model, "base_url": base_url},
            "database": {"url": _db_url(db)},
        },
    )
    # The chat screen holds only the chat: no download or weight-loading bars in it
    # (the model loads before the first prompt), no library chatter.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_file = settings.console.log_file if sys.stdin.isatty() else None
    try:
        _logging(settings, quiet=True, file=log_file)
    except OSError:
        _logging(settings, quiet=True)  # no log file: stderr it is
    asyncio.run(chat_session(settings, persona or settings.personas.default, output))


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the bot: every adapter enabled in the config, next to the engine."""
    settings = _settings(config)
    _logging(settings)
    asyncio.run(run_bot(settings))


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
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {str(out)!r}: cannot write it ({exc.strerror})") from None
    typer.echo(f"wrote {out}")


@personas_app.command("list")
def personas_list(config: ConfigOption = None) -> None:
    """List the personas that load cleanly, with their content hashes."""
    from bot.personas import PersonaRegistry

    settings = _settings(config)
    # The problems are printed below, once; stdout is the list.
    configure_logging(level="ERROR", fmt=settings.logging.format)
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
        settings.database.url,
        busy_timeout_ms=settings.database.busy_timeout_ms,
        pool=settings.database.pool(),
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
    engine = create_db_engine(settings.database.url, must_exist=True)
    try:
        typer.echo(f"current: {current_revision(engine) or '(empty)'}  head: {head_revision()}")
    finally:
        engine.dispose()


db_app.command("copy")(__import__("bot.dbcopy.cli", fromlist=["_"]).copy_command)


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

    try:
        path = build_tiny_model(directory)
    except FileExistsError:
        raise UsageError(f"{directory}: holds other files; name an empty directory") from None
    except OSError as exc:
        raise UsageError(f"{directory}: cannot write the model ({exc.strerror})") from None
    typer.echo(f"tiny model in {path}")


@models_app.command("fetch")
def models_fetch(
    model: Annotated[str, typer.Argument(help="Hub id, e.g. Qwen/Qwen2.5-0.5B-Instruct.")],
) -> None:
    """Download a hub model into the local cache, or check that it is there.

    Exits 3 at once (not after a minute of retries) when the model is not cached and
    the hub cannot be reached."""
    from bot.preflight import is_cached, looks_like_path, prepare_hub_model

    if looks_like_path(model):
        if not Path(model).expanduser().is_dir():
            raise UsageError(f"{model}: no such model directory")
        typer.echo(f"{model}: a local directory")
        return
    found = prepare_hub_model(model)
    if found != "hub" or is_cached(model):
        typer.echo(f"{model}: in the local cache")
        return
    from huggingface_hub import snapshot_download

    progress(f"downloading {model} (about 1 GB for the default model)")
    try:
        path = snapshot_download(
            model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
        )
    except Exception as exc:  # the hub's own errors: not found, gated, network
        raise BackendError(f"cannot download {model!r}: {type(exc).__name__}: {exc}") from None
    typer.echo(f"{model}: downloaded to {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `bot` console script: exit codes and one-line errors
    (bot/cli_errors.py)."""
    # Before any command runs: logs go to stderr, never onto a command's stdout.
    configure_logging(level="WARNING")
    sys.exit(run_app(app, argv))


if __name__ == "__main__":
    main()
