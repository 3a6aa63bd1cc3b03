"""The safety stage: the checks the engine runs around every turn, in one place.

    before_turn       after the incoming message is committed, before recall and
                      generation: crisis, disclosure questions, limits, mute, age gate.
                      A verdict either answers with a fixed text (the model is not
                      asked) or lets the turn go on, optionally with a notice sent
                      before the reply and extra system guidance.
    after_generation  before a reply is stored or sent: a reply claiming to be human,
                      declined topics, blocklists, other people's data. `ok` or
                      `blocked(reason)`; `moderate` regenerates once on a block, then
                      replaces the reply with the persona's short deflection.

Checks are small objects implementing `InputCheck` / `OutputCheck`, run in order.
Every hit and block goes to the `EventSink` (the `safety_events` table in the app)
and is counted in `SafetyStage.counters`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from bot.llm.base import Completion
from bot.messages import Incoming, Scope, TurnKind
from bot.personas import LoadedPersona

__all__ = [
    "EventSink",
    "InputCheck",
    "InputContext",
    "InputHit",
    "InputVerdict",
    "OutputCheck",
    "OutputContext",
    "OutputVerdict",
    "SafetyEvent",
    "SafetyStage",
]

log = structlog.get_logger("bot.safety")

DeltaCallback = Callable[[str], Awaitable[None]]
#: Generate one reply: `stream` is the delta callback for this attempt (None: not
#: streamed). Returns (clean text, completion).
Generate = Callable[[DeltaCallback | None], Awaitable[tuple[str, Completion]]]


@dataclass(frozen=True, slots=True)
class InputContext:
    """An incoming message, committed, about to be answered."""

    incoming: Incoming
    #: The cleaned text as stored (attachments described), not truncated.
    text: str
    message_id: int
    conversation_id: int
    user_id: int
    loaded: LoadedPersona
    #: No earlier message in this conversation's history (the engine's view).
    first_in_conversation: bool
    now: datetime

    @property
    def scope(self) -> Scope:
        return self.incoming.scope


@dataclass(frozen=True, slots=True)
class InputHit:
    """What one input check found. `reply` answers instead of the model; `notice` is
    sent before the model's reply; `guidance` joins the system message."""

    check: str
    verdict: str  # e.g. "crisis", "disclosure", "limited", "muted", "age_gate"
    reason: str
    reply: str | None = None
    notice: str | None = None
    guidance: str = ""
    #: Extra fields for the event row (language, layer, pause_until, ...).
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputVerdict:
    """The stage's answer for an incoming message.

    `kind` is None when the turn goes on as usual; otherwise it names what answered
    ("crisis", "disclosure", ...) and `reply` holds the fixed text to send instead of
    the model's. `notices` go before the model's reply; `guidance` joins the system
    message for this turn.
    """

    kind: str | None = None
    reply: str | None = None
    notices: tuple[str, ...] = ()
    guidance: str = ""
    hits: tuple[InputHit, ...] = ()

    @property
    def answers(self) -> bool:
        """True when a fixed reply stands in for the model."""
        return self.reply is not None


@dataclass(frozen=True, slots=True)
class OutputContext:
    """A generated reply about to be stored and sent."""

    scope: Scope
    loaded: LoadedPersona
    kind: TurnKind
    conversation_id: int
    #: The incoming message answered (None for a proactive turn or greeting).
    message_id: int | None = None
    user_id: int | None = None
    incoming_text: str | None = None
    #: 0 for the first generation, 1 for the regeneration after a block.
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class OutputVerdict:
    """`ok`, or blocked by `check` for `reason`."""

    ok: bool
    check: str = ""
    reason: str = ""

    @classmethod
    def passed(cls) -> OutputVerdict:
        return _OK

    @classmethod
    def blocked(cls, check: str, reason: str) -> OutputVerdict:
        return cls(False, check, reason)


_OK = OutputVerdict(True)


