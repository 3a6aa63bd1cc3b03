"""Who speaks to one group message: a pure function of the message, the personas
present, the channel's state, a random generator and the time.

The rule, in order (each step's losers get the reason they stayed silent):

1. A message one of our personas wrote is never answered by that persona
   (`own_message`). A message from a bot (ours included) is answered only by
   personas whose policy says `answer_bots` (else `from_bot`), and by none once
   the run of bot messages in a row it ends (ours included) is `max_bot_chain`
   long (`bot_chain_limit`): a run never grows past `max_bot_chain`.
2. In a DM the one persona there answers (`direct`); no budget applies.
3. Addressed personas answer, every one of them: the one whose message this
   replies to (`reply`), those named by name or nickname (`name`). When none is,
   a mention of the bot account (or the adapter's always-on channels and
   keywords) addresses the place's own persona, the first present (`mention`).
   Two personas answer one message only this way: both were addressed.
4. Else one persona whose keywords match answers (`keyword`), the most
   talkative first.
5. Else the most talkative persona in `always` or `talkative` mode whose cooldown
   has passed (`cooldown` for the others) may speak: always (`always`), or when
   `rng.random() < talkativeness` (`talkative`; else `roll`). Personas in
   `addressed` mode stay silent (`not_addressed`).

Every reply counts against the channel's budget (`replies_per_minute`); past it
the persona stays silent (`budget`). Nothing here reads a clock or a global
random generator: tests pass `now` and a seeded `random.Random`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from bot.groups.policy import SpeakPolicy

__all__ = [
    "SILENT_REASONS",
    "SPEAK_REASONS",
    "ChannelView",
    "Decision",
    "MessageFacts",
    "Present",
    "Verdict",
    "decide",
    "mentions_any",
]

SPEAK_REASONS = frozenset({"direct", "reply", "name", "mention", "keyword", "always", "talkative"})
SILENT_REASONS = frozenset(
    {
        "own_message",
        "from_bot",
        "bot_chain_limit",
        "budget",
        "cooldown",
        "roll",
        "not_addressed",
        "other_addressed",
        "other_chosen",
    }
)
#: The part of a message names and keywords are looked for in: a bounded cost
#: whatever a message holds (platforms cap text at 2,000-4,096 characters anyway).
SCAN_CHARS = 8_000
#: Scripts written without spaces between words: a name there is found anywhere.
_NO_SPACES = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the decision needs to know about one message, read at the edge."""

    text: str
    author_is_bot: bool = False
    #: Set when one of our personas wrote it (its reply, shown to the others).
    author_persona: str | None = None
    direct: bool = False
    #: The adapter's own judgement: the bot account mentioned or replied to, an
    #: always-on channel, one of the platform's configured keywords.
    platform_addressed: bool = False
    #: The persona whose message this replies to, when it is one of ours.
    replied_persona: str | None = None


@dataclass(frozen=True, slots=True)
class Present:
    """A persona in the channel: its id, the names that address it, its policy here."""

    id: str
    names: tuple[str, ...]
    policy: SpeakPolicy = field(default_factory=SpeakPolicy)


@dataclass(frozen=True, slots=True)
class ChannelView:
    """The channel's state when the message arrives (a snapshot, not live)."""

    replies_last_minute: int = 0
    #: Bot messages (ours included) since a person last spoke here.
    bot_chain: int = 0
    #: Persona id → when (in `now`'s seconds) it last spoke unprompted here.
    last_unprompted: Mapping[str, float] = field(default_factory=dict)
    replies_per_minute: int = 0  # 0: no limit
    max_bot_chain: int = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """One persona's outcome: speak or not, and why (a code of the two sets above)."""

    persona: str
    speak: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The personas that answer, in order, and every present persona's verdict."""

    verdicts: tuple[Verdict, ...]

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(v.persona for v in self.verdicts if v.speak)

    def reason(self, persona: str) -> str | None:
        """The reason for `persona`'s verdict; None if it was not present."""
        return next((v.reason for v in self.verdicts if v.persona == persona), None)


@lru_cache(maxsize=4096)
def _pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    spaced = [re.escape(w.casefold()) for w in words if w and not _NO_SPACES.search(w)]
    unspaced = [re.escape(w.casefold()) for w in words if w and _NO_SPACES.search(w)]
    parts = []
    if spaced:  # a whole word: "tess" is not in "contessa" (\b fails next to non-Latin)
        parts.append(rf"(?<!\w)(?:{'|'.join(sorted(spaced, key=len, reverse=True))})(?!\w)")
    if unspaced:
        parts.append("|".join(sorted(unspaced, key=len, reverse=True)))
    return re.compile("|".join(parts)) if parts else None


