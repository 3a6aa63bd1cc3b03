"""Assembling chat messages for one turn within the model's token budget.

Layout, static first so that vLLM's prefix cache is shared across turns and people
(DESIGN.md): one system message that starts with the persona's rendered prompt and
examples and ends with what is specific to this person (memories, added by the
memory part); then the recent history, oldest first; then the new message. When the
budget is tight the oldest history goes first; the system prompt and the new message
are never dropped (the new message is cut, with a note, only if nothing else fits).

Every text that goes in (persona, memories, lore, history, the new message) is
neutralised here: control-token look-alikes are defused with the counter's
tokenizer's tokens and the common families (`bot.llm.control_tokens`), so nothing
a person, a memory or a lore entry says becomes a special token on any backend,
and the budget counts the text the backend sends.

Pure functions and one small cache: no I/O here.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.llm.base import ChatMessage, TokenCounter
from bot.llm.control_tokens import ControlTokens
from bot.llm.tokens import control_tokens
from bot.personas.lorebook import DepthNote, LoreResult
from bot.personas.lorebook.macros import PLACEHOLDER_USER, fill_macros, lore_for_speaker
from bot.personas.render import PromptContext, render_system_prompt
from bot.personas.schema import Persona
from bot.text import clean_text

__all__ = [
    "AssembledPrompt",
    "PromptBuilder",
    "PromptTurn",
    "SystemLayout",
    "persona_guidance",
    "speaker_label",
    "turn_prompt",
]

_NAME_UNSAFE = re.compile(r"[\n\r\t:\[\]<>|`*_~]+")


def speaker_label(display_name: str, fallback: str = "someone") -> str:
    """A display name made safe to stand before a message in a group transcript.

    Names are data written by strangers: no newlines, brackets or colons that could
    fake another speaker or a role, and a bounded length.
    """
    cleaned = _NAME_UNSAFE.sub(" ", display_name).strip()
    cleaned = " ".join(cleaned.split())[:48]
    return cleaned or fallback


@dataclass(frozen=True, slots=True)
class PromptTurn:
    """A message of the conversation as the prompt shows it."""

    role: str  # "user" | "assistant"
    text: str
    speaker: str = ""
    key: int | None = None  # ledger id, used to cache token counts


@dataclass(frozen=True, slots=True)
class AssembledPrompt:
    """The messages to send, what they cost, and what had to give way."""

    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    history_used: int
    history_dropped: int
    new_message_cut: bool = False


@dataclass
class PromptBuilder:
    """Packs a turn into a token budget, counting with the model's own tokenizer.

    Token counts of stored history messages are cached by ledger id: the same
    messages are re-packed on every turn of a conversation. The result never
    exceeds the budget unless the system prompt and the cut note alone do.
    """

    tokens: TokenCounter
    cache_size: int = 50_000
    _cache: OrderedDict[tuple[int, bool], int] = field(default_factory=OrderedDict)
    _framing: dict[str, int] = field(default_factory=dict)
    _control: ControlTokens | None = None

    def _neutral(self, text: str) -> str:
        if self._control is None:
            self._control = control_tokens(self.tokens)
        return self._control.neutralise(text)

    def _content(self, turn: PromptTurn, group: bool) -> str:
        if group and turn.role == "user" and turn.speaker:
            return self._neutral(f"{turn.speaker}: {turn.text}")
        return self._neutral(turn.text)

    def framing(self, role: str = "user") -> int:
        """Tokens the chat template adds around one message of `role` (measured once;
        at least 4)."""
        found = self._framing.get(role)
        if found is None:
            count = self.tokens.count_messages
            system = ChatMessage("system", "x")
            one = count((system, ChatMessage("assistant" if role == "assistant" else "user", "x")))
            found = max(4, one - count((system,)) - self.tokens.count_text("x"))
            self._framing[role] = found
        return found

    def _cost(self, turn: PromptTurn, group: bool) -> int:
        overhead = self.framing(turn.role)
        if turn.key is None:
            return overhead + self.tokens.count_text(self._content(turn, group))
        ckey = (turn.key, group)
        cached = self._cache.get(ckey)
        if cached is None:
            cached = overhead + self.tokens.count_text(self._content(turn, group))
            self._cache[ckey] = cached
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return cached

    def build(
        self,
        *,
        system: str,
        history: Sequence[PromptTurn],
        new_message: PromptTurn | None,
        budget_tokens: int,
        group: bool = False,
        dynamic_system: str = "",
        notes: Sequence[DepthNote] = (),
    ) -> AssembledPrompt:
        """The chat messages for this turn, within `budget_tokens` of prompt.

        `system` is the static persona part; `dynamic_system` (memories) follows it in
        the same system message. `group` prefixes user messages with speaker names.
        `new_message` is None for a turn the persona starts itself (a proactive message):
        the prompt then ends with the history and the model speaks next. `notes` are
        system messages placed `depth` messages from the end (0: after the last one;
        deeper than the history: right after the system message); they are never
        dropped, so their cost is taken before the history's.
        """
        system_text = f"{system}\n\n{dynamic_system}" if dynamic_system else system
        system_msg = ChatMessage("system", self._neutral(system_text))
        framing = self.framing()
        # Exact: the system message, the template's start and the generation prompt.
        fixed = self.tokens.count_messages((system_msg,))
        note_msgs = [(n.depth, ChatMessage("system", self._neutral(n.text))) for n in notes]
        note_cost = sum(
            self.framing("system") + self.tokens.count_text(m.content) for _, m in note_msgs
        )
        fixed += note_cost
        full_new = self._content(new_message, group) if new_message is not None else ""
        new_text = full_new
        new_cost = framing + self.tokens.count_text(new_text) if new_message is not None else 0
        cut = False
        if new_message is not None and fixed + new_cost > budget_tokens:
            new_text, cut = self._fit_new(system_msg, full_new, budget_tokens - note_cost)
            new_cost = framing + self.tokens.count_text(new_text)

        remaining = budget_tokens - fixed - new_cost
        chosen: list[PromptTurn] = []
        for turn in reversed(history):
            cost = self._cost(turn, group)
            if cost > remaining:
                break
            remaining -= cost
            chosen.append(turn)
        chosen.reverse()

        def render(turns: list[PromptTurn]) -> tuple[ChatMessage, ...]:
            middle = (
                ChatMessage("user" if t.role == "user" else "assistant", self._content(t, group))
                for t in turns
            )
            last = (ChatMessage("user", new_text),) if new_message is not None else ()
            chat = [*middle, *last]
            # Deepest first, each at its place in the chat as it was before any insert.
            for depth, note in sorted(note_msgs, key=lambda dn: -dn[0]):
                chat.insert(max(0, len(chat) - depth), note)
            return (system_msg, *chat)

        # The per-message sums above are an estimate of the template's framing; the
        # exact count renders the chat template once. Trim further if it disagrees.
        messages = render(chosen)
        total = self.tokens.count_messages(messages)
        while total > budget_tokens and chosen:
            chosen.pop(0)
            messages = render(chosen)
            total = self.tokens.count_messages(messages)
        if total > budget_tokens and new_message is not None and not cut:
            # The estimate let a new message through that the template cannot hold.
            new_text, cut = self._fit_new(system_msg, full_new, budget_tokens - note_cost)
            messages = render(chosen)
            total = self.tokens.count_messages(messages)
        return AssembledPrompt(
            messages=messages,
            prompt_tokens=total,
            history_used=len(chosen),
            history_dropped=len(history) - len(chosen),
            new_message_cut=cut,
        )

    def _fit_new(self, system_msg: ChatMessage, text: str, budget: int) -> tuple[str, bool]:
        """The longest cut of the new message whose prompt, with the system message and
        the template's framing counted exactly, fits `budget`."""
        allowance = budget - self.tokens.count_messages((system_msg,)) - self.framing()
        cut = text
        for _ in range(8):  # each round takes off what the last one was over by
            cut = self._fit(text, allowance)
            total = self.tokens.count_messages((system_msg, ChatMessage("user", cut)))
            if total <= budget or allowance <= 0:
                break
            allowance -= total - budget
        return cut, True

    def _fit(self, text: str, budget: int) -> str:
        note = "\n\n[The rest of this message was cut to fit.]"
        budget -= self.tokens.count_text(note)
        if budget <= 0:
            return note.strip()
        # No token covers more than a few dozen characters: a bound that keeps a huge
        # message from costing a full tokenization at every step of the search.
        lo, hi = 0, min(len(text), budget * 64)
        while lo < hi:  # longest prefix that fits, by binary search on characters
            mid = (lo + hi + 1) // 2
            if self.tokens.count_text(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo] + note


