"""Reading a card or lorebook file: bytes → a checked `Card` or `Book`, or a `CardError`.

    PNG    tEXt/zTXt/iTXt `ccv3` (V3, preferred) or `chara` (V2, V1), base64 JSON
    CHARX  a zip with card.json (V3) and assets
    JSON   a V1, V2 or V3 card, a `lorebook_v3`, or SillyTavern World Info

Every cost is bounded before it is paid: the file (`MAX_FILE_BYTES`), the card's
JSON (`MAX_JSON_BYTES`, nesting measured before parsing), each text field
(`MAX_FIELD_CHARS`), lists (`MAX_LIST_ITEMS`). Text is cleaned of control
characters and lone surrogates; control *tokens* (`<|im_start|>`) stay text, which
the prompt builder neutralises like any other text from outside.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from bot.personas.cards.book import Book, parse_book, parse_world_info
from bot.personas.cards.card import Card, parse_card
from bot.personas.cards.charx import CharxError, read_charx
from bot.personas.cards.errors import CardError
from bot.personas.cards.png import PNG_SIGNATURE, PngError, read_text_chunks

__all__ = ["MAX_FILE_BYTES", "MAX_JSON_BYTES", "MAX_NESTING", "read_card_file", "read_json"]

#: A card file larger than this is refused unread (a PNG, a CHARX with its assets).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: A card's JSON larger than this is refused.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Arrays and objects nested deeper than this are refused before parsing.
MAX_NESTING = 64


def _depth_ok(text: str) -> int | None:
    """The offset where nesting passes `MAX_NESTING`, or None: a linear scan that
    skips strings, so `json.loads` never recurses deep enough to fail."""
    depth = 0
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return i
        elif ch in "]}":
            depth -= 1
    return None


def read_json(data: bytes, source: str, where: str) -> Any:
    """Bounded, checked JSON from `data`; `where` names the part (`json`, `png ccv3`)."""
    if len(data) > MAX_JSON_BYTES:
        raise CardError(source, where, f"{len(data)} bytes of JSON (at most {MAX_JSON_BYTES})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(
            source, where, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    deep = _depth_ok(text)
    if deep is not None:
        raise CardError(source, where, f"nested more than {MAX_NESTING} deep (at offset {deep})")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise CardError(
            source, where, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise CardError(source, where, f"not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unbase64(raw: bytes, source: str, where: str) -> bytes:
    stripped = raw.strip()
    if stripped.startswith(b"{"):  # some tools write the JSON itself
        return stripped
    try:
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(source, where, "not base64 (a card chunk holds base64 JSON)") from None


def _from_png(data: bytes, source: str) -> Any:
    try:
        texts = read_text_chunks(data)
    except PngError as exc:
        raise CardError(source, "png", str(exc)) from None
    for keyword in ("ccv3", "chara"):
        if keyword in texts:
            where = f"png {keyword}"
            return read_json(_unbase64(texts[keyword], source, where), source, where)
    raise CardError(source, "png", "no character card in it (no 'ccv3' or 'chara' text chunk)")


def read_card_file(path: Path) -> Card | Book:
    """The card or lorebook in the file at `path`, checked field by field.

    Raises `CardError` (naming the file and the field) for anything wrong, and
    nothing else for any content; `OSError` only when the file cannot be read.
    """
    source = str(path)
    if not path.is_file():  # a pipe or a device would be read forever
        what = (
            "a directory"
            if path.is_dir()
            else "missing"
            if not path.exists()
            else "not a regular file"
        )
        raise CardError(source, "file", f"{what}: name a card or lorebook file")
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CardError(source, "file", f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse_card_bytes(data, source)
    except RecursionError:
        raise CardError(source, "json", "nested too deeply") from None


def parse_card_bytes(data: bytes, source: str) -> Card | Book:
    """`read_card_file` for bytes already read; `source` names them in errors."""
    files: dict[str, bytes] = {}
    image: bytes | None = None
    if data.startswith(PNG_SIGNATURE):
        document = _from_png(data, source)
        image = data
    elif data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        try:
            charx = read_charx(data)
        except CharxError as exc:
            raise CardError(source, f"zip {exc.member}", str(exc)) from None
        document = read_json(charx.card, source, "card.json")
        files = charx.files
    elif data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
        document = read_json(data, source, "json")
    else:
        raise CardError(source, "file", "not a PNG, CHARX (zip) or JSON card or lorebook")
    return _dispatch(document, source, image, files)


def _dispatch(doc: Any, source: str, image: bytes | None, files: dict[str, bytes]) -> Card | Book:
    if not isinstance(doc, dict):
        raise CardError(source, "(root)", "a card or lorebook is a JSON object")
    spec = doc.get("spec")
    if spec == "lorebook_v3":
        return parse_book(_data(doc, source), source, "data")
    if spec in ("chara_card_v2", "chara_card_v3"):
        return parse_card(_data(doc, source), source, str(spec), "data", image, files)
    if spec is not None:
        raise CardError(
            source,
            "spec",
            f"unknown spec {str(spec)[:40]!r} (expected chara_card_v2, "
            "chara_card_v3 or lorebook_v3)",
        )
    if "entries" in doc and "first_mes" not in doc:
        return parse_world_info(doc, source)
    if "name" in doc:
        return parse_card(doc, source, "chara_card_v1", "", image, files)
    raise CardError(
        source, "(root)", "not a character card or lorebook (no spec, no name, no entries)"
    )


def _data(doc: dict[str, Any], source: str) -> dict[str, Any]:
    data = doc.get("data")
    if not isinstance(data, dict):
        raise CardError(source, "data", "missing or not an object")
    return data