def mentions_any(text: str, words: Sequence[str]) -> bool:
    """True when one of `words` is in `text`: case-folded, as a whole word (anywhere
    for Chinese, Japanese and Korean, which put no spaces between words), in the
    first `SCAN_CHARS` characters."""
    pattern = _pattern(tuple(words))
    return bool(pattern and pattern.search(text[:SCAN_CHARS].casefold()))


def _eagerness(p: Present) -> float:
    return 1.0 if p.policy.mode == "always" else p.policy.talkativeness


def decide(
    facts: MessageFacts,
    present: Sequence[Present],
    channel: ChannelView,
    rng: random.Random,
    now: float,
) -> Decision:
    """Who answers `facts` among `present` (the place's own persona first). Pure:
    the same arguments (and rng state) give the same decision; `rng` is drawn from
    at most once, only when a talkative persona's chance decides."""
    verdicts: dict[str, Verdict] = {}

    def say(p: Present, speak: bool, reason: str) -> None:
        verdicts.setdefault(p.id, Verdict(p.id, speak, reason))

    seen: set[str] = set()
    candidates: list[Present] = []
    for p in present:  # a persona listed twice is one persona
        if p.id not in seen:
            seen.add(p.id)
            candidates.append(p)
    order = [p.id for p in candidates]

    for p in candidates:
        if p.id == facts.author_persona:
            say(p, False, "own_message")
    candidates = [p for p in candidates if p.id not in verdicts]
    if facts.author_is_bot or facts.author_persona is not None:
        # The run of bot messages this one ends: an outside bot's adds itself; our
        # persona's reply was counted when it was decided.
        chain = channel.bot_chain + (1 if facts.author_persona is None else 0)
        for p in candidates:
            if chain >= channel.max_bot_chain:
                say(p, False, "bot_chain_limit")
            elif not p.policy.answer_bots:
                say(p, False, "from_bot")
        candidates = [p for p in candidates if p.id not in verdicts]

    if facts.direct:
        for index, p in enumerate(candidates):
            say(p, index == 0, "direct" if index == 0 else "other_addressed")
        return _ordered(verdicts, order)

    budget = (
        channel.replies_per_minute - channel.replies_last_minute
        if channel.replies_per_minute > 0
        else len(candidates)
    )

    def within_budget(p: Present, reason: str) -> None:
        nonlocal budget
        if budget > 0:
            budget -= 1
            say(p, True, reason)
        else:
            say(p, False, "budget")

    addressed: list[tuple[Present, str]] = []
    for p in candidates:
        if facts.replied_persona == p.id:
            addressed.append((p, "reply"))
        elif mentions_any(facts.text, p.names):
            addressed.append((p, "name"))
    if not addressed and facts.platform_addressed and candidates:
        addressed.append((candidates[0], "mention"))
    if addressed:
        for p, reason in addressed:
            within_budget(p, reason)
        for p in candidates:
            say(p, False, "other_addressed")
        return _ordered(verdicts, order)

    by_eagerness = sorted(candidates, key=_eagerness, reverse=True)  # stable: order breaks ties
    keyed = [p for p in by_eagerness if mentions_any(facts.text, p.policy.keywords)]
    if keyed:
        within_budget(keyed[0], "keyword")
        for p in candidates:
            say(p, False, "other_chosen")
        return _ordered(verdicts, order)

    willing: list[Present] = []
    for p in by_eagerness:
        if p.policy.mode == "addressed" or _eagerness(p) <= 0.0:
            say(p, False, "not_addressed")
            continue
        last = channel.last_unprompted.get(p.id)
        if last is not None and now - last < p.policy.cooldown_s:
            say(p, False, "cooldown")
            continue
        willing.append(p)
    if willing:
        chosen = willing[0]
        if budget <= 0:
            say(chosen, False, "budget")
        elif chosen.policy.mode == "always":
            within_budget(chosen, "always")
        elif rng.random() < chosen.policy.talkativeness:
            within_budget(chosen, "talkative")
        else:
            say(chosen, False, "roll")
        for p in willing[1:]:
            say(p, False, "other_chosen")
    return _ordered(verdicts, order)


def _ordered(verdicts: dict[str, Verdict], order: list[str]) -> Decision:
    return Decision(tuple(verdicts[i] for i in order if i in verdicts))