def turn_prompt(
    builder: PromptBuilder,
    *,
    system: str,
    lore: LoreResult,
    dynamic: Sequence[str],
    history: Sequence[PromptTurn],
    new_message: PromptTurn | None,
    budget_tokens: int,
    group: bool,
    user_name: str = "",
    persona_name: str = "",
    now: datetime | None = None,
) -> AssembledPrompt:
    """One turn's prompt with its lore in place: before_char lore ahead of the
    persona's prompt, after_char lore first in the per-turn part (then `dynamic`:
    memories, guidance), at_depth lore as notes in the conversation. The engine and
    `bot personas preview` both build prompts through this.

    `{{user}}` in the lore is `user_name` (the speaker's display name, made safe by
    `speaker_label`) after the static prefix and "User" in it (before_char lore);
    `{{char}}` is `persona_name`; `{{time}}`, `{{date}}`, `{{weekday}}` after the
    static prefix are `now` (the person's local time, as the templates see it)
    when given (`bot.personas.lorebook.macros`)."""
    lore = lore_for_speaker(
        lore,
        user=speaker_label(clean_text(user_name), fallback=PLACEHOLDER_USER),
        char=persona_name or "{{char}}",
        now=now,
    )
    return builder.build(
        system="\n\n".join(p for p in (lore.before, system) if p),
        dynamic_system="\n\n".join(p for p in (lore.after, *dynamic) if p),
        history=history,
        new_message=new_message,
        budget_tokens=budget_tokens,
        group=group,
        notes=lore.notes,
    )


