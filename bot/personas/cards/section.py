"""The `card` section of a persona file: what an imported character card says that
the persona's own fields do not.

The bot speaks from the persona's fields (`system_prompt`, `greeting`, `examples`,
`lore`); an import composes those from the card. This section keeps the card's
fields as the card wrote them (its macros, `{{char}}`, `{{user}}`, ...), so that
`bot personas export` can write the card back, other tools see what its author
wrote, and nothing of the card is lost. Pure data: imports nothing of the project.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CardAsset", "CardInfo"]

# Bounds of what a persona file may hold here (the file itself is at most 1 MiB).
_TEXT = 1_000_000
_ITEMS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardAsset(_Strict):
    """A file that came with the card (an icon, a background, an emotion sprite)."""

    type: str = Field(max_length=100, description="The card's asset type: icon, background, ...")
    name: str = Field(max_length=200, description="The asset's name in the card ('main', ...).")
    ext: str = Field(default="", max_length=20, description="File extension, e.g. 'png'.")
    path: str | None = Field(
        default=None,
        max_length=300,
        description="The file beside the persona file (relative), or unset when the card "
        "only linked to it (`uri` then says where).",
    )
    uri: str | None = Field(
        default=None, max_length=2000, description="Where the card said the asset is."
    )


class CardInfo(_Strict):
    """The card a persona was imported from (or is exported as), field by field."""

    spec: str = Field(
        default="chara_card_v3",
        max_length=40,
        description="The card format it came from: chara_card_v1, chara_card_v2, chara_card_v3.",
    )
    nickname: str | None = Field(
        default=None, max_length=100, description="Another name the character answers to."
    )
    description: str = Field(
        default="", max_length=_TEXT, description="The card's description (in system_prompt)."
    )
    personality: str = Field(
        default="", max_length=_TEXT, description="The card's personality (in system_prompt)."
    )
    scenario: str = Field(
        default="", max_length=_TEXT, description="The card's scenario (in system_prompt)."
    )
    system_prompt: str = Field(
        default="",
        max_length=_TEXT,
        description="The card's own system prompt ({{original}}: the default one); "
        "composed into the persona's system_prompt.",
    )
    post_history_instructions: str = Field(
        default="",
        max_length=_TEXT,
        description="Instructions the card puts after the chat history.",
    )
    first_mes: str = Field(
        default="", max_length=_TEXT, description="The card's first message (the greeting)."
    )
    alternate_greetings: tuple[str, ...] = Field(
        default=(), max_length=_ITEMS, description="Other first messages the card offers."
    )
    group_only_greetings: tuple[str, ...] = Field(
        default=(), max_length=_ITEMS, description="First messages for group chats only."
    )
    mes_example: str = Field(
        default="",
        max_length=_TEXT,
        description="The card's example dialogues (<START> blocks), as written.",
    )
    creator_notes: str = Field(
        default="", max_length=_TEXT, description="The author's notes for people using it."
    )
    tags: tuple[str, ...] = Field(default=(), max_length=_ITEMS, description="The card's tags.")
    creator: str = Field(default="", max_length=200, description="Who made the card.")
    character_version: str = Field(
        default="", max_length=100, description="The card's own version."
    )
    avatar: str | None = Field(
        default=None,
        max_length=300,
        description="The avatar image beside the persona file (relative path).",
    )
    assets: tuple[CardAsset, ...] = Field(
        default=(), max_length=_ITEMS, description="Files that came with the card."
    )
    extensions: dict[str, Any] = Field(
        default_factory=dict,
        description="The card's extensions, kept as they were (other tools' data).",
    )
    book: dict[str, Any] = Field(
        default_factory=dict,
        description="What the card's lorebook says beyond the lore entries: its name, "
        "settings, and each entry's other fields (by entry name), kept for export.",
    )
