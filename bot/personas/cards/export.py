"""A persona → a Character Card V3: JSON, or a PNG with `ccv3` (V3) and `chara` (V2,
with V1's top-level fields) text chunks, as SillyTavern writes them, or a CHARX
(a zip with `card.json` and the avatar and assets, `export_charx`).

The card's fields come from the persona's `card` section wherever the persona
still says what the section says; what a moderator changed is written from the
persona itself (`{{ persona.name }}` back to `{{char}}`, ...). What only this bot
uses (the id, an edited system prompt, the language) goes into
`extensions.personabot`, so that importing the card again gives the same persona.
Jinja logic beyond the macros is written as text: a card is data.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bot.personas.cards.book import LOGIC_NUMBERS, POSITION_NUMBERS
from bot.personas.cards.build import (
    PERSONABOT_EXTENSION,
    POST_HISTORY_ENTRY,
    compose_system_prompt,
)
from bot.personas.cards.card import Card
from bot.personas.cards.dialogue import parse_examples, write_examples
from bot.personas.cards.errors import CardError
from bot.personas.cards.macros import MacroContext, from_template, to_lore, to_template
from bot.personas.cards.png import PNG_SIGNATURE, PngError, blank_png, write_text_chunks
from bot.personas.cards.section import CardInfo
from bot.personas.loader import LoadedPersona
from bot.personas.lorebook.schema import LoreEntry
from bot.personas.schema import Persona

__all__ = ["card_v2", "card_v3", "export_card"]

# V3 fields that a V2 card does not have.
_V3_ONLY = ("nickname", "group_only_greetings", "assets", "creation_date", "modification_date")


def _as_card(persona: Persona, info: CardInfo) -> Card:
    return Card(
        source="",
        spec=info.spec,
        name=persona.name,
        description=info.description,
        personality=info.personality,
        scenario=info.scenario,
        system_prompt=info.system_prompt,
        mes_example=info.mes_example,
    )


def _examples(persona: Persona) -> list[list[dict[str, str]]]:
    return [[{t.role: t.content} for t in dialogue] for dialogue in persona.examples]


def _entry(entry: LoreEntry, name: str, kept: dict[str, Any]) -> dict[str, Any]:
    extra = dict(kept)
    ext: dict[str, Any] = dict(extra.pop("extensions", None) or {})
    if entry.position != "after_char":
        ext["position"] = POSITION_NUMBERS[entry.position]
    if entry.secondary_keys and entry.selective_logic != "and_any":
        ext["selectiveLogic"] = LOGIC_NUMBERS[entry.selective_logic]
    settings = {
        "depth": (entry.depth, 4),
        "scan_depth": (entry.scan_depth, None),
        "match_whole_words": (entry.match_whole_words, True),
        "exclude_recursion": (entry.exclude_recursion, False),
        "prevent_recursion": (entry.prevent_recursion, False),
        "sticky": (entry.sticky, 0),
        "cooldown": (entry.cooldown, 0),
        "delay": (entry.delay, 0),
    }
    ext.update({key: value for key, (value, default) in settings.items() if value != default})
    item: dict[str, Any] = {
        "keys": list(entry.keys),
        "content": entry.text,
        "extensions": ext,
        "enabled": entry.enabled,
        "insertion_order": entry.order,
        "case_sensitive": entry.case_sensitive,
        "constant": entry.is_constant,
        "name": name,
        "position": "before_char" if entry.position == "before_char" else "after_char",
    }
    if entry.priority:
        item["priority"] = entry.priority
    if entry.secondary_keys:
        item["selective"] = True
        item["secondary_keys"] = list(entry.secondary_keys)
    item.update({k: v for k, v in extra.items() if k not in item})
    return item


def _book(persona: Persona, info: CardInfo) -> dict[str, Any] | None:
    meta = info.book
    found = meta.get("entries")
    extras: dict[str, Any] = found if isinstance(found, dict) else {}
    entries: list[dict[str, Any]] = []
    for i, entry in enumerate(persona.lore.entries):
        if entry.name == POST_HISTORY_ENTRY:
            continue  # the card's post_history_instructions
        name = entry.name or f"entry {i}"
        kept = extras.get(name)
        entries.append(_entry(entry, name, kept if isinstance(kept, dict) else {}))
    unused = meta.get("unused_entries")
    if isinstance(unused, list):
        entries.extend(e for e in unused if isinstance(e, dict))
    if not entries and not meta:
        return None
    book: dict[str, Any] = {
        "name": meta.get("name", ""),
        "description": meta.get("description", ""),
        "scan_depth": persona.lore.scan_depth,
        "token_budget": persona.lore.budget_tokens,
        "recursive_scanning": persona.lore.recursive,
        "extensions": {},
        "entries": entries,
    }
    other = meta.get("other")
    if isinstance(other, dict):
        mapped = ("name", "description", "scan_depth", "token_budget", "entries")
        book.update({k: v for k, v in other.items() if k not in mapped})
    return book


def card_v3(persona: Persona) -> dict[str, Any]:
    """The persona as a Character Card V3 object (`spec: chara_card_v3`)."""
    info = persona.card or CardInfo()
    ctx = MacroContext(persona.name)
    examples = _examples(persona)
    parsed = parse_examples(info.mes_example, ctx) if info.mes_example.strip() else []
    fits = parsed is not None
    own: dict[str, Any] = {"id": persona.id, "spec": info.spec}
    if persona.language != "en":
        own["language"] = persona.language
    description = info.description
    if persona.system_prompt != compose_system_prompt(_as_card(persona, info), fits):
        own["system_prompt"] = from_template(persona.system_prompt)
        description = description or own["system_prompt"]
    greeting = persona.greeting or ""
    first_mes = (
        info.first_mes
        if to_template(info.first_mes.strip(), ctx) == greeting
        else from_template(greeting)
    )
    mes_example = info.mes_example if (parsed or []) == examples else write_examples(examples)
    instructions = next((e.text for e in persona.lore.entries if e.name == POST_HISTORY_ENTRY), "")
    if instructions != to_lore(info.post_history_instructions.strip(), ctx):
        info = info.model_copy(update={"post_history_instructions": instructions})
    extensions = dict(info.extensions)
    extensions[PERSONABOT_EXTENSION] = own
    data: dict[str, Any] = {
        "name": persona.name,
        "description": description,
        "personality": info.personality,
        "scenario": info.scenario,
        "first_mes": first_mes,
        "mes_example": mes_example,
        "creator_notes": info.creator_notes or persona.description,
        "system_prompt": info.system_prompt,
        "post_history_instructions": info.post_history_instructions,
        "alternate_greetings": list(info.alternate_greetings),
        "group_only_greetings": list(info.group_only_greetings),
        "tags": list(info.tags),
        "creator": info.creator,
        "character_version": info.character_version,
        "extensions": extensions,
    }
    nicknames = persona.groups.nicknames
    nickname = info.nickname if info.nickname in nicknames or not nicknames else nicknames[0]
    if nickname:
        data["nickname"] = nickname
    book = _book(persona, info)
    if book is not None:
        data["character_book"] = book
    assets = [
        {"type": a.type, "uri": a.uri, "name": a.name, "ext": a.ext}
        for a in info.assets
        if a.uri and a.uri.startswith(("ccdefault:", "http://", "https://", "data:"))
    ]
    if assets:
        data["assets"] = assets
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def card_v2(v3: dict[str, Any]) -> dict[str, Any]:
    """The V2 fallback of a V3 card, with V1's fields at the top level as well."""
    data = {k: v for k, v in v3["data"].items() if k not in _V3_ONLY}
    top = {
        k: data[k]
        for k in ("name", "description", "personality", "scenario", "first_mes", "mes_example")
    }
    return {**top, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def _b64(card: dict[str, Any]) -> bytes:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))


