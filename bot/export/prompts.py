"""The system prompt of a record, rendered as the engine rendered it for that turn.

The engine's system message is `SystemLayout.for_persona(p).compose(render_system_prompt(
p, context))`; we do the same, from the persona version that produced the reply (its
content hash → `persona_versions.source`) and that turn's context: the platform,
whether the conversation is direct, and the time of the message in the person's
zone (`users.timezone`, else the configured default). Two things differ on purpose
or by necessity, and manifests say so: the person's display name and id are their
pseudonyms, and the per-turn blocks (the persona's lore that applied and recalled
memories) are not part of it: they are chosen per turn and not stored with it.

The rendered prompt goes through the same scrubber as every message: a persona's
text may hold its author's e-mail or a template may print what it was given.
Scrubbing is per line, cached: records of one persona version share all lines
but the one with the time, so most lines are scrubbed once per export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.errors import PersonaError
from bot.personas import Persona, PromptContext, parse_persona, render_system_prompt
from bot.prompt import SystemLayout

__all__ = ["SystemPrompts", "TurnContext", "parse_time"]

log = structlog.get_logger("bot.export")

_LINE_CACHE = 4096  # distinct scrubbed lines kept


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a turn's system prompt depends on, as read from the ledger."""

    persona_hash: str
    platform: str
    user_id: str  # the pseudonym
    display_name: str  # the pseudonymous label
    timezone: str | None
    when: object  # the stored time: a datetime, or SQLite's text form
    is_direct: bool


def parse_time(value: object) -> datetime:
    """A stored time as an aware UTC datetime (SQLite keeps text, others datetimes)."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class SystemPrompts:
    """Renders system prompts per persona version; parses each version once.

    `lookup(content_hash)` returns the stored (path, YAML source) of a version, or None.
    A version that is missing or no longer parses renders as None (the caller drops
    and counts those records) and is logged once. `scrub` is applied to what is
    rendered (see the module docstring).
    """

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, str] | None],
        default_timezone: str,
        scrub: Callable[[str], str],
    ) -> None:
        self._lookup = lookup
        self._default = default_timezone
        self._scrub = scrub
        self._lines: dict[str, str] = {}
        self._versions: dict[str, tuple[Persona, SystemLayout] | None] = {}
        self._zones: dict[str, ZoneInfo] = {}

    def _version(self, content_hash: str) -> tuple[Persona, SystemLayout] | None:
        if content_hash in self._versions:
            return self._versions[content_hash]
        found = self._lookup(content_hash)
        version: tuple[Persona, SystemLayout] | None = None
        if found is None:
            log.warning("export.persona_version_missing", persona_hash=content_hash)
        else:
            path, source = found
            try:
                persona = parse_persona(source.encode("utf-8"), Path(path)).persona
                version = (persona, SystemLayout.for_persona(persona))
            except PersonaError as exc:
                log.warning(
                    "export.persona_version_unusable", persona_hash=content_hash, error=str(exc)
                )
        self._versions[content_hash] = version
        return version

    def _zone(self, name: str | None) -> ZoneInfo:
        key = name or self._default
        zone = self._zones.get(key)
        if zone is None:
            try:
                zone = ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):  # a bad stored zone: use the default
                zone = ZoneInfo(self._default)
            self._zones[key] = zone
        return zone

    def render(self, ctx: TurnContext) -> str | None:
        """The full system message of that turn, or None if its persona version is unusable."""
        version = self._version(ctx.persona_hash)
        if version is None:
            return None
        persona, layout = version
        zone = self._zone(ctx.timezone)
        now = parse_time(ctx.when).astimezone(zone)
        try:
            rendered = render_system_prompt(
                persona,
                PromptContext(
                    user_display_name=ctx.display_name,
                    user_id=ctx.user_id,
                    platform=ctx.platform,
                    now=now,
                    timezone=str(zone.key),
                    is_direct=ctx.is_direct,
                ),
            )
        except PersonaError as exc:
            log.warning("export.render_failed", persona_hash=ctx.persona_hash, error=str(exc))
            return None
        return self._scrubbed(layout.compose(rendered))

    def _scrubbed(self, text: str) -> str:
        if "PRIVATE KEY" in text:  # a block over many lines: scrub it whole
            return self._scrub(text)
        if len(self._lines) > _LINE_CACHE:
            self._lines.clear()  # bounded; a new export's worth of lines comes back fast
        out = []
        for line in text.split("\n"):
            done = self._lines.get(line)
            if done is None:
                done = self._lines[line] = self._scrub(line)
            out.append(done)
        return "\n".join(out)
