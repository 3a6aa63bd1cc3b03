"""`bot db copy --from URL --to URL`: the command (wired into `bot db` by bot/cli.py).

Progress goes to stderr, the per-table verification to stdout. Exit codes: 0
copied (or compared) and every table matches, 1 verification found differences,
2 a bad URL or option, 3 a database cannot be opened, read or written.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from bot.dbcopy.copy import copy_database, verify_databases
from bot.dbcopy.verify import TableCheck

__all__ = ["copy_command"]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _table(check: TableCheck) -> None:
    typer.echo(check.line())


def copy_command(
    source: Annotated[
        str,
        typer.Option(
            "--from", help="The database to copy, e.g. sqlite:///data/bot.db (never changed)."
        ),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to",
            help="An empty database (or one holding an unfinished copy of the same source), "
            "e.g. postgresql+psycopg://bot:secret@db/bot.",
        ),
    ],
    verify_only: Annotated[
        bool,
        typer.Option(
            "--verify-only", help="Copy nothing: compare counts and checksums of every table."
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per transaction.")
    ] = 2000,
    rate: Annotated[
        float | None,
        typer.Option(min=1, help="At most this many rows a second (spare a busy server)."),
    ] = None,
    replace_nul: Annotated[
        bool,
        typer.Option(
            "--replace-nul",
            help="Store text's NUL characters as U+FFFD (PostgreSQL cannot hold NUL), "
            "as the bot stores new text; verification compares them so.",
        ),
    ] = False,
    output: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Copy every table (memory and vectors included) between SQLite and PostgreSQL.

    The target is migrated first; each batch commits with a progress record in the
    target, so after an interruption the same command continues where it stopped.
    Every table is verified by count and checksum at the end. Stop the bot first."""
    from bot.errors import UsageError

    if output not in ("text", "json"):
        raise UsageError(f"--format {output!r}: expected 'text' or 'json'")
    if verify_only:
        checks = verify_databases(
            source,
            target,
            on_table=_table if output == "text" else None,
            replace_nul=replace_nul,
        )
        if output == "json":
            typer.echo(json.dumps({"tables": [_as_dict(c) for c in checks]}, indent=2))
        bad = [c.name for c in checks if not c.ok]
        if bad:
            _say(f"verification failed: {', '.join(bad)} differ")
            raise typer.Exit(1)
        _say(f"verified: {len(checks)} tables, every count and checksum matches")
        return
    result = copy_database(
        source, target, batch_size=batch_size, rate=rate, replace_nul=replace_nul, say=_say
    )
    if output == "json":
        typer.echo(
            json.dumps(
                {
                    "rows": result.rows,
                    "total_rows": result.total_rows,
                    "seconds": round(result.seconds, 3),
                    "resumed": result.resumed,
                    "vectors": result.vectors,
                    "ok": result.ok,
                    "tables": [_as_dict(c) for c in result.checks],
                },
                indent=2,
            )
        )
    else:
        for check in result.checks:
            _table(check)
    if not result.ok:
        bad = [c.name for c in result.checks if not c.ok]
        _say(
            f"verification failed: {', '.join(bad)} differ (was the bot still writing to "
            "the source?); the progress record is kept: rerun to compare again, or copy "
            "into an empty database"
        )
        raise typer.Exit(1)
    speed = result.total_rows / result.seconds if result.seconds > 0 else 0.0
    _say(
        f"copied {result.total_rows} rows in {result.seconds:.1f} s ({speed:.0f} rows/s); "
        "verified: every table's count and checksum match"
    )


def _as_dict(check: TableCheck) -> dict[str, object]:
    return {
        "table": check.name,
        "source_rows": check.source_rows,
        "target_rows": check.target_rows,
        "source_sha256": check.source_sha256,
        "target_sha256": check.target_sha256,
        "differences": check.differences,
        "shown": check.shown,
        "ok": check.ok,
    }