def _avatar(loaded: LoadedPersona) -> bytes:
    info = loaded.persona.card
    if info is None or not info.avatar:
        return blank_png()
    base = loaded.path.parent.resolve()
    path = (base / info.avatar).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return blank_png()  # an avatar outside the persona's folder is never read
    with path.open("rb") as fh:
        image = fh.read(32 * 1024 * 1024)
    return image if image.startswith(PNG_SIGNATURE) else blank_png()


def export_card(loaded: LoadedPersona, out: Path) -> Path:
    """Write the persona as a V3 card to `out`: PNG when it ends in `.png`, CHARX when
    it ends in `.charx`, else JSON.

    Written to a temporary file beside `out` and renamed, so `out` is never half a card.
    """
    v3 = card_v3(loaded.persona)
    if out.suffix.lower() == ".charx":
        from bot.personas.cards.charx_write import charx_bytes

        body = charx_bytes(loaded, v3)
    elif out.suffix.lower() == ".png":
        try:
            body = write_text_chunks(
                _avatar(loaded), {"chara": _b64(card_v2(v3)), "ccv3": _b64(v3)}
            )
        except PngError as exc:
            raise CardError(str(loaded.path), "card.avatar", f"not a usable PNG ({exc})") from None
    else:
        body = (json.dumps(v3, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        Path(tmp).replace(out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
