"""A character card's fields, checked: `parse_card` turns the card's JSON object into a
`Card`, or raises `CardError` naming the field that is wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.personas.cards import _fields as f
from bot.personas.cards.book import Book, parse_book
from bot.personas.cards.errors import CardError

__all__ = ["Asset", "Card", "parse_card"]

#: The longest name a persona may have.
MAX_NAME_CHARS = 100
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_EMBEDDED = ("embeded://", "embedded://", "__asset:")


@dataclass(frozen=True, slots=True)
class Asset:
    """One asset of a card; `data` is its bytes when the card carried them."""

    type: str
    name: str
    ext: str
    uri: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Card:
    """Every field of a character card (V1, V2 or V3), cleaned text throughout."""

    source: str
    spec: str
    name: str
    nickname: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    alternate_greetings: tuple[str, ...] = ()
    group_only_greetings: tuple[str, ...] = ()
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator_notes: str = ""
    tags: tuple[str, ...] = ()
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = field(default_factory=dict)
    book: Book | None = None
    assets: tuple[Asset, ...] = ()
    #: The avatar image (a PNG card's own image, a CHARX's main icon) and its extension.
    avatar: tuple[bytes, str] | None = None


def _ext(value: str, fallback: str) -> str:
    ext = value.lower().lstrip(".")
    # Not .yaml/.yml: an asset must never be read as a persona file beside it.
    return ext if _EXT.match(ext) and ext not in ("yaml", "yml") else fallback


def _assets(
    data: dict[str, Any], source: str, prefix: str, image: bytes | None, files: dict[str, bytes]
) -> tuple[Asset, ...]:
    raw = data.get("assets")
    if raw is None:
        return ()
    where = f.path(prefix, "assets")
    if not isinstance(raw, list):
        raise CardError(source, where, "expected a list of assets")
    if len(raw) > f.MAX_LIST_ITEMS:
        raise CardError(source, where, f"{len(raw)} assets (at most {f.MAX_LIST_ITEMS})")
    assets = []
    for i, item in enumerate(raw):
        at = f"{where}.{i}"
        if not isinstance(item, dict):
            raise CardError(source, at, "an asset is an object (type, uri, name, ext)")
        kind = f.text(item, "type", source, at, limit=100) or "other"
        name = f.text(item, "name", source, at, limit=200) or f"asset-{i}"
        uri = f.text(item, "uri", source, at, limit=2000)
        ext = _ext(f.text(item, "ext", source, at, limit=20), "bin")
        body: bytes | None = None
        if uri == "ccdefault:" and image is not None:
            body, ext = image, "png"
        else:
            for scheme in _EMBEDDED:
                if uri.startswith(scheme):
                    body = files.get(uri[len(scheme) :])
                    if body is None:
                        raise CardError(
                            source,
                            f"{at}.uri",
                            f"no member {uri[len(scheme) :][:200]!r} in the zip",
                        )
        assets.append(Asset(kind, name, ext, uri, body))
    return tuple(assets)


def _avatar(assets: tuple[Asset, ...], image: bytes | None) -> tuple[bytes, str] | None:
    if image is not None:
        return image, "png"
    icons = [a for a in assets if a.type == "icon" and a.data is not None]
    main = [a for a in icons if a.name == "main"] or icons
    if main and main[0].data is not None:
        return main[0].data, main[0].ext
    return None


def parse_card(
    data: dict[str, Any],
    source: str,
    spec: str,
    prefix: str,
    image: bytes | None,
    files: dict[str, bytes],
) -> Card:
    """The card in `data` (V1: the top-level object; V2/V3: its `data`), checked."""
    name = f.text(data, "name", source, prefix).strip()
    if not name:
        raise CardError(source, f.path(prefix, "name"), "missing or blank: a card needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise CardError(source, f.path(prefix, "name"), f"longer than {MAX_NAME_CHARS} characters")
    book_raw = data.get("character_book")
    book = None
    if book_raw is not None:
        where = f.path(prefix, "character_book")
        if not isinstance(book_raw, dict):
            raise CardError(source, where, "expected an object (a lorebook)")
        book = parse_book(book_raw, source, where)
    assets = _assets(data, source, prefix, image, files)
    tags = f.text_list(data, "tags", source, prefix, limit=200)
    nickname = f.text(data, "nickname", source, prefix, limit=MAX_NAME_CHARS).strip()
    return Card(
        source=source,
        spec=spec,
        name=name,
        nickname=nickname,
        description=f.text(data, "description", source, prefix),
        personality=f.text(data, "personality", source, prefix),
        scenario=f.text(data, "scenario", source, prefix),
        first_mes=f.text(data, "first_mes", source, prefix),
        alternate_greetings=f.text_list(data, "alternate_greetings", source, prefix),
        group_only_greetings=f.text_list(data, "group_only_greetings", source, prefix),
        mes_example=f.text(data, "mes_example", source, prefix),
        system_prompt=f.text(data, "system_prompt", source, prefix),
        post_history_instructions=f.text(data, "post_history_instructions", source, prefix),
        creator_notes=f.text(data, "creator_notes", source, prefix),
        tags=tuple(t.strip() for t in tags if t.strip()),
        creator=f.text(data, "creator", source, prefix, limit=200),
        character_version=f.text(data, "character_version", source, prefix, limit=100),
        extensions=f.clean_json(f.mapping(data, "extensions", source, prefix)),
        book=book,
        assets=assets,
        avatar=_avatar(assets, image),
    )
