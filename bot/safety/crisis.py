"""Crisis replies: a message that signals a risk of suicide or self-harm, or that
someone is in danger, is answered with a fixed, caring reply that steps out of
character and carries resources; the model is not asked.

Layers: the phrase patterns of `crisis_patterns` first (every language on every
message, on the folded text and its de-obfuscated variants); then, when configured,
a classifier (`bot.safety.classifier`) for messages the patterns found only
worrying (`uncertain`), or for every message the patterns let through (`always`).
A classifier can add a crisis the patterns missed; it can never take one away, and
when it times out or answers garbage the patterns' verdict stands and the failure
is recorded as an event of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import structlog

from bot.aio import wait_for
from bot.safety.classifier import CrisisClassifier
from bot.safety.crisis_patterns import PATTERNS
from bot.safety.normalize import fold, fold_pattern, variants, window
from bot.safety.resources import crisis_reply, guess_language
from bot.safety.stage import InputContext, InputHit

__all__ = ["CrisisCheck", "CrisisDetector", "Signal"]

log = structlog.get_logger("bot.safety.crisis")

SignalKind = Literal["self_harm", "danger", "uncertain"]


@dataclass(frozen=True, slots=True)
class Signal:
    """What the patterns found: the kind, the language of the phrase, the phrase."""

    kind: SignalKind
    language: str
    phrase: str


class CrisisDetector:
    """The pattern layer: every language's phrases, compiled once.

    `detect` looks at most at `max_scan_chars` of a message (its head and tail) and
    tries each pattern set on at most three forms of it, so its cost is linear and
    bounded whatever the message's length.
    """

    def __init__(
        self,
        patterns: Mapping[str, Mapping[str, tuple[str, ...]]] = PATTERNS,
        *,
        max_scan_chars: int = 20_000,
    ) -> None:
        self.max_scan_chars = max_scan_chars
        self._compiled: list[tuple[SignalKind, str, re.Pattern[str]]] = []
        for kind in ("self_harm", "danger", "uncertain"):
            for language, kinds in patterns.items():
                sources = kinds.get(kind, ())
                if sources:
                    joined = "|".join(f"(?:{fold_pattern(s)})" for s in sources)
                    self._compiled.append((kind, language, re.compile(joined)))

    def detect(self, text: str) -> Signal | None:
        """The strongest signal in `text` (self-harm or danger before uncertain)."""
        forms = variants(fold(window(text, self.max_scan_chars)))
        for kind, language, pattern in self._compiled:
            for form in forms:
                found = pattern.search(form)
                if found is not None:
                    if language in ("zh", "ja"):  # shared characters (自殺): kana means ja
                        language = guess_language(form, language)
                    return Signal(kind, language, found.group(0)[:80])
        return None


class CrisisCheck:
    """The input check: patterns, then the optional classifier, then the reply.

    A hit answers with the crisis reply in the language of what was found, sets
    `pause_until` (proactive messages to the person pause), and is recorded as an
    event with verdict "crisis" (the app's sink alerts moderators and queues it).
    """

    name = "crisis"

    def __init__(
        self,
        *,
        detector: CrisisDetector | None = None,
        classifier: CrisisClassifier | None = None,
        classify: Literal["uncertain", "always"] = "uncertain",
        classifier_timeout_s: float = 5.0,
        resources: Mapping[str, str] | None = None,
        replies: Mapping[str, str] | None = None,
        region: str | None = None,
        default_language: str = "en",
        pause: timedelta = timedelta(hours=72),
    ) -> None:
        self.detector = detector or CrisisDetector()
        self.classifier = classifier
        self.classify = classify
        self.classifier_timeout_s = classifier_timeout_s
        self.resources = dict(resources or {})
        self.replies = dict(replies or {})
        self.region = region
        self.default_language = default_language
        self.pause = pause

    async def check(self, ctx: InputContext) -> InputHit | None:
        signal = self.detector.detect(ctx.text)  # bounded: at most max_scan_chars
        strong = signal is not None and signal.kind != "uncertain"
        layer = "pattern"
        kind: str | None = signal.kind if strong and signal is not None else None
        failure: str | None = None
        classifier_raw: str | None = None
        ask = self.classifier is not None and not strong and (
            self.classify == "always" or signal is not None
        )
        if ask and self.classifier is not None:
            try:
                result = await wait_for(
                    self.classifier.classify(ctx.text), timeout=self.classifier_timeout_s
                )
            except TimeoutError:
                failure = f"{self.classifier.name} classifier: no answer within "
                failure += f"{self.classifier_timeout_s:g} s"
            except Exception as exc:  # garbage, a server error: the patterns decide
                failure = f"{self.classifier.name} classifier: {type(exc).__name__}: {exc}"
            else:
                classifier_raw = result.raw
                if result.crisis:
                    kind, layer = result.kind, self.classifier.name
        if kind is None:
            if failure is not None:
                log.warning("crisis.classifier_failed", reason=failure)
                return InputHit(
                    check="crisis_classifier",
                    verdict="error",
                    reason=failure[:500],
                    details={"layer": "classifier", "pattern": signal.kind if signal else None},
                )
            return None
        language = signal.language if signal is not None else guess_language(
            ctx.text, self.default_language
        )
        reply = crisis_reply(
            language, region=self.region, resources=self.resources, replies=self.replies
        )
        phrase = signal.phrase if signal is not None and strong else None
        reason = f"{kind} ({layer}" + (f": {phrase!r})" if phrase else ")")
        return InputHit(
            check=self.name,
            verdict="crisis",
            reason=reason,
            reply=reply,
            details={
                "kind": kind,
                "layer": layer,
                "language": language,
                "phrase": phrase,
                "classifier": classifier_raw,
                "pause_until": ctx.now + self.pause,
            },
        )
