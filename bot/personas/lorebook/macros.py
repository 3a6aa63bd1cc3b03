"""`{{user}}`, `{{char}}` and the time macros in lore and example text, filled in
for one prompt.

Lore and example dialogues are plain text, not templates: nothing in them runs.
Only these macros are replaced, in one pass (a name that itself says `{{char}}`
is not expanded again): `{{user}}` and `<USER>` by the name of the person the
persona answers, `{{char}}`, `<BOT>` and `<CHAR>` by the persona's name, and
where a time is given `{{time}}`, `{{date}}`, `{{weekday}}`, `{{isotime}}`,
`{{isodate}}` as the templates show them ("14:05", "2024-05-01", "Wednesday").
Other text, other macros included, stays as written.

Where the text sits decides which name `{{user}}` gets (see docs/cards.md):
lore before the persona's prompt and the example dialogues are part of the static
prefix that vLLM caches across people, so they get the fixed `PLACEHOLDER_USER`;
lore after the static prefix (`after_char`, and notes at a depth in the history)
gets the speaker's display name and the time. The caller passes a display name already made
safe (`bot.prompt.speaker_label`); the prompt builder neutralises control tokens
in every text afterwards.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from bot.personas.lorebook.result import DepthNote, LoreResult

__all__ = ["PLACEHOLDER_USER", "fill_macros", "lore_for_speaker"]

#: What `{{user}}` is in text of the static prefix: one name for everyone.
PLACEHOLDER_USER = "User"

_MACRO = re.compile(
    r"\{\{\s*(user|char|time|date|weekday|isotime|isodate)\s*\}\}|<(USER|BOT|CHAR)>",
    re.IGNORECASE,
)
# Fixed English names, as the templates' `weekday` (strftime would follow the locale).
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def fill_macros(text: str, *, user: str, char: str, now: datetime | None = None) -> str:
    """`text` with `{{user}}` as `user`, `{{char}}` as `char` and, when `now` is
    given, the time macros as `now` says (one pass); without `now` they stay."""
    if "{{" not in text and "<" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        key = (match.group(1) or match.group(2)).lower()
        if key == "user":
            return user
        if key in ("char", "bot"):
            return char
        if now is None:
            return match.group(0)
        if key in ("time", "isotime"):
            return f"{now.hour:02d}:{now.minute:02d}"
        if key in ("date", "isodate"):
            return now.date().isoformat()
        return _WEEKDAYS[now.weekday()]

    return _MACRO.sub(one, text)


def lore_for_speaker(
    lore: LoreResult, *, user: str, char: str, now: datetime | None = None
) -> LoreResult:
    """`lore` with its macros filled in: the placeholder name in the `before` block
    (ahead of the persona's prompt: the cached prefix; time macros stay as written
    there), `user` and `now` in the `after` block and the depth notes. Counts and
    reasons are left as they were evaluated."""
    if lore.empty:
        return lore
    return replace(
        lore,
        before=fill_macros(lore.before, user=PLACEHOLDER_USER, char=char),
        after=fill_macros(lore.after, user=user, char=char, now=now),
        notes=tuple(
            DepthNote(n.depth, fill_macros(n.text, user=user, char=char, now=now))
            for n in lore.notes
        ),
    )
