"""Honest disclosure: the persona says it is an AI, and never claims to be human.

    FirstContactCheck        the first time a person meets a persona, its disclosure
                             text goes before the reply (once per person and persona)
    DisclosureQuestionCheck  "are you human?" in English, Chinese, German, Spanish or
                             Japanese is answered with the disclosure text, not the model
    HumanClaimCheck          a reply that claims to be human ("I'm a real person",
                             "我不是机器人") is blocked; regenerated once, then replaced
                             by the disclosure text

No persona prompt switches these off: they run outside the model, and a disclosure
text that is empty, claims to be human or never says "AI" is replaced or completed
by the default one.
"""

from __future__ import annotations

import re
from typing import Protocol

from bot.personas import LoadedPersona
from bot.safety.normalize import fold, fold_pattern, variants, window
from bot.safety.stage import InputContext, InputHit, OutputContext

__all__ = [
    "DEFAULT_DISCLOSURE",
    "DisclosureQuestionCheck",
    "Disclosures",
    "FirstContactCheck",
    "HumanClaimCheck",
    "MemoryDisclosures",
    "asks_if_human",
    "claims_human",
    "disclosure_text",
]

DEFAULT_DISCLOSURE = "You are talking with an AI character, not a person."

_BEING = (
    r"(?:a |an )?(?:real |actual |living |live )?(?:human(?: being)?|person|people|man|woman|"
    r"guy|girl|boy|bot|robot|ai|a\.i\.|machine|chat ?bot|program|computer)"
)
_QUESTIONS: tuple[str, ...] = (
    # English
    r"\b(?:are|r) (?:you|u|ya) " + _BEING + r"\b",
    r"\b(?:are|r) (?:you|u|ya) (?:even )?real\b",
    r"\bam i (?:talking|speaking|chatting|texting) (?:to|with) " + _BEING + r"\b",
    r"\bis (?:this|that) (?:a |an )?(?:bot|ai|robot|real person|human|machine)\b",
    r"\bis (?:this|there) (?:a )?(?:real )?(?:person|human) (?:there|behind|typing)\b",
    r"\byou(?:'re| are) (?:a |an )?(?:bot|ai|robot|machine|human|real person)\s*\?",
    # Chinese
    r"你是(?:不是)?(?:一个|一個)?(?:真)?人(?:吗|嗎|吧|么|麼|还是|還是|\?)",
    r"你是(?:不是)?(?:一个|一個)?(?:机器人|機器人|ai|人工智能|程序|程式|真的人|真实的人|真實的人)",
    r"(?:是|是不是)真人",
    r"我(?:在)?(?:跟|和|与|與)(?:真人|人|机器人|機器人|ai|人工智能)(?:在)?(?:聊天|说话|說話|对话|對話)",
    # German
    r"\b(?:bist du|sind sie) (?:ein(?:e)? )?(?:echte[rs]? |reale[rs]? |wirkliche[rs]? )?"
    r"(?:mensch|bot|roboter|ki|maschine|person|computer|chatbot|programm)\b",
    r"\b(?:bist du|sind sie) echt\b",
    r"\b(?:rede|spreche|schreibe|chatte) ich (?:hier )?mit (?:einem |einer )?(?:echten )?"
    r"(?:menschen|mensch|bot|ki|maschine|roboter|person)\b",
    # Spanish
    r"\b(?:eres|es usted) (?:un |una )?(?:humano|humana|persona|bot|robot|ia|maquina|programa)\b",
    r"\b(?:eres|es usted) real\b",
    r"\bestoy hablando con (?:un |una )?(?:humano|humana|persona|bot|robot|ia|maquina)\b",
    # Japanese
    r"(?:あなた|君|きみ|お前|おまえ)(?:は|って)(?:本物の)?(?:人間|ロボット|ボット|bot|ai|機械|人工知能|本物の人)",
    r"(?:人間|ロボット|機械|人工知能|ai|本物の人)(?:です|なん(?:です)?|なの|だ)?(?:か|の)?[?？]",
    r"人間ですか",
    r"中の人",
)
_CLAIMS: tuple[str, ...] = (
    # English
    r"\bi(?:'m| am|m) (?:a |an )?(?:real |actual |living )?(?:human(?: being)?|real person|"
    r"flesh and blood)\b",
    r"\bi(?:'m| am|m) (?:a )?person,? not (?:a |an )?(?:bot|ai|robot|machine|program)\b",
    r"\bi(?:'m| am|m) (?:not|no) (?:a |an )?(?:bot|ai|a\.i\.|robot|machine|program|"
    r"chat ?bot|computer|language model)\b",
    r"\bi(?:'m| am|m) (?:a )?real (?:girl|boy|woman|man|guy|person)\b",
    # Chinese
    r"我是(?:一个|一個)?(?:真)?人(?![工物格家类類们們生])",
    r"我是(?:一个|一個)?(?:真实的|真實的|活生生的)?人[类類](?!的朋友)",
    r"我不是(?:一个|一個)?(?:机器人|機器人|ai|人工智能|程序|程式|机器|機器)",
    # German
    r"\bich bin (?:ein(?:e)? )?(?:echte[rs]? )?(?:mensch|person)\b",
    r"\bich bin kein(?:e)? (?:ki|bot|maschine|roboter|programm|computer)\b",
    # Spanish
    r"\bsoy (?:un |una )?(?:humano|humana|persona real|persona de verdad|ser humano)\b",
    r"\bno soy (?:un |una )?(?:bot|robot|ia|maquina|programa)\b",
    # Japanese
    r"(?:私|僕|俺|わたし|ぼく|おれ|あたし)(?:は|って)(?:本物の)?人間(?:です|だ|だよ|なの|よ)",
    r"(?:ai|ロボット|機械|ボット|bot|人工知能|プログラム)(?:じゃない|じゃありません|ではない|ではありません)",
)
_MENTIONS_AI = re.compile(
    fold_pattern(
        r"\b(?:ai|a\.i\.|artificial|bot|chatbot|robot|machine|program|language model|ki|"
        r"künstliche|ia|inteligencia artificial|maschine)\b|人工智能|机器人|機器人|AI|人工知能|"
        r"ロボット|プログラム"
    )
)


