"""`bot export`: wiring from command-line options to `export_datasets`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bot.config import load_settings, merge_overrides
from bot.errors import UsageError

__all__ = ["export_app"]

export_app = typer.Typer(help="Fine-tune datasets (SFT, ShareGPT, DPO) from the conversations.")


def _date(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{option} = {value!r}: expected a date or time, e.g. 2026-11-01 or 2026-11-01T08:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@export_app.callback(invoke_without_command=True)
def export(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default: export.out_dir/<timestamp>)."),
    ] = None,
    persona: Annotated[str | None, typer.Option(help="Only this persona.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date/time (inclusive, UTC unless given).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Until this date/time (exclusive; default: now).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty output directory.")
    ] = False,
    db: Annotated[Path | None, typer.Option(help="SQLite file (default from config).")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="BOT_CONFIG", help="TOML config file (default ./bot.toml)."
        ),
    ] = None,
) -> None:
    """Export consented, scrubbed, pseudonymous datasets with a manifest.json."""
    from bot.db import check_database
    from bot.export.run import export_datasets
    from bot.logs import configure_logging

    overrides = {"database": {"url": f"sqlite:///{db}" if db is not None else None}}
    settings = load_settings(config, merge_overrides(overrides))
    check_database(settings.database.url)  # a mistyped --db: one line, nothing created
    key = settings.export.resolved_hmac_key().get_secret_value()
    configure_logging(level="WARNING", fmt=settings.logging.format, secrets=[key])
    result = export_datasets(
        settings,
        datetime.now(UTC),
        out=out,
        persona=persona,
        since=_date("--since", since),
        until=_date("--until", until),
        force=force,
    )
    files = result.data["files"]
    typer.echo(f"exported {len(files)} file(s) to {result.path}")
    for relpath, stats in files.items():
        typer.echo(f"  {relpath}\t{stats['records']} record(s)")
    filtered = {name: n for name, n in result.data["filters"].items() if n}
    if filtered:
        typer.echo("  filtered: " + ", ".join(f"{k} {v}" for k, v in filtered.items()))
