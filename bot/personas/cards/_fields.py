"""Typed reads of one field of a card's JSON, each failure naming the field."""

from __future__ import annotations

import math
from typing import Any

from bot.personas.cards.errors import CardError
from bot.text import clean_text

#: A text field longer than this is refused (2 MiB of characters).
MAX_FIELD_CHARS = 2 * 1024 * 1024
#: A list (greetings, tags, keys, entries) longer than this is refused.
MAX_LIST_ITEMS = 5000


def path(prefix: str, key: str | int) -> str:
    """`data.name`, `entries.3.keys`: the dotted name of a field."""
    return f"{prefix}.{key}" if prefix else str(key)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def text(
    obj: dict[str, Any], key: str, source: str, prefix: str, *, limit: int = MAX_FIELD_CHARS
) -> str:
    """The cleaned text at `obj[key]` ("" when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CardError(source, path(prefix, key), f"expected text, got {_kind(value)}")
    if len(value) > limit:
        raise CardError(source, path(prefix, key), f"{len(value)} characters (at most {limit})")
    return clean_text(value)


def text_list(
    obj: dict[str, Any], key: str, source: str, prefix: str, *, limit: int = MAX_FIELD_CHARS
) -> tuple[str, ...]:
    """The cleaned texts of the list at `obj[key]` (empty when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CardError(source, path(prefix, key), f"expected a list of texts, got {_kind(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise CardError(source, path(prefix, key), f"{len(value)} items (at most {MAX_LIST_ITEMS})")
    where = path(prefix, key)
    return tuple(
        text({"v": item}, "v", source, "", limit=limit)
        if isinstance(item, str)
        else _bad(source, f"{where}.{i}", item)
        for i, item in enumerate(value)
    )


def _bad(source: str, where: str, value: Any) -> str:
    raise CardError(source, where, f"expected text, got {_kind(value)}")


def flag(obj: dict[str, Any], key: str, source: str, prefix: str, default: bool) -> bool:
    """The true/false at `obj[key]`."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CardError(source, path(prefix, key), f"expected true or false, got {_kind(value)}")
    return value


def number(obj: dict[str, Any], key: str, source: str, prefix: str) -> int | None:
    """The finite number at `obj[key]` as an int (None when absent or null)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CardError(source, path(prefix, key), f"expected a number, got {_kind(value)}")
    if abs(value) > 10**12:
        raise CardError(source, path(prefix, key), "a number out of range")
    return int(value)


def mapping(obj: dict[str, Any], key: str, source: str, prefix: str) -> dict[str, Any]:
    """The object at `obj[key]` ({} when absent or null)."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CardError(source, path(prefix, key), f"expected an object, got {_kind(value)}")
    return value


def clean_json(value: Any) -> Any:
    """`value` (parsed JSON, already bounded in size and depth) with every text cleaned,
    so that what is kept verbatim (extensions) is safe to write as YAML."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
