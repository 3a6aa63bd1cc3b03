"""A checked `Card` → the data of a persona file; a `Book` → lore entries or a world.

The persona speaks from its own fields, composed from the card:

    system_prompt  the card's system prompt ({{original}}: SillyTavern's main prompt;
                   that prompt when the card has none), its description,
                   "{{char}}'s personality: ...", "Scenario: ...", and the example
                   dialogue when it is not in the user/character shape
    lore           character_book's entries, and post_history_instructions as a
                   constant entry at depth 0 (after the history)
    greeting       first_mes
    examples       mes_example's <START> blocks
    description    the first paragraph of creator_notes
    groups         the nickname, which addresses the persona in group channels

and the `card` section keeps every field as the card wrote it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from bot.personas.cards.book import Book, BookEntry
from bot.personas.cards.card import Card
from bot.personas.cards.dialogue import parse_examples
from bot.personas.cards.macros import (
    DEFAULT_MAIN_PROMPT,
    MacroContext,
    to_lore,
    to_plain,
    to_template,
)
from bot.personas.schema import Lore

__all__ = [
    "PERSONABOT_EXTENSION",
    "POST_HISTORY_ENTRY",
    "book_lore",
    "compose_system_prompt",
    "persona_data",
    "persona_id",
    "world_data",
]

#: The key of a card's `extensions` that holds what only this bot uses (written by
#: `bot personas export`); its texts are card text like any other.
PERSONABOT_EXTENSION = "personabot"

#: The name of the lore entry that holds a card's post_history_instructions.
POST_HISTORY_ENTRY = "post-history instructions"

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.IGNORECASE)


def persona_id(name: str) -> str:
    """A safe persona id from a card's name: ASCII letters and digits joined by '-',
    or `card-<hash>` when nothing of the name is ASCII (汉字, emoji)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].strip("-")
    if not slug:
        return "card-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:10]
    return slug


def _context(card: Card, original: str = "") -> MacroContext:
    fields = {
        "description": card.description,
        "personality": card.personality,
        "scenario": card.scenario,
        "mes_example": card.mes_example,
        "system_prompt": card.system_prompt,
        "post_history_instructions": card.post_history_instructions,
        "persona": "",  # the user's own persona in SillyTavern: none here
    }
    return MacroContext(card.name, original, fields)


def compose_system_prompt(card: Card, examples_fit: bool) -> str:
    """The persona's system prompt (a template) composed from the card's fields."""
    # {{original}} is SillyTavern's main prompt, itself card text with macros.
    main = _ORIGINAL.sub(
        lambda _: DEFAULT_MAIN_PROMPT, card.system_prompt.strip() or "{{original}}"
    )
    parts = [to_template(main, _context(card))]
    ctx = _context(card)
    if card.description.strip():
        parts.append(to_template(card.description.strip(), ctx))
    if card.personality.strip():
        parts.append(to_template("{{char}}'s personality: " + card.personality.strip(), ctx))
    if card.scenario.strip():
        parts.append(to_template("Scenario: " + card.scenario.strip(), ctx))
    if card.mes_example.strip() and not examples_fit:
        parts.append(to_template("Example dialogue:\n" + card.mes_example.strip(), ctx))
    return "\n\n".join(p for p in parts if p.strip())


def _lore_entry(entry: BookEntry, name: str, text: str) -> dict[str, Any]:
    """The entry in the persona's lore schema, with only what differs from its defaults."""
    item: dict[str, Any] = {"name": name}
    if not entry.enabled:
        item["enabled"] = False
    if entry.constant:
        item["constant"] = True
    if entry.keys:
        item["keys"] = list(entry.keys)
    if entry.secondary_keys:
        item["secondary_keys"] = list(entry.secondary_keys)
        if entry.selective_logic != "and_any":
            item["selective_logic"] = entry.selective_logic
    item["text"] = text
    if entry.priority:
        item["priority"] = max(-1000, min(1000, entry.priority))
    if entry.order is not None and entry.order != 100:
        item["order"] = max(-10_000, min(10_000, entry.order))
    if entry.position and entry.position != "after_char":
        item["position"] = entry.position
    if entry.case_sensitive:
        item["case_sensitive"] = True
    for key, value in entry.settings.items():
        if key in ("depth",) and value == 4:
            continue
        if key == "match_whole_words" and value is True:
            continue
        if value in (0, False) and key not in ("depth", "scan_depth", "match_whole_words"):
            continue
        bound = {"depth": 1000, "scan_depth": 100}.get(key, 10_000)
        item[key] = value if isinstance(value, bool) else max(0, min(bound, value))
    return item