def _compile(sources: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fold_pattern(s)})" for s in sources))


_QUESTION = _compile(_QUESTIONS)
_CLAIM = _compile(_CLAIMS)


def _search(pattern: re.Pattern[str], text: str, limit: int) -> str | None:
    for form in variants(fold(window(text, limit))):
        found = pattern.search(form)
        if found is not None:
            return found.group(0)[:80]
    return None


def asks_if_human(text: str, *, limit: int = 20_000) -> str | None:
    """The phrase that asks whether the persona is a human or an AI, or None."""
    return _search(_QUESTION, text, limit)


def claims_human(text: str, *, limit: int = 20_000) -> str | None:
    """The phrase in which a reply claims to be human (or not an AI), or None."""
    return _search(_CLAIM, text, limit)


def disclosure_text(loaded: LoadedPersona) -> str:
    """The persona's own disclosure text, made honest: the default when it is empty
    or claims to be human, completed by the default when it never says AI."""
    text = loaded.persona.safety.ai_disclosure.strip()
    if not text or claims_human(text):
        return DEFAULT_DISCLOSURE
    if _MENTIONS_AI.search(fold(text)) is None:
        return f"{text} ({DEFAULT_DISCLOSURE})"
    return text


class Disclosures(Protocol):
    """Who has been told, per person and persona (the database in the app)."""

    async def disclosed(self, user_id: int, persona: str) -> bool:
        """True once the persona has disclosed itself to this person."""
        ...

    async def mark(self, user_id: int, persona: str) -> None:
        """Remember that it has (the event row does this in the app)."""
        ...


class MemoryDisclosures:
    """`Disclosures` in memory (one process; the app's is in the database)."""

    def __init__(self) -> None:
        self._told: set[tuple[int, str]] = set()

    async def disclosed(self, user_id: int, persona: str) -> bool:
        return (user_id, persona) in self._told

    async def mark(self, user_id: int, persona: str) -> None:
        self._told.add((user_id, persona))


class FirstContactCheck:
    """The first reply a person gets from a persona starts with its disclosure."""

    name = "disclosure"

    def __init__(
        self, disclosures: Disclosures | None = None, *, exempt: frozenset[str] = frozenset()
    ) -> None:
        self.disclosures: Disclosures = disclosures or MemoryDisclosures()
        #: Platforms that get no notice (the operator's console).
        self.exempt = exempt

    async def check(self, ctx: InputContext) -> InputHit | None:
        persona = ctx.scope.persona
        if ctx.scope.platform in self.exempt:
            return None
        if await self.disclosures.disclosed(ctx.user_id, persona):
            return None
        await self.disclosures.mark(ctx.user_id, persona)
        return InputHit(
            check=self.name,
            verdict="first_contact",
            reason="first contact with this persona",
            notice=disclosure_text(ctx.loaded),
        )


class DisclosureQuestionCheck:
    """A question whether the persona is human is answered with its disclosure text."""

    name = "disclosure"

    def __init__(self, disclosures: Disclosures | None = None) -> None:
        self.disclosures = disclosures

    async def check(self, ctx: InputContext) -> InputHit | None:
        phrase = asks_if_human(ctx.text)
        if phrase is None:
            return None
        if self.disclosures is not None:
            await self.disclosures.mark(ctx.user_id, ctx.scope.persona)
        return InputHit(
            check=self.name,
            verdict="disclosure",
            reason=f"asked whether it is human: {phrase!r}",
            reply=disclosure_text(ctx.loaded),
            details={"phrase": phrase},
        )


class HumanClaimCheck:
    """Blocks a reply that claims to be human; its stand-in is the disclosure text."""

    name = "human_claim"

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        phrase = claims_human(text)
        return None if phrase is None else f"the reply claims to be human: {phrase!r}"

    def replacement(self, loaded: LoadedPersona) -> str:
        """What is sent instead of a reply that claimed to be human twice."""
        return disclosure_text(loaded)