def persona_guidance(persona: Persona) -> str:
    """The persona's static guidance that follows its rendered system prompt: style,
    topics to decline, and example dialogues. Depends only on the persona version,
    so callers cache it by content hash."""
    parts: list[str] = []
    style = persona.style
    lines = []
    if style.traits:
        lines.append("Traits: " + ", ".join(style.traits) + ".")
    if style.tone:
        lines.append(f"Tone: {style.tone}.")
    lines.append(_LENGTH_HINT[style.reply_length])
    parts.append("\n".join(lines))
    safety = persona.safety
    if safety.decline_topics:
        topics = "; ".join(safety.decline_topics)
        decline = f"Politely decline to discuss: {topics}."
        if safety.decline_message:
            decline += f' When you decline, say something like: "{safety.decline_message}"'
        parts.append(decline)
    if persona.examples:
        shown = ["Example conversations (they show your voice; they are not memories):"]
        for dialogue in persona.examples:
            shown.append("")
            # Examples are in the static prefix: `{{user}}` is the one placeholder name
            # for everyone (so the cached prefix is shared), never the speaker's.
            shown.extend(
                f"{PLACEHOLDER_USER if turn.role == 'user' else persona.name}: "
                + fill_macros(turn.content, user=PLACEHOLDER_USER, char=persona.name)
                for turn in dialogue
            )
        parts.append("\n".join(shown))
    return "\n\n".join(parts)


_LENGTH_HINT = {
    "short": "Keep replies short: one to three sentences, like a chat message.",
    "medium": "Keep replies to a short paragraph.",
    "long": "Replies may run to several paragraphs when the topic needs it.",
}


@dataclass(frozen=True, slots=True)
class SystemLayout:
    """Where the static guidance goes inside a persona's rendered system prompt.

    Moderators write per-person variables (name, local time) wherever they like.
    vLLM reuses a cached prefix only up to the first character that differs between
    requests, so everything static must come before anything per-person. We find
    the static head of a template by rendering it for two contexts that differ in
    every variable: their common prefix cannot depend on who is talking or when.
    The system message is then: static head, guidance, the rest of the rendering.
    """

    static_head: str
    guidance: str

    @classmethod
    def for_persona(cls, persona: Persona) -> SystemLayout:
        """Work out the layout once per persona version (two renders)."""
        zone_a, zone_b = ZoneInfo("UTC"), ZoneInfo("Pacific/Kiritimati")
        a = render_system_prompt(
            persona,
            PromptContext(
                "\x01a", "\x01a", "\x01a", datetime(2001, 1, 1, 1, 1, tzinfo=zone_a), "UTC", True
            ),
        )
        b = render_system_prompt(
            persona,
            PromptContext(
                "\x02b", "\x02b", "\x02b", datetime(2002, 6, 15, 14, 30, tzinfo=zone_b), "X", False
            ),
        )
        common = os.path.commonprefix([a, b])  # noqa: RUF071  (characters, not paths)
        # Cut at the last line break of the shared part, so no line is split in two.
        cut = common.rfind("\n") + 1
        return cls(static_head=common[:cut], guidance=persona_guidance(persona))

    def compose(self, rendered: str) -> str:
        """The full system text for one turn's rendering of the template."""
        if self.static_head and rendered.startswith(self.static_head):
            head, tail = self.static_head, rendered[len(self.static_head) :]
        else:  # a template whose head depends on something we did not vary
            head, tail = "", rendered
        parts = [head.strip(), self.guidance, tail.strip()]
        return "\n\n".join(p for p in parts if p)
