"""`export_datasets`: one export run, for the CLI and for a scheduler job.

Blocking (it reads the database and writes files): a scheduler running on an event
loop calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.config import Settings
from bot.errors import ConfigError
from bot.export.dataset import FILTERS, DatasetBuilder, ExportOptions
from bot.export.errors import ExportError
from bot.export.prompts import SystemPrompts
from bot.export.pseudonym import Pseudonymizer
from bot.export.scrub import Scrubber
from bot.export.select import (
    export_query,
    open_read_engine,
    persona_version,
    read_in_background,
)
from bot.export.writer import DatasetWriter

__all__ = ["MANIFEST_VERSION", "Manifest", "default_out_dir", "export_datasets"]

MANIFEST_VERSION = 1
log = structlog.get_logger("bot.export")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A finished export: where it is, and what its manifest.json says."""

    path: Path
    data: dict[str, Any]


def default_out_dir(settings: Settings, now: datetime) -> Path:
    """Where a scheduled export goes: `export.out_dir/YYYYmmddTHHMMSSZ`."""
    return settings.export.out_dir / now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def export_datasets(
    settings: Settings,
    now: datetime,
    *,
    out: Path | None = None,
    persona: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    force: bool = False,
    engine: Engine | None = None,
) -> Manifest:
    """Export every persona's conversations (or one persona's) as fine-tune datasets.

    Messages from `since` (inclusive) to `until` (exclusive, default `now`) are read.
    The dataset appears at `out` (default `default_out_dir(settings, now)`) complete,
    with its manifest, or not at all. Raises `ConfigError` for a missing pseudonym
    key, `OutputNotEmpty` for a non-empty `out` without `force`, `ExportError` when
    the database cannot be read or the files cannot be written.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cfg = settings.export
    key = cfg.resolved_hmac_key().get_secret_value().encode()
    until = now if until is None else until
    since, until = _aware(since), _aware(until)
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"since {since.isoformat()} is not before until {until.isoformat()}")
    target = out if out is not None else default_out_dir(settings, now)
    options = ExportOptions(
        window_messages=cfg.window_messages,
        prompt_messages=cfg.prompt_messages,
        min_reply_chars=cfg.min_reply_chars,
        split_seed=cfg.split_seed,
        validation_fraction=cfg.validation_fraction,
        default_timezone=settings.engine.timezone,
    )
    scrubber = Scrubber(cfg.deny_names)
    started = time.perf_counter()
    own_engine = engine is None
    read_engine = open_read_engine(settings.database.url) if engine is None else engine
    try:
        with DatasetWriter(target, force=force) as writer, read_engine.connect() as conn:
            prompts = SystemPrompts(
                lambda content_hash: persona_version(conn, content_hash),
                options.default_timezone,
                scrubber.scrub,
            )
            builder = DatasetBuilder(writer, options, scrubber, Pseudonymizer(key), prompts)
            statement = export_query(persona=persona, since=since, until=until)
            add = builder.add
            try:
                for batch in read_in_background(read_engine, statement):
                    for row in batch:
                        add(row)
            except SQLAlchemyError as exc:
                raise ExportError(f"cannot read the ledger: {exc}") from exc
            builder.finish()
            manifest = writer.commit(
                _manifest(builder, options, scrubber, now, persona, since, until, started)
            )
    finally:
        if own_engine:
            read_engine.dispose()
    log.info(
        "export.done",
        out=str(target),
        files=len(manifest["files"]),
        seconds=round(time.perf_counter() - started, 2),
    )
    return Manifest(target, manifest)


def _aware(value: datetime | None) -> datetime | None:
    # Stored times are UTC (and SQLite compares them as text): bounds must be UTC too.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _manifest(
    builder: DatasetBuilder,
    options: ExportOptions,
    scrubber: Scrubber,
    now: datetime,
    persona: str | None,
    since: datetime | None,
    until: datetime | None,
    started: float,
) -> dict[str, Any]:
    personas = {pid: stats.as_manifest() for pid, stats in sorted(builder.stats.items())}
    totals = {name: sum(p["filters"][name] for p in personas.values()) for name in FILTERS}
    return {
        "manifest_version": MANIFEST_VERSION,
        "created_at": now.astimezone(UTC).isoformat(),
        "duration_s": round(time.perf_counter() - started, 3),
        "selection": {
            "persona": persona,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
        "scrubber_version": scrubber.version,
        "split": {
            "by": "conversation",
            "seed": options.split_seed,
            "validation_fraction": options.validation_fraction,
        },
        "records": {
            "unit": "a window of a conversation: up to window_messages messages, ends on a reply",
            "window_messages": options.window_messages,
            "prompt_messages": options.prompt_messages,
            "min_reply_chars": options.min_reply_chars,
            "system_prompt": (
                "rendered from the persona version of the window's first reply, for that "
                "turn's platform, time in the person's zone and directness; display names "
                "and user ids are pseudonyms; recalled memories and lore are chosen per "
                "turn, not stored with it, and are not included"
            ),
        },
        "pseudonyms": "HMAC-SHA256 of platform and user id with the configured key (not included)",
        "filters": totals,
        "personas": personas,
    }
