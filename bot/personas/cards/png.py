"""PNG chunks, read and written by hand: a card is text in `tEXt` chunks.

Reading walks the chunk list with every length checked against what is left and
against `MAX_CHUNK_BYTES`, every CRC checked, and stops at `IEND`; compressed text
(`zTXt`, `iTXt`) is inflated to at most `MAX_TEXT_BYTES`. Nothing here decodes the
image itself. Writing keeps the image's own chunks and replaces the card's.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "CARD_KEYWORDS",
    "MAX_CHUNK_BYTES",
    "MAX_TEXT_BYTES",
    "PNG_SIGNATURE",
    "PngError",
    "blank_png",
    "read_text_chunks",
    "write_text_chunks",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The tEXt keywords of character cards: V3 (`ccv3`) and V2 (`chara`).
CARD_KEYWORDS = ("ccv3", "chara")
#: No chunk may be longer (a card's text is a few hundred kilobytes).
MAX_CHUNK_BYTES = 16 * 1024 * 1024
#: A card's text chunk, inflated, is at most this long.
MAX_TEXT_BYTES = 16 * 1024 * 1024
# A file with more chunks than this is not an image worth reading.
_MAX_CHUNKS = 10_000


class PngError(ValueError):
    """The bytes are not a well-formed PNG; the message says where."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    kind: bytes
    data: bytes


def _chunks(data: bytes) -> list[_Chunk]:
    if not data.startswith(PNG_SIGNATURE):
        raise PngError("not a PNG file (no PNG signature)")
    chunks: list[_Chunk] = []
    pos = len(PNG_SIGNATURE)
    while True:
        if len(chunks) >= _MAX_CHUNKS:
            raise PngError(f"more than {_MAX_CHUNKS} chunks")
        if pos + 8 > len(data):
            raise PngError(f"truncated at byte {pos}: no IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if length > MAX_CHUNK_BYTES:
            raise PngError(f"a chunk of {length} bytes at byte {pos} (at most {MAX_CHUNK_BYTES})")
        end = pos + 8 + length
        if end + 4 > len(data):
            raise PngError(f"truncated inside the {_name(kind)} chunk at byte {pos}")
        body = data[pos + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + body) != crc:
            raise PngError(f"the {_name(kind)} chunk at byte {pos} has a wrong CRC")
        chunks.append(_Chunk(kind, body))
        pos = end + 4
        if kind == b"IEND":
            return chunks


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)


def _inflate(compressed: bytes, keyword: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, MAX_TEXT_BYTES + 1)
    except zlib.error as exc:
        raise PngError(f"the {keyword!r} text chunk does not inflate ({exc})") from None
    if len(out) > MAX_TEXT_BYTES:
        raise PngError(f"the {keyword!r} text chunk inflates past {MAX_TEXT_BYTES} bytes")
    return out


def _text(chunk: _Chunk) -> tuple[str, bytes] | None:
    """(keyword, raw text bytes) of a text chunk; None for other chunks."""
    if chunk.kind not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    keyword, sep, rest = chunk.data.partition(b"\x00")
    if not sep:
        return None
    name = keyword.decode("latin-1")
    if chunk.kind == b"tEXt":
        return name, rest
    if chunk.kind == b"zTXt":
        return name, _inflate(rest[1:], name)
    # iTXt: compression flag, method, language tag\0, translated keyword\0, text
    if len(rest) < 2:
        return None
    flag, body = rest[0], rest[2:]
    parts = body.split(b"\x00", 2)
    if len(parts) < 3:
        return None
    return name, _inflate(parts[2], name) if flag else parts[2]


def read_text_chunks(data: bytes, keywords: tuple[str, ...] = CARD_KEYWORDS) -> dict[str, bytes]:
    """The text of the chunks named by `keywords` (lower-case match), the first of each.

    Raises `PngError` for anything malformed: no signature, a truncated or
    oversized chunk, a wrong CRC, text that does not inflate within bounds.
    """
    found: dict[str, bytes] = {}
    for chunk in _chunks(data):
        text = _text(chunk)
        if text is None:
            continue
        name = text[0].lower()
        if name in keywords and name not in found:
            found[name] = text[1]
    return found


def _pack(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_text_chunks(
    image: bytes, texts: dict[str, bytes], drop: tuple[str, ...] = CARD_KEYWORDS
) -> bytes:
    """`image` (a PNG) with `texts` as tEXt chunks just before IEND, without the
    text chunks it had of the same keywords or of `drop` (case-insensitively)."""
    dropped = {name.lower() for name in texts} | set(drop)
    out = [PNG_SIGNATURE]
    for chunk in _chunks(image):
        if chunk.kind == b"IEND":
            out.extend(_pack(b"tEXt", k.encode("latin-1") + b"\x00" + v) for k, v in texts.items())
        text = _text(chunk) if chunk.kind in (b"tEXt", b"zTXt", b"iTXt") else None
        if text is not None and text[0].lower() in dropped:
            continue
        out.append(_pack(chunk.kind, chunk.data))
    return b"".join(out)


def blank_png(size: int = 64, rgb: tuple[int, int, int] = (200, 200, 210)) -> bytes:
    """A plain square RGB PNG: the avatar of a card whose persona has none."""
    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _pack(b"IHDR", header)
        + _pack(b"IDAT", zlib.compress(row * size, 9))
        + _pack(b"IEND", b"")
    )