def book_lore(book: Book, card: Card | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The lore entries of `book` in the persona schema, and what else the book says
    (its name and other fields, each entry's other fields by entry name, and the
    entries no lore entry can hold: empty, or keyless and not constant), kept for export."""
    ctx = MacroContext(card.name if card else "", "", {})
    entries: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    unused: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, entry in enumerate(book.entries):
        text = to_lore(entry.content, ctx).strip()
        if not text or not (entry.keys or entry.constant):
            unused.append(
                {
                    "name": entry.name,
                    "keys": list(entry.keys),
                    "content": entry.content,
                    "enabled": entry.enabled,
                    "constant": entry.constant,
                    **entry.extra,
                }
            )
            continue
        label = entry.name or entry.comment or (entry.keys[0] if entry.keys else "")
        name = (label or f"entry {i}")[:90]
        while name in names:
            name = f"{name[:80]} ({i})"
        names.add(name)
        entries.append(_lore_entry(entry, name, text))
        if entry.extra:
            extra[name] = entry.extra
    meta: dict[str, Any] = {}
    for key, value in (("name", book.name), ("description", book.description)):
        if value:
            meta[key] = value
    if book.extra:  # the book's other fields: its extensions, ...
        meta["other"] = book.extra
    if extra:
        meta["entries"] = extra
    if unused:
        meta["unused_entries"] = unused
    return entries, meta


def _lore_settings(book: Book) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    # Only what differs from the persona schema's defaults: the file stays short.
    defaults = Lore()
    if book.token_budget is not None and book.token_budget > 0:
        budget = max(0, min(32768, book.token_budget))
        if budget != defaults.budget_tokens:
            settings["budget_tokens"] = budget
    if book.scan_depth is not None:
        depth = max(0, min(100, book.scan_depth))
        if depth != defaults.scan_depth:
            settings["scan_depth"] = depth
    if book.recursive:
        settings["recursive"] = True
    return settings


def post_history_entry(text: str) -> dict[str, Any]:
    """The lore entry that carries a card's post-history instructions."""
    return {
        "name": POST_HISTORY_ENTRY,
        "constant": True,
        "text": text,
        "priority": 1000,
        "position": "at_depth",
        "depth": 0,
    }


def _override(card: Card) -> dict[str, Any]:
    value = card.extensions.get(PERSONABOT_EXTENSION)
    return value if isinstance(value, dict) else {}


def persona_data(card: Card, avatar: str | None, assets: list[dict[str, Any]]) -> dict[str, Any]:
    """The persona file's data for `card` (`avatar`, `assets`: the files written
    beside it, relative to the persona file). Not yet validated."""
    ctx = _context(card)
    own = _override(card)
    examples = parse_examples(card.mes_example, ctx) if card.mes_example.strip() else []
    wanted_id = own.get("id")
    data: dict[str, Any] = {
        "version": 1,
        "id": wanted_id
        if isinstance(wanted_id, str) and _ID.match(wanted_id)
        else persona_id(card.name),
        "name": card.name,
    }
    notes = card.creator_notes.strip().split("\n\n", 1)[0].strip()
    if notes:
        data["description"] = to_plain(notes, ctx)[:500]
    language = own.get("language")
    if isinstance(language, str) and re.match(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", language):
        data["language"] = language
    edited = own.get("system_prompt")
    if isinstance(edited, str) and edited.strip():
        data["system_prompt"] = to_template(edited, ctx)
    else:
        data["system_prompt"] = compose_system_prompt(card, examples is not None)
    if card.first_mes.strip():
        data["greeting"] = to_template(card.first_mes.strip(), ctx)
    if examples:
        data["examples"] = examples
    if card.nickname and len(card.nickname) <= 64 and card.nickname != card.name:
        # In groups, the nickname addresses the persona as its name does.
        data["groups"] = {"nicknames": [card.nickname]}
    spec = own.get("spec")  # the format it first came from, across our own exports
    known = ("chara_card_v1", "chara_card_v2", "chara_card_v3")
    section: dict[str, Any] = {"spec": spec if spec in known else card.spec}
    entries: list[dict[str, Any]] = []
    lore: dict[str, Any] = {}
    if card.book is not None:
        entries, meta = book_lore(card.book, card)
        lore = _lore_settings(card.book)
        if meta:
            section["book"] = meta
    instructions = to_lore(card.post_history_instructions.strip(), ctx)
    if instructions:
        # After the history, as SillyTavern puts them: a constant entry at depth 0.
        entries = [*entries, post_history_entry(instructions)]
    if entries:
        lore["entries"] = entries
    if lore:
        data["lore"] = lore
    extensions = {k: v for k, v in card.extensions.items() if k != PERSONABOT_EXTENSION}
    for key in (
        "nickname",
        "description",
        "personality",
        "scenario",
        "system_prompt",
        "post_history_instructions",
        "first_mes",
        "mes_example",
        "creator_notes",
        "creator",
        "character_version",
    ):
        value = getattr(card, key)
        if value:
            section[key] = value
    for key in ("alternate_greetings", "group_only_greetings", "tags"):
        value = getattr(card, key)
        if value:
            section[key] = list(value)
    if avatar:
        section["avatar"] = avatar
    if assets:
        section["assets"] = assets
    if extensions:
        section["extensions"] = extensions
    data["card"] = dict(sorted(section.items(), key=lambda kv: _SECTION_ORDER.get(kv[0], 99)))
    return data


_SECTION_ORDER = {
    k: i
    for i, k in enumerate(
        (
            "spec",
            "nickname",
            "tags",
            "creator",
            "character_version",
            "creator_notes",
            "description",
            "personality",
            "scenario",
            "system_prompt",
            "post_history_instructions",
            "first_mes",
            "alternate_greetings",
            "group_only_greetings",
            "mes_example",
            "avatar",
            "assets",
            "extensions",
            "book",
        )
    )
}


def world_data(book: Book, world_id: str) -> dict[str, Any]:
    """A shared world file (`worlds/ID.yaml`) for a standalone lorebook, in the lore
    schema's `World` shape (the book as written is kept beside it, `ID.source.json`)."""
    entries, _ = book_lore(book, None)
    data: dict[str, Any] = {"id": world_id, "name": (book.name or world_id)[:100]}
    if book.description:
        data["description"] = book.description[:2000]
    data["entries"] = entries
    return data
