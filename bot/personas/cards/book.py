"""A lorebook, checked: a card's `character_book`, a `lorebook_v3` file, or SillyTavern
World Info, all as one `Book` of `BookEntry`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.personas.cards import _fields as f
from bot.personas.cards.errors import CardError

__all__ = ["Book", "BookEntry", "parse_book", "parse_world_info"]

# SillyTavern World Info's selectiveLogic numbers, and its position numbers.
_LOGIC = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
_POSITION = {0: "before_char", 1: "after_char", 4: "at_depth"}

# The fields each format names that the entry's own attributes hold; anything else
# an entry has is kept verbatim in `extra`.
_V2_FIELDS = frozenset(
    {
        "keys",
        "content",
        "enabled",
        "insertion_order",
        "case_sensitive",
        "name",
        "comment",
        "priority",
        "constant",
        "secondary_keys",
        "selective",
    }
)
_WI_FIELDS = frozenset(
    {
        "key",
        "keysecondary",
        "content",
        "disable",
        "order",
        "caseSensitive",
        "comment",
        "constant",
        "selective",
        "selectiveLogic",
    }
)


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One lorebook entry; `extra` keeps every field of the source not named here."""

    name: str
    keys: tuple[str, ...]
    content: str
    enabled: bool = True
    constant: bool = False
    order: int = 100
    priority: int | None = None
    case_sensitive: bool | None = None
    secondary_keys: tuple[str, ...] = ()
    selective: bool = False
    selective_logic: str = "and_any"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Book:
    """A lorebook: its settings and entries; `extra` keeps its other fields."""

    source: str
    name: str = ""
    description: str = ""
    scan_depth: int | None = None
    token_budget: int | None = None
    entries: tuple[BookEntry, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _entries(raw: Any, source: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(raw, dict):  # World Info: {"0": {...}, "1": {...}}
        items = [(f"{where}.{k}"[:200], v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(f"{where}.{i}", v) for i, v in enumerate(raw)]
    elif raw is None:
        items = []
    else:
        raise CardError(source, where, "expected a list (or object) of entries")
    if len(items) > f.MAX_LIST_ITEMS:
        raise CardError(source, where, f"{len(items)} entries (at most {f.MAX_LIST_ITEMS})")
    for at, item in items:
        if not isinstance(item, dict):
            raise CardError(source, at, "an entry is an object (keys, content, ...)")
    return items


def _keys(obj: dict[str, Any], key: str, source: str, at: str) -> tuple[str, ...]:
    keys = f.text_list(obj, key, source, at, limit=10_000)
    for i, k in enumerate(keys):
        if len(k.strip()) > 200:
            raise CardError(source, f"{at}.{key}.{i}", "a key longer than 200 characters")
    return tuple(k.strip() for k in keys if k.strip())


def _extra(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    # An empty `extensions` says nothing; exports write one on every entry.
    extra = {k: v for k, v in obj.items() if k not in known and not (k == "extensions" and v == {})}
    return f.clean_json(extra)  # type: ignore[no-any-return]


def parse_book(data: dict[str, Any], source: str, prefix: str) -> Book:
    """A V2 `character_book` or a `lorebook_v3`'s data, checked."""
    entries = []
    for at, item in _entries(data.get("entries"), source, f.path(prefix, "entries")):
        logic = f.number(item.get("extensions") or {}, "selectiveLogic", source, f"{at}.extensions")
        entries.append(
            BookEntry(
                name=f.text(item, "name", source, at, limit=10_000).strip()
                or f.text(item, "comment", source, at).strip()[:100],
                keys=_keys(item, "keys", source, at),
                content=f.text(item, "content", source, at),
                enabled=f.flag(item, "enabled", source, at, True),
                constant=f.flag(item, "constant", source, at, False),
                order=f.number(item, "insertion_order", source, at) or 0,
                priority=f.number(item, "priority", source, at),
                case_sensitive=f.flag(item, "case_sensitive", source, at, False)
                if item.get("case_sensitive") is not None
                else None,
                secondary_keys=_keys(item, "secondary_keys", source, at),
                selective=f.flag(item, "selective", source, at, False),
                selective_logic=_LOGIC.get(logic or 0, "and_any"),
                extra=_extra(item, _V2_FIELDS),
            )
        )
    return Book(
        source=source,
        name=f.text(data, "name", source, prefix, limit=10_000).strip(),
        description=f.text(data, "description", source, prefix),
        scan_depth=f.number(data, "scan_depth", source, prefix),
        token_budget=f.number(data, "token_budget", source, prefix),
        entries=tuple(entries),
        extra=_extra(
            data, frozenset({"name", "description", "scan_depth", "token_budget", "entries"})
        ),
    )


def parse_world_info(data: dict[str, Any], source: str) -> Book:
    """SillyTavern's World Info JSON (`{"entries": {"0": {"key": [...], ...}}}`), checked."""
    entries = []
    for at, item in _entries(data.get("entries"), source, "entries"):
        logic = f.number(item, "selectiveLogic", source, at)
        position = f.number(item, "position", source, at)
        extra = _extra(item, _WI_FIELDS)
        if position is not None:
            extra["position"] = _POSITION.get(position, position)
        entries.append(
            BookEntry(
                name=f.text(item, "comment", source, at).strip()[:100],
                keys=_keys(item, "key", source, at),
                content=f.text(item, "content", source, at),
                enabled=not f.flag(item, "disable", source, at, False),
                constant=f.flag(item, "constant", source, at, False),
                order=f.number(item, "order", source, at) or 0,
                case_sensitive=f.flag(item, "caseSensitive", source, at, False)
                if item.get("caseSensitive") is not None
                else None,
                secondary_keys=_keys(item, "keysecondary", source, at),
                selective=f.flag(item, "selective", source, at, False),
                selective_logic=_LOGIC.get(logic or 0, "and_any"),
                extra=extra,
            )
        )
    return Book(
        source=source,
        name=f.text(data, "name", source, "", limit=10_000).strip(),
        description=f.text(data, "description", source, ""),
        entries=tuple(entries),
        extra=_extra(data, frozenset({"name", "description", "entries"})),
    )
