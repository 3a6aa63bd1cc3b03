"""The groups layer between an adapter and the engine: for one group message, which
personas are present, who answers (`decide`), and one `Incoming` per present
persona, so each stores the message in its own conversation (and so knows what was
said where it was present) and the speakers answer it as their own turns.

`GroupRouter.route` is what `Adapter.answer` calls for every message outside a
DM; `GroupRouter.echo` turns a persona's delivered reply into a message the other
personas present see (from a bot: the bot-to-bot chain counts it). Every decision
is logged as `group.decision` with each persona's reason, and counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from bot.errors import PersonaError, StorageError
from bot.groups.decide import ChannelView, Decision, MessageFacts, Present, decide
from bot.groups.policy import GroupSettings, SpeakPolicy
from bot.groups.state import ChannelStates, GroupCounters, GroupState
from bot.messages import Actor, Incoming, Outgoing, Scope, utcnow

__all__ = ["PERSONA_ACTOR_PREFIX", "GroupRouter"]

log = structlog.get_logger("bot.groups")

#: An `Actor.id` of this form is one of our personas (its reply, shown to the
#: others); platform user ids are numbers, so no person can have one.
PERSONA_ACTOR_PREFIX = "persona:"


class _Personas(Protocol):
    def get(self, persona_id: str) -> object: ...


class _Authors(Protocol):
    async def author_persona(
        self, scope: Scope, platform_message_id: str, personas: tuple[str, ...]
    ) -> str | None: ...


class GroupRouter:
    """Decides, for each group message, which present personas answer it."""

    def __init__(
        self,
        settings: GroupSettings,
        personas: _Personas,
        authors: _Authors,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        state: ChannelStates | None = None,
    ) -> None:
        """`rng` and `clock` are arguments so tests can seed and set them. `state`
        keeps the channels' budget, cooldowns and chain: the database's
        (`GroupStore`, shared by workers and kept across restarts) or, when it is
        None or the config says `groups.state = "process"`, this process's
        (`GroupState`). `clock` is wall-clock time: with a shared store every
        worker's clock must agree."""
        self.settings = settings
        self.personas = personas
        self.authors = authors
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.state: ChannelStates = (
            state if state is not None and settings.state == "database" else GroupState()
        )
        self.counters = GroupCounters()
        #: Where decisions go while the database cannot be reached.
        self._fallback = GroupState()
        self._warned: set[tuple[str, str]] = set()  # (persona, channel): said once

    def present(self, scope: Scope) -> list[Present]:
        """The personas in `scope`'s place: its own persona first, then config's
        `groups.channels` entry for it; personas without a file are left out."""
        entry = self.settings.channel(scope.platform, scope.space, scope.channel)
        ids = [scope.persona, *(entry.personas if entry is not None else ())]
        found: list[Present] = []
        for pid in dict.fromkeys(ids):
            try:
                persona = self.personas.get(pid).persona  # type: ignore[attr-defined]
            except PersonaError:
                if (pid, scope.channel) not in self._warned and len(self._warned) < 10_000:
                    self._warned.add((pid, scope.channel))
                    log.warning("group.unknown_persona", persona=pid, channel=scope.channel)
                continue
            policy: SpeakPolicy = persona.groups
            if entry is not None:
                policy = policy.merged(entry.speak.get(pid))
            found.append(Present(pid, (persona.name, *policy.nicknames), policy))
        return found

    async def route(self, incoming: Incoming) -> list[Incoming]:
        """One `Incoming` per present persona (the silent ones first, then those who
        answer, in order), each `addressed_to_bot` as decided. A DM is returned as
        it is: its one persona answers it."""
        scope = incoming.scope
        if scope.is_direct:
            return [incoming]
        present = self.present(scope)
        if not present:
            return [incoming]
        ids = tuple(p.id for p in present)
        replied = None
        if incoming.reply_to_platform_id:
            replied = await self.authors.author_persona(scope, incoming.reply_to_platform_id, ids)
        actor = incoming.actor.id
        facts = MessageFacts(
            text=incoming.text,
            author_is_bot=incoming.actor.is_bot,
            author_persona=actor[len(PERSONA_ACTOR_PREFIX) :]
            if actor.startswith(PERSONA_ACTOR_PREFIX)
            else None,
            platform_addressed=incoming.addressed_to_bot,
            replied_persona=replied,
        )
        decision = await self.decide(scope, facts, present)
        silent = [v for v in decision.verdicts if not v.speak and v.reason != "own_message"]
        speaking = [v for v in decision.verdicts if v.speak]
        return [
            incoming.model_copy(
                update={"scope": scope.with_persona(v.persona), "addressed_to_bot": v.speak}
            )
            for v in (*silent, *speaking)
        ]

    async def decide(self, scope: Scope, facts: MessageFacts, present: list[Present]) -> Decision:
        """`decide` with this channel's state and limits; recorded, counted and logged.
        When a database-kept state cannot be read or written, this process's own
        keeps the decision (logged): the message is still decided, as it was before
        the state moved to the database (and the engine then fails to store it too,
        so nothing is answered twice)."""
        entry = self.settings.channel(scope.platform, scope.space, scope.channel)
        rpm = self.settings.replies_per_minute
        chain = self.settings.max_bot_chain
        if entry is not None:
            rpm = entry.replies_per_minute if entry.replies_per_minute is not None else rpm
            chain = entry.max_bot_chain if entry.max_bot_chain is not None else chain
        key = f"{scope.platform}/{scope.channel}/{scope.thread or '-'}"
        now = self.clock()
        rng = self.rng

        def choose(seen: ChannelView) -> Decision:
            return decide(facts, present, seen, rng, now)

        async def decided(state: ChannelStates) -> tuple[ChannelView, Decision]:
            return await state.decide(
                key, now, replies_per_minute=rpm, max_bot_chain=chain, facts=facts, choose=choose
            )

        try:
            view, decision = await decided(self.state)
        except StorageError as exc:
            log.warning("group.state_unavailable", channel=scope.channel, error=str(exc))
            view, decision = await decided(self._fallback)
        self.counters.count(decision)
        log.info(
            "group.decision",
            platform=scope.platform,
            channel=scope.channel,
            thread=scope.thread,
            speakers=list(decision.speakers),
            reasons={v.persona: v.reason for v in decision.verdicts},
            from_bot=facts.author_is_bot,
            bot_chain=view.bot_chain,
            replies_last_minute=view.replies_last_minute,
        )
        return decision

    def dropped(self, platform: str, channel: str, reason: str) -> None:
        """A message the adapter drops before any decision (a bot's, with
        discord.ignore_bots): logged and counted as a silent verdict all the same."""
        self.counters.add("silent", reason)
        log.info("group.decision", platform=platform, channel=channel, speakers=[], reason=reason)

    def echo(
        self, reply: Outgoing, platform_message_id: str | None, place_persona: str
    ) -> Incoming | None:
        """A delivered reply as a message the other personas present receive (written
        by a bot: theirs to answer only with `answer_bots`, and the chain counts it);
        None when nobody else is present or the reply was an apology.
        `place_persona` is the place's own persona (the routed message's)."""
        scope = reply.scope
        if scope.is_direct or reply.is_error or not reply.text.strip():
            return None
        place = scope.with_persona(place_persona)
        present = self.present(place)
        if not any(p.id != scope.persona for p in present):
            return None
        name = next((p.names[0] for p in present if p.id == scope.persona), scope.persona)
        actor = Actor(
            platform=scope.platform,
            id=f"{PERSONA_ACTOR_PREFIX}{scope.persona}",
            display_name=name,
            is_bot=True,
        )
        return Incoming(
            scope=place.model_copy(update={"user": actor.id}),
            actor=actor,
            text=reply.text,
            platform_message_id=platform_message_id
            or (f"reply:{reply.message_id}" if reply.message_id is not None else None),
            addressed_to_bot=False,
            received_at=utcnow(),
        )
