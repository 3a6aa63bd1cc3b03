"""The typed shape of a persona's `lore` section and of a shared world file.

SillyTavern's World Info, in this project's names (CARDS maps a card's
`character_book` onto these fields; see /work/helpers/CARDS.md):

    keys / secondary_keys + selective_logic   which texts fire an entry
    constant (or the older `always`)          in every prompt
    position: before_char|after_char|at_depth where the entry goes (+ depth)
    order                                     place within its position (higher: later)
    priority                                  who wins when the budget is short
    sticky / cooldown / delay                 timed effects, counted in messages
    exclude_recursion / prevent_recursion     recursion, bounded by Lore.max_recursion

Keys are bounded here, at load: a regex key (`/pattern/flags`) that does not compile,
or that runs away on hostile probe texts, is a problem at its line in the file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from bot.personas.lorebook.keys import check_key

__all__ = ["POSITIONS", "Lore", "LoreEntry", "Position", "SelectiveLogic", "World", "WorldId"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: How `secondary_keys` combine with a matching primary key (SillyTavern's names):
#: and_any (and one secondary key), and_all (and every one), not_any (and none),
#: not_all (and not every one).
SelectiveLogic = Literal["and_any", "and_all", "not_any", "not_all"]

#: Where an entry goes: the system message before or after the persona's prompt, or
#: a system note `depth` messages from the end of the conversation.
Position = Literal["before_char", "after_char", "at_depth"]

#: The positions in prompt order.
POSITIONS: tuple[Position, ...] = ("before_char", "after_char", "at_depth")


def _lore_key(value: str) -> str:
    key = value.strip()
    if not key:
        raise ValueError("a key is blank: write the word or phrase that triggers the entry")
    problem = check_key(key)
    if problem:
        raise ValueError(problem)
    return key


LoreKey = Annotated[
    str,
    Field(
        max_length=200,
        # For editors; `_lore_key` refuses blank keys with a clearer message.
        json_schema_extra={"pattern": r"\S"},
        description="A word or phrase that triggers the entry, or a regular expression "
        "written /pattern/flags (flags: i, s, m, x, u).",
    ),
    AfterValidator(_lore_key),
]

WorldId = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="A shared world file: personas/worlds/ID.yaml.",
    ),
]

class LoreEntry(_Section):
    """One piece of what the persona knows, shown when it applies.

    A `constant` (or `always`) entry is in every prompt; any other entry is shown when
    one of its `keys` occurs in the new message or the recent history (`scan_depth`),
    and its `secondary_keys` agree by `selective_logic`.
    """

    model_config = ConfigDict(
        # Editors flag a keyless entry too: keys are required unless constant.
        json_schema_extra={
            "if": {
                "not": {
                    "anyOf": [
                        {"required": ["always"], "properties": {"always": {"const": True}}},
                        {"required": ["constant"], "properties": {"constant": {"const": True}}},
                    ]
                }
            },
            "then": {"required": ["keys"], "properties": {"keys": {"minItems": 1}}},
        },
    )

    name: str | None = Field(
        default=None,
        max_length=100,
        description="A label for logs and preview, e.g. 'the lighthouse'; also what the "
        "entry's timers are kept under (unnamed: its place in the list).",
    )
    enabled: bool = Field(default=True, description="false: the entry is never shown.")
    # `always` and `constant` come before `keys`: the keys validator reads them.
    always: bool = Field(
        default=False, description="The older name of `constant` (either one works)."
    )
    constant: bool = Field(
        default=False,
        description="Show the entry in every prompt, keys or not (its keys are then unused).",
    )
    keys: tuple[LoreKey, ...] = Field(
        default=(),
        max_length=100,
        # Validated even when absent, so that a keyless entry is reported at `keys`.
        validate_default=True,
        description="Words or phrases that trigger the entry. Matched case-insensitively "
        "(unless case_sensitive) as whole words (unless match_whole_words is false), so "
        "'cat' does not fire on 'category'; keys with Chinese, Japanese or Korean "
        "characters match where they occur, as those scripts have no spaces between words. "
        "/pattern/flags is a regular expression (its own flags decide case). Required "
        "unless constant.",
        examples=[["lighthouse", "the old keeper"]],
    )
    secondary_keys: tuple[LoreKey, ...] = Field(
        default=(),
        max_length=100,
        description="Further keys, combined with a matching primary key by "
        "selective_logic. Empty: the primary keys decide alone.",
    )
    selective_logic: SelectiveLogic = Field(
        default="and_any",
        description="and_any: also one secondary key; and_all: every secondary key; "
        "not_any: no secondary key; not_all: not every secondary key.",
    )
    text: str = Field(
        max_length=20_000,
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
        description="What the persona knows, told to it in the prompt.",
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Higher goes first when not everything fits the lore budget.",
    )
    order: int = Field(
        default=100,
        ge=-10_000,
        le=10_000,
        description="Insertion order within the entry's position: higher comes later "
        "(closer to the end of the prompt), as in SillyTavern.",
    )
    position: Position = Field(
        default="after_char",
        description="before_char: in the system message before the persona's prompt; "
        "after_char: after it (the default, kind to the model server's prefix cache); "
        "at_depth: a system note `depth` messages from the end of the conversation.",
    )
    depth: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="For position at_depth: how many messages from the end (0: after the "
        "newest). Deeper than the history: at its start.",
    )
    case_sensitive: bool = Field(
        default=False, description="Match the keys only with the exact capitalisation."
    )
    match_whole_words: bool = Field(
        default=True,
        description="Keys match whole words only; false: anywhere, even inside a word.",
    )
    scan_depth: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="History messages searched for this entry's keys; unset: the lore's "
        "scan_depth.",
    )
    exclude_recursion: bool = Field(
        default=False, description="Not fired by the text of other entries, only by the chat."
    )
    prevent_recursion: bool = Field(
        default=False, description="This entry's text does not fire other entries."
    )
    sticky: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Once fired, stays in the prompt for this many messages, keys or not.",
    )
    cooldown: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Once fired (and its sticky time over), cannot fire for this many "
        "messages.",
    )
    delay: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Cannot fire until the conversation has at least this many messages.",
    )

    @property
    def is_constant(self) -> bool:
        """In every prompt (subject to the timers and the budget)."""
        return self.constant or self.always

    @field_validator("keys")
    @classmethod
    def _keys_unless_constant(
        cls, keys: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        # When `always` or `constant` is itself invalid it is missing here; that error
        # says enough.
        if not keys and info.data.get("always") is False and info.data.get("constant") is False:
            raise ValueError(
                "an entry needs at least one key, unless it is shown always "
                "(constant: true, or always: true)"
            )
        return keys

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("the text is empty: write what the persona knows")
        return text.strip()


class Lore(_Section):
    """What the persona knows beyond its system prompt, in entries shown when they apply.

    Like SillyTavern's lorebook (World Info): constant entries and entries triggered
    by keywords, placed before or after the persona's prompt or at a depth in the
    conversation, packed into a token budget of their own, with recursion and timed
    effects. `worlds` adds the entries of shared world files.
    """

    budget_tokens: int = Field(
        default=400,
        ge=0,
        le=32768,
        description="Most tokens the lore may take in a prompt, all positions together, "
        "counted with the model's tokenizer (0: no lore). Entries are packed by priority; "
        "one that does not fit is left out.",
    )
    scan_depth: int = Field(
        default=4,
        ge=0,
        le=100,
        description="How many recent history messages are searched for keys, besides the "
        "new message (0: the new message only).",
    )
    recursive: bool = Field(
        default=False,
        description="The text of fired entries is searched for the keys of other entries.",
    )
    max_recursion: int = Field(
        default=3,
        ge=0,
        le=10,
        description="With recursive: at most this many rounds of entries firing entries.",
    )
    worlds: tuple[WorldId, ...] = Field(
        default=(),
        max_length=32,
        description="Shared world files whose entries this persona also uses, by id "
        "(personas/worlds/ID.yaml), after its own entries.",
    )
    entries: tuple[LoreEntry, ...] = Field(
        default=(), max_length=2000, description="The lore entries."
    )


class World(_Section):
    """A world file (personas/worlds/ID.yaml): lore entries several personas share.

    A world may include other worlds; a cycle is refused at load."""

    model_config = ConfigDict(title="World")

    id: WorldId
    name: str = Field(default="", max_length=100, description="Display name.")
    description: str = Field(default="", max_length=2000, description="What the world is.")
    worlds: tuple[WorldId, ...] = Field(
        default=(), max_length=32, description="Further worlds this one includes, by id."
    )
    entries: tuple[LoreEntry, ...] = Field(
        default=(), max_length=2000, description="The world's lore entries."
    )
