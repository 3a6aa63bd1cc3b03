"""Values across dialects: one canonical Python value per stored value, and the
bytes a checksum hashes.

Rows are read raw (what the driver returns, no SQLAlchemy type processing), so
the copy sees SQLite's storage as it is, then each value is normalised by its
column's kind (bot/dbcopy/schema.py, from the target's declared type):

- datetime: an aware `datetime` in UTC, to the microsecond. SQLite holds text
  (SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff", raw SQL's "...HH:MM:SS.fff", ISO 8601
  with a "T" or an offset): parsed, a value without offset read as UTC (how every
  writer here stores it). PostgreSQL's timestamptz comes aware, converted to UTC.
- bool: `True`/`False`; SQLite's 0/1 integers are read as such.
- int: `int`; a float with an integral value (SQLite's dynamic typing) becomes one.
- float: a Python float (IEEE double; both REAL and double precision hold it
  exactly, so it round-trips bit for bit; NaN and infinities included).
- bytes: `bytes` (psycopg's memoryview, SQLite's blob).
- text: `str`. PostgreSQL text cannot hold U+0000, so a string with one is refused
  for a PostgreSQL target with the table, key and column named, unless the copy
  replaces NUL with U+FFFD (`--replace-nul`, what `bot.db.storable` does to new text).

Anything a column cannot hold (text in an integer column, an unparsable date) is a
`StorageError` naming the table, the row's key and the column, never a silent cast.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bot.dbcopy.schema import Kind

__all__ = ["BadValue", "converter", "encode_row"]

Convert = Callable[[Any], Any]


class BadValue(ValueError):
    """A stored value its column cannot hold; the caller adds table, key and column."""


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise BadValue(f"{text[:40]!r} is not a date and time") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        raise BadValue(f"{value!r} is a number, not a date and time")
    else:
        raise BadValue(f"{type(value).__name__} is not a date and time")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise BadValue(f"{value[:40]!r} is not a date") from None
    raise BadValue(f"{type(value).__name__} is not a date")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadValue(f"{value!r} is not a boolean (0 or 1)")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise BadValue(f"{value!r} is not an integer")


def _float(value: Any) -> float:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    raise BadValue(f"{value!r} is not a number")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            pass
    raise BadValue(f"{value!r} is not a decimal number")


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise BadValue(f"{type(value).__name__} in a binary column")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue("bytes that are not UTF-8 in a text column") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise BadValue(f"the number {value!r} in a text column")
    raise BadValue(f"{type(value).__name__} in a text column")


def _text_pg(value: Any) -> str:
    text = _text(value)
    if "\x00" in text:
        raise BadValue(
            "text with a NUL character (U+0000), which PostgreSQL cannot store; remove it "
            "in the source, or copy with --replace-nul (U+FFFD instead, as the bot now "
            "stores new text)"
        )
    return text


def _text_replaced(value: Any) -> str:
    # What bot.db.storable does to new text: NUL becomes U+FFFD.
    return _text(value).replace("\x00", "\ufffd")


def _other(value: Any) -> Any:
    return value


_CONVERT: dict[Kind, Convert] = {
    Kind.INT: _int,
    Kind.FLOAT: _float,
    Kind.DECIMAL: _decimal,
    Kind.BOOL: _bool,
    Kind.DATETIME: _datetime,
    Kind.DATE: _date,
    Kind.BYTES: _bytes,
    Kind.TEXT: _text,
    Kind.OTHER: _other,
}


def converter(kind: Kind, *, to_postgres: bool = False, replace_nul: bool = False) -> Convert:
    """The function that turns a raw stored value of `kind` into its canonical value
    (None stays None: the caller checks). `replace_nul`: text's NUL characters become
    U+FFFD (on both sides of a comparison, so that it compares what was stored)."""
    if kind is Kind.TEXT and replace_nul:
        return _text_replaced
    if kind is Kind.TEXT and to_postgres:
        return _text_pg
    return _CONVERT[kind]


def _encode(value: Any) -> bytes:
    # A type tag, then the value's exact text: equal values give equal bytes on every
    # dialect, different types never collide (1, 1.0, True and "1" all differ).
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, float):
        return b"f" + struct.pack(">d", value)  # the exact bits of the double
    if isinstance(value, datetime):
        return b"t" + value.astimezone(UTC).isoformat(timespec="microseconds").encode()
    if isinstance(value, date):
        return b"d" + value.isoformat().encode()
    if isinstance(value, Decimal):
        return b"m" + str(value.normalize()).encode()
    if isinstance(value, bytes):
        return b"x" + value
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    return b"o" + json.dumps(value, sort_keys=True, default=str).encode()


def encode_row(values: Sequence[Any]) -> bytes:
    """The canonical bytes of a row of canonical values: each value tagged by type and
    length-prefixed (so no two different rows encode alike)."""
    out = bytearray()
    for value in values:
        piece = _encode(value)
        out += struct.pack(">I", len(piece))
        out += piece
    return bytes(out)


def row_digest(values: Sequence[Any]) -> bytes:
    """SHA-256 of `encode_row(values)`."""
    return hashlib.sha256(encode_row(values)).digest()
