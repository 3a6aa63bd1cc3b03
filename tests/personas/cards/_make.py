"""Cards made by hand in every format, for the import tests: JSON V1/V2/V3, PNG with
text chunks (Pillow, or chunk by chunk with zlib and struct for broken ones), CHARX
zips, World Info and lorebook_v3."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

FULL_V3: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Seraphina",
        "nickname": "Sera",
        "description": "{{char}} is a guardian of the forest who protects {{user}}.",
        "personality": "kind, protective, {{random:calm,serene}}",
        "scenario": "{{user}} wakes up in {{char}}'s glade on a {{weekday}}.",
        "first_mes": "*{{char}} smiles at {{user}}* It is {{time}} already.",
        "alternate_greetings": ["Hello again, {{user}}.", "Welcome back."],
        "group_only_greetings": ["Hello, everyone."],
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: I am {{char}}.\n"
        "<START>\n{{user}}: Hi\n{{char}}: Hello, {{user}}!",
        "system_prompt": "{{original}} Stay gentle.",
        "post_history_instructions": "Keep {{char}} in character.",
        "creator_notes": "A gentle guardian for calm chats.\n\nTested with many models.",
        "tags": ["fantasy", "guardian"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "x", "depth": 4}},
        "character_book": {
            "name": "The glade",
            "scan_depth": 6,
            "token_budget": 300,
            "extensions": {"custom": 1},
            "entries": [
                {
                    "keys": ["glade", "clearing"],
                    "content": "The glade is {{char}}'s home.",
                    "enabled": True,
                    "insertion_order": 10,
                    "name": "glade",
                    "secondary_keys": ["forest"],
                    "selective": True,
                    "extensions": {"position": 1, "selectiveLogic": 3, "role": 1, "sticky": 2},
                },
                {
                    "keys": [],
                    "content": "{{char}} never lies.",
                    "constant": True,
                    "enabled": True,
                    "insertion_order": 5,
                    "case_sensitive": True,
                    "position": "before_char",
                },
                {"keys": ["off"], "content": "disabled", "enabled": False, "insertion_order": 1},
            ],
        },
    },
}


def v2(**data: Any) -> dict[str, Any]:
    """A V2 card with `data` (a name by default)."""
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Ann", **data}}


def v3(**data: Any) -> dict[str, Any]:
    """A V3 card with `data` (a name by default)."""
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Ann", **data}}


def b64(card: Any) -> str:
    return base64.b64encode(json.dumps(card).encode()).decode()


def png_with(texts: dict[str, str], size: int = 8) -> bytes:
    """A real PNG (Pillow) with tEXt chunks."""
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 200)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_card(card: Any, keyword: str = "chara") -> bytes:
    return png_with({keyword: b64(card)})


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk, with its right CRC unless `crc` is given."""
    value = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", value)


def png_chunks(*chunks: bytes) -> bytes:
    """A PNG made of an 1x1 image's header and data, `chunks`, and IEND."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    data = chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + header + data + b"".join(chunks) + chunk(b"IEND", b"")


def charx(card: Any, members: dict[str, bytes] | None = None) -> bytes:
    """A CHARX zip: card.json and `members`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        if card is not None:
            z.writestr("card.json", json.dumps(card))
        for name, body in (members or {}).items():
            z.writestr(name, body)
    return out.getvalue()


def world_info() -> dict[str, Any]:
    """SillyTavern World Info JSON, as its editor saves it."""
    return {
        "name": "Old Town",
        "entries": {
            "0": {
                "uid": 0,
                "key": ["tavern", "inn"],
                "keysecondary": ["ale"],
                "comment": "The tavern",
                "content": "The Prancing Pony is the town's tavern.",
                "constant": False,
                "selective": True,
                "selectiveLogic": 2,
                "order": 100,
                "position": 4,
                "depth": 2,
                "disable": False,
                "caseSensitive": None,
                "matchWholeWords": True,
                "sticky": 2,
                "cooldown": 1,
            },
            "1": {
                "uid": 1,
                "key": [],
                "comment": "World",
                "content": "Magic is rare.",
                "constant": True,
                "order": 50,
                "position": 0,
                "disable": False,
            },
        },
    }


def lorebook_v3() -> dict[str, Any]:
    return {
        "spec": "lorebook_v3",
        "data": {
            "name": "Stars",
            "scan_depth": 3,
            "token_budget": 500,
            "entries": [
                {
                    "keys": ["orion"],
                    "content": "Orion is a hunter.",
                    "enabled": True,
                    "insertion_order": 1,
                    "use_regex": True,
                    "name": "/orion/i",
                    "extensions": {},
                }
            ],
            "extensions": {},
        },
    }
