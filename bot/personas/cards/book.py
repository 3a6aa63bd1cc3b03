"""A lorebook, checked: a card's `character_book`, a `lorebook_v3` file, or SillyTavern
World Info, all as one `Book` of `BookEntry`s in the persona's lore terms.

Both formats name the same settings differently: a card's book has V2 fields at the
top of an entry and SillyTavern's own in `extensions` (snake_case); World Info has
them at the top in camelCase. `extra` keeps whatever an entry says beyond these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.personas.cards import _fields as f
from bot.personas.cards.errors import CardError

__all__ = [
    "LOGIC_NUMBERS",
    "POSITION_NUMBERS",
    "Book",
    "BookEntry",
    "parse_book",
    "parse_world_info",
]

# SillyTavern's selectiveLogic numbers, and its position numbers (2, 3, 5 and 6, the
# author's note and example messages, have no place here: after the character, and
# the number is kept).
_LOGIC = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
LOGIC_NUMBERS = {v: k for k, v in _LOGIC.items()}
_POSITION = {0: "before_char", 1: "after_char", 4: "at_depth"}
POSITION_NUMBERS = {v: k for k, v in _POSITION.items()}

# setting: (card entry's extensions key, World Info key)
_SETTINGS = {
    "depth": ("depth", "depth"),
    "scan_depth": ("scan_depth", "scanDepth"),
    "match_whole_words": ("match_whole_words", "matchWholeWords"),
    "exclude_recursion": ("exclude_recursion", "excludeRecursion"),
    "prevent_recursion": ("prevent_recursion", "preventRecursion"),
    "sticky": ("sticky", "sticky"),
    "cooldown": ("cooldown", "cooldown"),
    "delay": ("delay", "delay"),
}
_FLAGS = frozenset({"match_whole_words", "exclude_recursion", "prevent_recursion"})

#: A card entry's own fields that `BookEntry` holds (the rest goes to `extra`).
CARD_ENTRY_FIELDS = frozenset(
    {
        "keys",
        "content",
        "enabled",
        "insertion_order",
        "case_sensitive",
        "name",
        "priority",
        "constant",
        "position",
        "selective",
        "secondary_keys",
        "use_regex",
        "extensions",
    }
)
#: The settings an entry's `extensions` may hold that `BookEntry` holds.
CARD_EXTENSION_FIELDS = frozenset(
    {"position", "selectiveLogic", "case_sensitive", *(k for k, _ in _SETTINGS.values())}
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
        "position",
        *(w for _, w in _SETTINGS.values()),
    }
)


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One lorebook entry in the persona's lore terms (None: the source said nothing);
    `extra` keeps every field of the source not named here."""

    name: str
    keys: tuple[str, ...]
    content: str
    comment: str = ""
    enabled: bool = True
    constant: bool = False
    order: int | None = None
    priority: int | None = None
    case_sensitive: bool | None = None
    secondary_keys: tuple[str, ...] = ()
    selective_logic: str = "and_any"
    position: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Book:
    """A lorebook: its settings and entries; `extra` keeps its other fields."""

    source: str
    name: str = ""
    description: str = ""
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive: bool | None = None
    entries: tuple[BookEntry, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: The whole book as written (cleaned text), for a world's `ID.source.json`.
    raw: dict[str, Any] = field(default_factory=dict)


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


def _keys(
    obj: dict[str, Any], key: str, source: str, at: str, regex: bool = False
) -> tuple[str, ...]:
    keys = f.text_list(obj, key, source, at, limit=10_000)
    out = []
    for i, k in enumerate(keys):
        k = k.strip()
        if regex and k and not k.startswith("/"):
            k = f"/{k}/"  # use_regex: the persona writes a regular expression /like this/
        if len(k) > 200:
            raise CardError(source, f"{at}.{key}.{i}", "a key longer than 200 characters")
        if k:
            out.append(k)
    return tuple(out)


def _settings(obj: dict[str, Any], names: dict[str, str], source: str, at: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting, key in names.items():
        if setting in _FLAGS:
            if obj.get(key) is not None:
                out[setting] = f.flag(obj, key, source, at, False)
        else:
            value = f.number(obj, key, source, at)
            if value is not None:
                out[setting] = value
    return out


def _position(value: Any) -> str | None:
    if isinstance(value, str) and value in POSITION_NUMBERS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _POSITION.get(value, "after_char")
    return None


def _clean(obj: dict[str, Any], drop: frozenset[str]) -> dict[str, Any]:
    return f.clean_json({k: v for k, v in obj.items() if k not in drop})  # type: ignore[no-any-return]


def _card_entry(item: dict[str, Any], source: str, at: str) -> BookEntry:
    ext = f.mapping(item, "extensions", source, at)
    ext_at = f"{at}.extensions"
    regex = f.flag(item, "use_regex", source, at, False)
    selective = f.flag(item, "selective", source, at, False)
    logic = f.number(ext, "selectiveLogic", source, ext_at)
    case = item.get("case_sensitive", ext.get("case_sensitive"))
    # SillyTavern reads the number in extensions first (it also says at_depth).
    position = (
        _position(ext["position"]) if ext.get("position") in _POSITION else None
    ) or _position(item.get("position"))
    kept_ext = {
        k: v
        for k, v in ext.items()
        # A position number without an equivalent stays as the card wrote it.
        if k not in CARD_EXTENSION_FIELDS or (k == "position" and v not in _POSITION)
    }
    # Secondary keys of an entry that is not selective are unused: kept as written.
    extra = _clean(item, CARD_ENTRY_FIELDS - (set() if selective else {"secondary_keys"}))
    if kept_ext:
        extra["extensions"] = f.clean_json(kept_ext)
    return BookEntry(
        name=f.text(item, "name", source, at, limit=10_000).strip(),
        comment=f.text(item, "comment", source, at).strip(),
        keys=_keys(item, "keys", source, at, regex),
        content=f.text(item, "content", source, at),
        enabled=f.flag(item, "enabled", source, at, True),
        constant=f.flag(item, "constant", source, at, False),
        order=f.number(item, "insertion_order", source, at),
        priority=f.number(item, "priority", source, at),
        case_sensitive=f.flag({"v": case}, "v", source, f"{at}.case_sensitive", False)
        if case is not None
        else None,
        secondary_keys=_keys(item, "secondary_keys", source, at, regex) if selective else (),
        selective_logic=_LOGIC.get(logic if logic is not None else 0, "and_any"),
        position=position,
        settings=_settings(ext, {s: k for s, (k, _) in _SETTINGS.items()}, source, ext_at),
        extra=extra,
    )


def parse_book(data: dict[str, Any], source: str, prefix: str) -> Book:
    """A V2 `character_book` or a `lorebook_v3`'s data, checked."""
    entries = [
        _card_entry(item, source, at)
        for at, item in _entries(data.get("entries"), source, f.path(prefix, "entries"))
    ]
    recursive = data.get("recursive_scanning")
    known = {"name", "description", "scan_depth", "token_budget", "recursive_scanning", "entries"}
    extra = _clean(data, frozenset(known))
    if extra.get("extensions") == {}:
        del extra["extensions"]
    return Book(
        source=source,
        name=f.text(data, "name", source, prefix, limit=10_000).strip(),
        description=f.text(data, "description", source, prefix),
        scan_depth=f.number(data, "scan_depth", source, prefix),
        token_budget=f.number(data, "token_budget", source, prefix),
        recursive=f.flag(data, "recursive_scanning", source, prefix, False)
        if recursive is not None
        else None,
        entries=tuple(entries),
        extra=extra,
        raw=f.clean_json(data),
    )


def parse_world_info(data: dict[str, Any], source: str) -> Book:
    """SillyTavern's World Info JSON (`{"entries": {"0": {"key": [...], ...}}}`), checked."""
    entries = []
    for at, item in _entries(data.get("entries"), source, "entries"):
        logic = f.number(item, "selectiveLogic", source, at)
        selective = f.flag(item, "selective", source, at, True)
        case = item.get("caseSensitive")
        entries.append(
            BookEntry(
                name="",
                comment=f.text(item, "comment", source, at).strip(),
                keys=_keys(item, "key", source, at),
                content=f.text(item, "content", source, at),
                enabled=not f.flag(item, "disable", source, at, False),
                constant=f.flag(item, "constant", source, at, False),
                order=f.number(item, "order", source, at),
                case_sensitive=f.flag(item, "caseSensitive", source, at, False)
                if case is not None
                else None,
                secondary_keys=_keys(item, "keysecondary", source, at) if selective else (),
                selective_logic=_LOGIC.get(logic if logic is not None else 0, "and_any"),
                position=_position(item.get("position")),
                settings=_settings(item, {s: w for s, (_, w) in _SETTINGS.items()}, source, at),
                extra=_clean(item, _WI_FIELDS),
            )
        )
    return Book(
        source=source,
        name=f.text(data, "name", source, "", limit=10_000).strip(),
        description=f.text(data, "description", source, ""),
        entries=tuple(entries),
        extra=_clean(data, frozenset({"name", "description", "entries"})),
        raw=f.clean_json(data),
    )
