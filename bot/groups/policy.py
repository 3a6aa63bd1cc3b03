"""When a persona speaks in a group: the settings, as typed models.

`SpeakPolicy` is a persona file's `groups:` section (its default in every group);
`GroupSettings` is the bot config's `groups` section: the per-channel budget, the
bot-chain stop, and per-channel overrides (`ChannelGroup`): which personas are
present in a channel and how each speaks there (`SpeakOverride`).

This module imports nothing of the project (the persona schema and the config
import it), so both stay leaves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["ChannelGroup", "GroupSettings", "SpeakMode", "SpeakOverride", "SpeakPolicy"]

#: always: every message (within budget and cooldown); addressed: only when
#: mentioned, replied to, named (name or nickname) or a keyword is said;
#: talkative: addressed, and otherwise with probability `talkativeness` once the
#: cooldown since its last unprompted reply has passed.
SpeakMode = Literal["addressed", "always", "talkative"]

#: A name or keyword: one line of visible text, matched as a whole word.
Word = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\n\r\t]+$"),
]
PersonaRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpeakPolicy(_Model):
    """How a persona speaks in groups (never in DMs, where it always answers)."""

    mode: SpeakMode = Field(
        default="addressed",
        description="addressed: only when mentioned, replied to, named or a keyword is "
        "said; always: every message; talkative: addressed, and otherwise now and then "
        "(talkativeness, cooldown_s).",
    )
    talkativeness: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="talkative mode: the chance of speaking to a message nobody addressed it in.",
    )
    cooldown_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="Seconds after its last unprompted reply in a channel before it speaks "
        "unprompted again (always and talkative modes; being addressed is never cooled down).",
    )
    nicknames: tuple[Word, ...] = Field(
        default=(),
        max_length=20,
        description="Names besides `name` that address it when said as a whole word.",
    )
    keywords: tuple[Word, ...] = Field(
        default=(),
        max_length=50,
        description="Whole words that make it speak (one persona answers, not every one).",
    )
    answer_bots: bool = Field(
        default=False,
        description="Answer other bots (and the bot's other personas); off: never. A "
        "bot-to-bot chain still stops at groups.max_bot_chain.",
    )

    def merged(self, override: SpeakOverride | None) -> SpeakPolicy:
        """This policy with a channel's override laid over it (set fields win)."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class SpeakOverride(_Model):
    """A channel's changes to a persona's `SpeakPolicy`; unset fields keep the persona's."""

    mode: SpeakMode | None = None
    talkativeness: float | None = Field(default=None, ge=0.0, le=1.0)
    cooldown_s: float | None = Field(default=None, ge=0.0, le=86_400.0)
    nicknames: tuple[Word, ...] | None = Field(default=None, max_length=20)
    keywords: tuple[Word, ...] | None = Field(default=None, max_length=50)
    answer_bots: bool | None = None


class ChannelGroup(_Model):
    """One channel (or a whole server/group): who is present and how each speaks."""

    personas: tuple[PersonaRef, ...] = Field(
        default=(),
        max_length=16,
        description="Personas present besides the place's own (its bound or configured "
        "one, always present). Each sees the channel's messages from now on.",
    )
    speak: dict[PersonaRef, SpeakOverride] = Field(
        default_factory=dict, description="Per persona: changes to its groups policy here."
    )
    replies_per_minute: int | None = Field(default=None, ge=0, le=10_000)
    max_bot_chain: int | None = Field(default=None, ge=0, le=100)


class GroupSettings(_Model):
    """The config's `groups` section (bot/groups; docs/groups.md)."""

    replies_per_minute: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="Replies all personas together may send in one group channel in any "
        "60 s; 0: no limit. DMs are not counted.",
    )
    max_bot_chain: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Messages from bots (ours included) in a row after which no persona "
        "answers a bot until a person speaks.",
    )
    state: Literal["database", "process"] = Field(
        default="database",
        description="Where the channels' budget, cooldowns and bot chain are kept: in the "
        "database (kept across restarts, shared by every worker on it; ~0.4-2 ms a "
        "decision) or in this process (~12 us, forgotten on restart; one worker only).",
    )
    #: Keyed "PLATFORM:CHANNEL" (a Discord channel, a Telegram chat) or
    #: "PLATFORM:SPACE" (a whole Discord server); the channel's entry wins.
    channels: dict[
        Annotated[str, StringConstraints(min_length=3, max_length=300)], ChannelGroup
    ] = Field(default_factory=dict)

    def channel(self, platform: str, space: str | None, channel: str) -> ChannelGroup | None:
        """The entry for a place: its channel's, else its server's, else None."""
        found = self.channels.get(f"{platform}:{channel}")
        if found is None and space is not None:
            found = self.channels.get(f"{platform}:{space}")
        return found
