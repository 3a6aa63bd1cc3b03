"""The safety stage an app runs, built from `settings.safety`.

    crisis → limits (ban, mute, rates) → rating (age) → disclosure question
           → first contact                              (before the turn, in this order)
    human claim → declined topic → blocklist → personal data → model check
                                                        (after generation)

Other checks (moderation, limits, ratings) are appended to the stage's lists here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.config import Settings
from bot.db import Database
from bot.llm.base import LLMBackend
from bot.safety.alerts import Alerter
from bot.safety.classifier import (
    ClassifierResult,
    CrisisClassifier,
    LlamaGuardClassifier,
    StructuredClassifier,
)
from bot.safety.crisis import CrisisCheck, CrisisDetector
from bot.safety.disclosure import DisclosureQuestionCheck, FirstContactCheck, HumanClaimCheck
from bot.safety.limits import LimitsCheck, LimitStore
from bot.safety.moderation import moderation_checks
from bot.safety.rating import AgeStore, RatingCheck
from bot.safety.stage import InputCheck, OutputCheck, SafetyStage
from bot.safety.store import SafetyStore

__all__ = ["Safety", "build_safety"]


@dataclass
class Safety:
    """The stage and the parts around it that the app and adapters use."""

    stage: SafetyStage
    store: SafetyStore
    alerts: Alerter
    classifier: CrisisClassifier | None = None

    async def aclose(self) -> None:
        await self.alerts.drain()
        if isinstance(self.classifier, LazyClassifier):
            await self.classifier.aclose()
        for check in self.stage.output_checks:  # a moderation endpoint's HTTP client
            close = getattr(check, "aclose", None)
            if callable(close):
                await close()


class LazyClassifier:
    """A classifier whose backend is made on first use (opening an app stays cheap,
    and a classifier server that is down costs only the messages that ask it)."""

    def __init__(
        self,
        kind: str,
        make_backend: Callable[[], Awaitable[LLMBackend]],
        *,
        model: str | None,
        owned: bool,
    ) -> None:
        self.kind = kind
        self.name = kind
        self.make_backend = make_backend
        self.model = model
        self.owned = owned
        self._inner: CrisisClassifier | None = None
        self._backend: LLMBackend | None = None
        self._lock = asyncio.Lock()

    async def classify(self, text: str) -> ClassifierResult:
        if self._inner is None:
            async with self._lock:
                if self._inner is None:
                    self._backend = await self.make_backend()
                    if self.kind == "llama_guard":
                        self._inner = LlamaGuardClassifier(self._backend, model=self.model)
                    else:
                        self._inner = StructuredClassifier(self._backend, model=self.model)
        return await self._inner.classify(text)

    async def aclose(self) -> None:
        if self.owned and self._backend is not None:
            await self._backend.aclose()


def build_safety(
    settings: Settings,
    db: Database,
    *,
    default_backend: Callable[[], Awaitable[LLMBackend]] | None = None,
    extra_input: list[InputCheck] | None = None,
    extra_output: list[OutputCheck] | None = None,
) -> Safety:
    """The stage for `settings`, recording to `db`. `default_backend` voices the
    structured classifier when no classifier server is configured."""
    config = settings.safety
    store = SafetyStore(db)
    alerts = Alerter(
        store,
        platform=config.alert_platform,
        channel=config.alert_channel,
        user=config.alert_user,
        space=config.alert_space,
    )
    store.on_crisis = alerts.on_crisis
    classifier = _classifier(settings, default_backend)
    crisis = CrisisCheck(
        detector=CrisisDetector(max_scan_chars=config.max_scan_chars),
        classifier=classifier,
        classify=config.classify,
        classifier_timeout_s=config.classifier_timeout_s,
        resources=config.crisis_resources,
        replies=config.crisis_replies,
        region=config.region,
        default_language=config.default_language,
        pause=timedelta(hours=config.proactive_pause_hours),
    )
    # Bans, mutes, limits and the age gate right after crisis: a person in crisis is
    # always answered; nobody silenced gets a disclosure or the model.
    limits = LimitsCheck(LimitStore(db), config.limits)
    inputs: list[InputCheck] = [crisis, limits, RatingCheck(AgeStore(db))]
    inputs.append(DisclosureQuestionCheck(store))
    if config.disclose_first_contact:
        inputs.append(FirstContactCheck(store, exempt=frozenset(config.first_contact_exempt)))
    outputs: list[OutputCheck] = [HumanClaimCheck(), *moderation_checks(settings)]
    stage = SafetyStage(
        input_checks=[*inputs, *(extra_input or [])],
        output_checks=[*outputs, *(extra_output or [])],
        sink=store,
    )
    return Safety(stage=stage, store=store, alerts=alerts, classifier=classifier)


def _classifier(
    settings: Settings, default_backend: Callable[[], Awaitable[LLMBackend]] | None
) -> CrisisClassifier | None:
    config = settings.safety
    if config.classifier == "off":
        return None
    model = config.classifier_model
    if config.classifier_base_url is None and settings.llm.backend != "openai":
        if default_backend is None or config.classifier == "llama_guard":
            # A Llama Guard model is served, never the chat model in-process.
            from bot.errors import ConfigError

            raise ConfigError(
                f"safety.classifier = {config.classifier!r} needs a server: set "
                "safety.classifier_base_url (an OpenAI-compatible server such as vLLM)"
            )
        return LazyClassifier(config.classifier, default_backend, model=model, owned=False)
    base_url = config.classifier_base_url or settings.llm.base_url

    async def make() -> LLMBackend:
        from bot.llm.factory import create_backend

        return await create_backend(
            settings.llm, backend="openai", model=model or settings.llm.model, base_url=base_url
        )

    return LazyClassifier(config.classifier, make, model=model, owned=True)