class InputCheck(Protocol):
    """One check of incoming messages (crisis, disclosure question, limits, ...)."""

    name: str

    async def check(self, ctx: InputContext) -> InputHit | None:
        """A hit, or None when this check has nothing to say."""
        ...


class OutputCheck(Protocol):
    """One check of generated replies; returns the reason it blocks, or None."""

    name: str

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        """Why `text` must not be sent, or None when it may."""
        ...


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """A hit or a block, as recorded (one row of `safety_events`)."""

    check: str
    verdict: str
    reason: str
    scope: Scope
    conversation_id: int | None
    message_id: int | None
    user_id: int | None
    at: datetime
    details: dict[str, object] = field(default_factory=dict)


class EventSink(Protocol):
    """Where hits and blocks are recorded (the database in the app)."""

    async def record(self, event: SafetyEvent) -> None:
        """Record one event; may raise (the stage logs it and goes on)."""
        ...


class SafetyStage:
    """The checks around a turn, in order, with their counters.

    `before_turn`: the first hit with a `reply` answers (checks after it do not
    run); notices and guidance of earlier hits are kept. `after_generation`: the
    first check that blocks decides. A check that raises is logged and counted as
    `error`, and the turn goes on (a broken check must not silence the bot); checks
    that must fail closed handle their own errors.
    """

    def __init__(
        self,
        *,
        input_checks: Sequence[InputCheck] = (),
        output_checks: Sequence[OutputCheck] = (),
        sink: EventSink | None = None,
    ) -> None:
        self.input_checks = list(input_checks)
        self.output_checks = list(output_checks)
        self.sink = sink
        #: (check, verdict) -> how many times, since the stage was made.
        self.counters: Counter[tuple[str, str]] = Counter()

    @classmethod
    def default(cls) -> SafetyStage:
        """The built-in checks with their defaults, recording to the log only."""
        from bot.safety.crisis import CrisisCheck
        from bot.safety.disclosure import DisclosureQuestionCheck, HumanClaimCheck

        # No first-contact notice here: it needs to know who was told (the app's store).
        return cls(
            input_checks=[CrisisCheck(), DisclosureQuestionCheck()],
            output_checks=[HumanClaimCheck()],
        )

    # -- before the turn ------------------------------------------------------------

    def may_coalesce(self, text: str) -> bool:
        """Whether a message may be answered by a later one of its author (a burst):
        not when a crisis check's patterns find anything in it, even an uncertain
        signal, because the later message's checks would not see this one."""
        from bot.safety.crisis import CrisisCheck  # the crisis module imports this one

        for check in self.input_checks:
            if isinstance(check, CrisisCheck) and check.detector.detect(text) is not None:
                return False
        return True

    async def before_turn(self, ctx: InputContext) -> InputVerdict:
        """Run the input checks on a committed message; see the class docstring."""
        hits: list[InputHit] = []
        for check in self.input_checks:
            try:
                hit = await check.check(ctx)
            except Exception as exc:
                self._check_failed(check.name, exc)
                continue
            if hit is None:
                continue
            hits.append(hit)
            await self._record_input(ctx, hit)
            if hit.reply is not None:
                break
        answer = next((h for h in hits if h.reply is not None), None)
        notices = tuple(h.notice for h in hits if h.notice and answer is None)
        guidance = "\n".join(h.guidance for h in hits if h.guidance)
        if answer is not None:
            return InputVerdict(
                kind=answer.verdict, reply=answer.reply, guidance=guidance, hits=tuple(hits)
            )
        return InputVerdict(notices=notices, guidance=guidance, hits=tuple(hits))

    # -- after generation -----------------------------------------------------------

    async def screen(self, ctx: OutputContext, text: str) -> OutputVerdict:
        """The output checks on `text`, nothing recorded (the stream guard uses it)."""
        for check in self.output_checks:
            try:
                reason = await check.check(ctx, text)
            except Exception as exc:
                self._check_failed(check.name, exc)
                continue
            if reason is not None:
                return OutputVerdict.blocked(check.name, reason)
        return OutputVerdict.passed()

    async def after_generation(self, ctx: OutputContext, text: str) -> OutputVerdict:
        """The output checks on a generated reply; a block is recorded and counted."""
        verdict = await self.screen(ctx, text)
        if not verdict.ok:
            await self._record(
                SafetyEvent(
                    check=verdict.check,
                    verdict="blocked",
                    reason=verdict.reason,
                    scope=ctx.scope,
                    conversation_id=ctx.conversation_id,
                    message_id=ctx.message_id,
                    user_id=ctx.user_id,
                    at=datetime.now(UTC),
                    details={"attempt": ctx.attempt, "excerpt": text[:200]},
                )
            )
        return verdict

    async def moderate(
        self,
        ctx: OutputContext,
        generate: Generate,
        on_delta: DeltaCallback | None = None,
    ) -> tuple[str, Completion, OutputVerdict]:
        """Generate a reply that passes the output checks.

        The first attempt streams through a `StreamGuard` (text is shown only once
        the checks passed on it); a blocked reply is regenerated once, not streamed;
        a second block is replaced by the persona's deflection. Returns the text to
        store and send, the completion, and the last verdict (not ok: deflected).
        """
        if not self.output_checks:
            text, completion = await generate(on_delta)
            return text, completion, OutputVerdict.passed()
        from bot.safety.stream import StreamGuard  # it screens through this stage

        guard = StreamGuard(self, ctx, on_delta) if on_delta is not None else None
        text, completion = await generate(guard.feed if guard is not None else None)
        verdict = await self.after_generation(ctx, text)
        if verdict.ok:
            if guard is not None:
                await guard.flush()
            return text, completion, verdict
        if guard is not None:
            guard.abandon()
        retry = _replace(ctx, attempt=1)
        text, completion = await generate(None)
        verdict = await self.after_generation(retry, text)
        if verdict.ok:
            return text, completion, verdict
        return self._stand_in(verdict, ctx.loaded), completion, verdict

    # -- helpers --------------------------------------------------------------------

    def _stand_in(self, verdict: OutputVerdict, loaded: LoadedPersona) -> str:
        """What replaces a reply blocked twice: the blocking check's own `replacement`
        (the disclosure text for a human claim), else the persona's deflection."""
        for check in self.output_checks:
            replacement = getattr(check, "replacement", None)
            if check.name == verdict.check and callable(replacement):
                return str(replacement(loaded))
        return deflection(loaded)

    async def _record_input(self, ctx: InputContext, hit: InputHit) -> None:
        await self._record(
            SafetyEvent(
                check=hit.check,
                verdict=hit.verdict,
                reason=hit.reason,
                scope=ctx.scope,
                conversation_id=ctx.conversation_id,
                message_id=ctx.message_id,
                user_id=ctx.user_id,
                at=ctx.now,
                details=dict(hit.details),
            )
        )

    async def _record(self, event: SafetyEvent) -> None:
        self.counters[(event.check, event.verdict)] += 1
        log.info(
            "safety.event",
            check=event.check,
            verdict=event.verdict,
            reason=event.reason,
            message_id=event.message_id,
        )
        if self.sink is None:
            return
        try:
            await self.sink.record(event)
        except Exception as exc:  # the reply still goes out; the log keeps the event
            log.error("safety.record_failed", error=str(exc), error_type=type(exc).__name__)
            self.counters[("record", "error")] += 1

    def _check_failed(self, name: str, exc: Exception) -> None:
        log.warning(
            "safety.check_failed", check=name, error=str(exc), error_type=type(exc).__name__
        )
        self.counters[(name, "error")] += 1


def deflection(loaded: LoadedPersona) -> str:
    """The persona's short in-persona deflection for a reply that was blocked twice."""
    return loaded.persona.safety.decline_message


def _replace(ctx: OutputContext, **changes: object) -> OutputContext:
    from dataclasses import replace

    return replace(ctx, **changes)  # type: ignore[arg-type]
