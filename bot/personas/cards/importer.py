"""`bot personas import`: card and lorebook files → persona and world files.

Each card becomes `ID.yaml` (the persona, validated and trial-rendered by the same
loader as every persona file before anything is written) and `ID.files/` (its
avatar and assets); each standalone lorebook becomes `worlds/ID.yaml`. All files
of one command are checked first and written together, or none is.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.personas.cards.book import Book
from bot.personas.cards.build import persona_data, persona_id, world_data
from bot.personas.cards.card import Asset, Card
from bot.personas.cards.errors import CardError
from bot.personas.cards.png import PngError, write_text_chunks
from bot.personas.cards.read import read_card_file
from bot.personas.cards.write import dump_yaml, stage_and_commit
from bot.personas.loader import MAX_FILE_BYTES, parse_persona
from bot.personas.lorebook.schema import World
from bot.personas.problems import PersonaFileError

__all__ = ["Imported", "import_files", "plan_import"]

_HEADER = (
    "# yaml-language-server: $schema=./persona.schema.json\n"
    "# Imported from a character card ({spec}) by `bot personas import`: edit freely.\n"
    "# The bot speaks from the fields above `card`; `card` keeps the card as written.\n"
)
_TEXT_FIELDS = (
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
)
_SAFE = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Imported:
    """What one input file became: a persona or a world, and the files written."""

    source: Path
    kind: str  # "persona" or "world"
    id: str
    files: tuple[str, ...]


def _asset_files(card: Card, pid: str) -> tuple[dict[str, bytes], str | None, list[dict[str, Any]]]:
    files: dict[str, bytes] = {}
    avatar = None
    if card.avatar is not None:
        image, ext = card.avatar
        if ext == "png":
            with contextlib.suppress(PngError):  # the card's text is not part of the picture
                image = write_text_chunks(image, {})
        avatar = f"{pid}.files/avatar.{ext}"
        files[avatar] = image
    listed: list[dict[str, Any]] = []
    for i, asset in enumerate(card.assets):
        entry = _asset_entry(asset)
        if asset.data is not None and asset.uri != "ccdefault:":
            stem = _SAFE.sub("-", f"{asset.type}-{asset.name}".lower()).strip("-")[:60] or "asset"
            rel = f"{pid}.files/{i:03d}-{stem}.{asset.ext}"
            files[rel] = asset.data
            entry["path"] = rel
        elif asset.uri == "ccdefault:" and avatar:
            entry["path"] = avatar
        listed.append(entry)
    return files, avatar, listed


def _asset_entry(asset: Asset) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": asset.type, "name": asset.name, "ext": asset.ext}
    if asset.uri:
        entry["uri"] = asset.uri[:2000]
    return entry


def _persona_files(card: Card, pid: str, out: Path) -> dict[str, bytes]:
    files, avatar, assets = _asset_files(card, pid)
    data = persona_data(card, avatar, assets)
    data["id"] = pid
    body = dump_yaml(data, _HEADER.format(spec=card.spec))
    if len(body) > MAX_FILE_BYTES:
        longest = max(_TEXT_FIELDS, key=lambda name: len(getattr(card, name)))
        raise CardError(
            card.source,
            ("" if card.spec == "chara_card_v1" else "data.") + longest,
            f"{len(getattr(card, longest))} characters make a persona file of {len(body)} "
            f"bytes (at most {MAX_FILE_BYTES})",
        )
    try:
        parse_persona(body, out / f"{pid}.yaml")
    except PersonaFileError as exc:
        first = exc.problems[0]
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise CardError(card.source, f"persona {first.field}", f"{first.message}{more}") from None
    files[f"{pid}.yaml"] = body  # last: it names the others
    return files


def _world_files(book: Book, wid: str) -> dict[str, bytes]:
    data = world_data(book, wid)
    try:
        World.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CardError(book.source, f"world {where}", err["msg"]) from None
    header = "# A shared world (lorebook) imported by `bot personas import`: edit freely.\n"
    source = json.dumps(book.raw, ensure_ascii=False, indent=1).encode("utf-8")
    return {
        f"worlds/{wid}.source.json": source,  # the book as written: nothing is lost
        f"worlds/{wid}.yaml": dump_yaml(data, header),
    }


def plan_import(
    paths: Iterable[Path], out: Path, *, force: bool = False
) -> tuple[list[Imported], dict[str, bytes]]:
    """Read and check every file; the results and the files to write (relative to
    `out`). Raises `CardError` for the first file that cannot be imported."""
    results: list[Imported] = []
    files: dict[str, bytes] = {}
    taken: set[str] = set()
    for path in paths:
        try:
            item = read_card_file(path)
        except OSError as exc:
            raise CardError(str(path), "file", f"cannot read it ({exc.strerror or exc})") from None
        if isinstance(item, Card):
            own = item.extensions.get("personabot")
            wanted = own.get("id") if isinstance(own, dict) else None
            base = (
                wanted
                if isinstance(wanted, str) and re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", wanted)
                else persona_id(item.name)
            )
            pid = _unique(base, taken)
            made = _persona_files(item, pid, out)
            kind = "persona"
        else:
            pid = _unique(persona_id(item.name or path.stem), taken)
            made = _world_files(item, pid)
            kind = "world"
        for rel in made:
            if (out / rel).exists() and not force:
                raise CardError(str(path), "out", f"{out / rel} exists (--force replaces it)")
        results.append(Imported(path, kind, pid, tuple(made)))
        files.update(made)
    # Assets and worlds first, persona files last.
    ordered = dict(
        sorted(files.items(), key=lambda kv: kv[0].endswith(".yaml") and "/" not in kv[0])
    )
    return results, ordered


def _unique(base: str, taken: set[str]) -> str:
    pid, n = base, 2
    while pid in taken:
        pid = f"{base[:60]}-{n}"
        n += 1
    taken.add(pid)
    return pid


def import_files(paths: Iterable[Path], out: Path, *, force: bool = False) -> list[Imported]:
    """Import every file of `paths` into `out`, all or nothing (see `plan_import`)."""
    results, files = plan_import(paths, out, force=force)
    try:
        stage_and_commit(out, files)
    except OSError as exc:
        raise CardError(str(out), "out", f"cannot write there ({exc.strerror or exc})") from None
    return results
