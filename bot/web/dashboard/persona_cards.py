"""Card import by upload and card export, for the persona pages.

The same machinery as `bot personas import` and `bot personas export`
(bot/personas/cards): an upload is planned first (read within the card bounds,
every persona validated and trial-rendered), the caller decides whether the ids it
makes may be written, and only then are the files staged and renamed into the
persona directory and served. The upload's file name is a stranger's: only a
cleaned version of it is used, and only to name the card in messages.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection

from bot.personas.cards.errors import CardError
from bot.personas.cards.read import MAX_FILE_BYTES as MAX_CARD_BYTES
from bot.personas.loader import LoadedPersona
from bot.web.dashboard.persona_service import (
    PersonaService,
    locked_directory,
    read_file_bytes,
    record_version,
)

__all__ = [
    "CARD_SUFFIXES",
    "EXPORT_FORMATS",
    "MAX_CARD_BYTES",
    "ExportedCard",
    "ImportOutcome",
    "ImportedItem",
    "clean_upload_name",
    "export_card_bytes",
    "import_upload",
    "serve_imported",
]

#: What an upload may be: a PNG, JSON or CHARX card, or a JSON lorebook.
CARD_SUFFIXES = (".png", ".json", ".charx")
#: Export formats: a V3 card in a PNG or JSON, or a CHARX zip.
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "png": (".png", "image/png"),
    "json": (".json", "application/json"),
    "charx": (".charx", "application/zip"),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class ImportedItem:
    """One persona or world an upload made, with the text it replaced (audit)."""

    kind: Literal["persona", "world"]
    id: str
    files: tuple[str, ...]
    before: str | None
    after: str


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """An import's result: the items written, or `error` (nothing written)."""

    items: tuple[ImportedItem, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class ExportedCard:
    """A card to download."""

    filename: str
    content_type: str
    body: bytes


def clean_upload_name(name: str | None) -> str:
    """A file name safe to use in a temporary directory and in messages."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("-", base).strip(".-")[:100]
    return cleaned or "card"


MayWrite = Callable[[Literal["persona", "world"], str], bool]


async def import_upload(
    service: PersonaService,
    name: str | None,
    data: bytes,
    *,
    may_write: MayWrite,
    force: bool = False,
) -> ImportOutcome:
    """Import one uploaded card or lorebook into the first persona directory.

    `may_write(kind, id)` is asked for every persona and world the upload would
    write; one refusal writes nothing. `force` replaces existing files (a persona
    served from another file is never replaced).
    """
    shown = clean_upload_name(name)
    if not shown.lower().endswith(CARD_SUFFIXES):
        return ImportOutcome(error=f"{shown}: expected a .png, .json or .charx card")
    if len(data) > MAX_CARD_BYTES:
        return ImportOutcome(error=f"{shown}: larger than {MAX_CARD_BYTES // 2**20} MiB")
    if not data:
        return ImportOutcome(error=f"{shown}: the file is empty")
    async with service.write_lock:
        return await asyncio.to_thread(_import_sync, service, shown, data, may_write, force)


def _import_sync(
    service: PersonaService, shown: str, data: bytes, may_write: MayWrite, force: bool
) -> ImportOutcome:
    from bot.personas.cards.importer import plan_import
    from bot.personas.cards.write import stage_and_commit

    out = service.directory()
    with tempfile.TemporaryDirectory(prefix="card-upload-") as tmp:
        source = Path(tmp) / shown
        source.write_bytes(data)
        with locked_directory(out):
            try:
                results, files = plan_import([source], out, force=force)
            except CardError as exc:
                # Reasons name files by their paths here: name them as the pages do.
                reason = (
                    exc.reason.replace(str(source), shown)
                    .replace(str(out) + "/", f"{out.name}/")
                    .replace("(--force replaces it)", "(choose to replace files that exist)")
                )
                return ImportOutcome(error=f"{shown}: {exc.field}: {reason}")
            items: list[ImportedItem] = []
            for result in results:
                kind: Literal["persona", "world"] = (
                    "persona" if result.kind == "persona" else "world"
                )
                if not may_write(kind, result.id):
                    return ImportOutcome(error=f"{shown}: you may not change {kind} {result.id!r}")
                main = result.files[-1]
                if kind == "persona":
                    served = service.served(result.id)
                    if served is not None and served.path != out / main:
                        return ImportOutcome(
                            error=f"{shown}: persona {result.id!r} is served from "
                            f"{service.shown(served.path)}; edit it there"
                        )
                old = read_file_bytes(out / main)
                items.append(
                    ImportedItem(
                        kind,
                        result.id,
                        result.files,
                        old.decode("utf-8", errors="replace") if old is not None else None,
                        files[main].decode("utf-8"),
                    )
                )
            try:
                stage_and_commit(out, files)
            except OSError as exc:
                return ImportOutcome(
                    error=f"cannot write to the persona directory ({exc.strerror})"
                )
    return ImportOutcome(tuple(items))


async def serve_imported(
    service: PersonaService,
    outcome: ImportOutcome,
    *,
    audit: Callable[[Connection, ImportedItem], None] | None = None,
) -> list[str]:
    """Load the personas an import wrote, and record them and `audit(conn, item)` for
    every item in one transaction; the problems, as `check` lines (none expected:
    each was validated before it was written)."""
    problems: list[str] = []
    out = service.directory()
    served: list[LoadedPersona] = []
    for item in outcome.items:
        if item.kind != "persona":
            continue
        found = await service.registry.reload(out / item.files[-1])
        problems.extend(service.view(p).text for p in found)
        loaded = service.served(item.id)
        if loaded is not None and not found:
            served.append(loaded)
    if service.db is not None:

        def work(conn: Connection) -> None:
            for loaded in served:
                record_version(conn, loaded)
            if audit is not None:
                for item in outcome.items:
                    audit(conn, item)

        await service.db.run(work)
    return problems


async def export_card_bytes(service: PersonaService, persona_id: str, fmt: str) -> ExportedCard:
    """The served version of `persona_id` as a card. Raises `CardError` (a bad
    avatar or asset, named) or `KeyError` (no such persona, or format)."""
    from bot.personas.cards.export import export_card

    loaded = service.served(persona_id)
    if loaded is None or fmt not in EXPORT_FORMATS:
        raise KeyError(persona_id if loaded is None else fmt)
    suffix, content_type = EXPORT_FORMATS[fmt]

    def work() -> bytes:
        with tempfile.TemporaryDirectory(prefix="card-export-") as tmp:
            return export_card(loaded, Path(tmp) / f"card{suffix}").read_bytes()

    body = await asyncio.to_thread(work)
    return ExportedCard(f"{persona_id}{suffix}", content_type, body)
