"""The router between adapters and the engine (bot/groups/router.py): one copy of a
group message per present persona, the speakers last; DMs untouched; a persona's
reply shown to the others as a bot's message. Personas are real parsed files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bot.errors import PersonaError
from bot.groups.policy import GroupSettings
from bot.groups.router import PERSONA_ACTOR_PREFIX, GroupRouter
from bot.messages import Actor, Incoming, Outgoing, Scope
from bot.personas.loader import LoadedPersona, parse_persona
from tests.test_engine import PERSONA


class _Personas:
    def __init__(self) -> None:
        self.by_id: dict[str, LoadedPersona] = {}
        for pid, name in (("tester", "Tess"), ("other", "Otto"), ("third", "Tria")):
            text = PERSONA.replace("id: tester", f"id: {pid}").replace("Tess", name)
            self.by_id[pid] = parse_persona(text.encode(), Path(f"{pid}.yaml"))

    def get(self, persona_id: str) -> LoadedPersona:
        try:
            return self.by_id[persona_id]
        except KeyError:
            raise PersonaError(f"no persona {persona_id}") from None


class _Authors:
    def __init__(self, by_id: dict[str, str] | None = None) -> None:
        self.by_id = by_id or {}

    async def author_persona(
        self, scope: Scope, platform_message_id: str, personas: tuple[str, ...]
    ) -> str | None:
        found = self.by_id.get(platform_message_id)
        return found if found in personas else None


PERSONAS = _Personas()  # parsed once: a persona's trial render is not what is tested


def router(authors: _Authors | None = None, **channels: object) -> GroupRouter:
    groups = GroupSettings.model_validate({"channels": channels})
    return GroupRouter(groups, PERSONAS, authors or _Authors(), rng=random.Random(0),
                       clock=lambda: 100.0)  # fmt: skip


def message(text: str, *, space: str | None = "g", user: str = "42", bot: bool = False,
            addressed: bool = False, reply_to: str | None = None) -> Incoming:  # fmt: skip
    scope = Scope(platform="discord", space=space, channel="c1", user=user, persona="tester")
    return Incoming(
        scope=scope,
        actor=Actor(platform="discord", id=user, display_name="Ann", is_bot=bot),
        text=text,
        platform_message_id="m1",
        reply_to_platform_id=reply_to,
        addressed_to_bot=addressed,
    )


async def test_one_copy_per_present_persona_speakers_last() -> None:
    r = router(**{"discord:c1": {"personas": ["other", "third", "missing"]}})
    with capture_logs() as logs:
        copies = await r.route(message("Otto and Tria, hello"))
    assert [(c.scope.persona, c.addressed_to_bot) for c in copies] == [
        ("tester", False), ("other", True), ("third", True)]  # fmt: skip
    assert all(c.text == "Otto and Tria, hello" and c.actor.id == "42" for c in copies)
    decision = next(e for e in logs if e["event"] == "group.decision")
    assert decision["reasons"] == {"tester": "other_addressed", "other": "name", "third": "name"}
    assert any(e["event"] == "group.unknown_persona" and e["persona"] == "missing" for e in logs)


async def test_a_reply_to_a_persona_is_for_it_and_dms_pass_through() -> None:
    r = router(_Authors({"7": "other"}), **{"discord:c1": {"personas": ["other"]}})
    copies = await r.route(message("yes!", addressed=True, reply_to="7"))
    assert [(c.scope.persona, c.addressed_to_bot) for c in copies] == [
        ("tester", False), ("other", True)]  # fmt: skip
    dm = message("hi", space=None, addressed=True)
    assert await r.route(dm) == [dm]
    assert r.counters.snapshot() == {"silent.other_addressed": 1, "spoke.reply": 1}


async def test_a_reply_is_echoed_to_the_others_as_a_bot_and_never_to_its_author() -> None:
    r = router(**{"discord:c1": {"personas": ["other"]}})
    place = message("x").scope
    reply = Outgoing(scope=place.with_persona("other"), text="Tess, hi", message_id=5)
    echoed = r.echo(reply, "900", "tester")
    assert echoed is not None
    assert echoed.actor == Actor(platform="discord", id=f"{PERSONA_ACTOR_PREFIX}other",
                                 display_name="Otto", is_bot=True)  # fmt: skip
    assert echoed.scope.persona == "tester" and echoed.platform_message_id == "900"
    copies = await r.route(echoed)
    assert [(c.scope.persona, c.addressed_to_bot) for c in copies] == [("tester", False)]
    assert r.counters.get("silent", "own_message") == 1
    assert r.counters.get("silent", "from_bot") == 1
    # Nobody else present, an apology, an empty text: nothing to show.
    alone = router()
    assert alone.echo(reply.model_copy(update={"scope": place}), "901", "tester") is None
    assert r.echo(reply.model_copy(update={"is_error": True}), "902", "tester") is None
    assert r.echo(reply.model_copy(update={"text": "  "}), "903", "tester") is None


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=60) | st.sampled_from(["Tess", "Otto?", "Tria and Otto", "hi"]),
    bot=st.booleans(),
    addressed=st.booleans(),
    reply_to=st.none() | st.sampled_from(["1", "2", "3"]),
)
async def test_route_properties(
    text: str, bot: bool, addressed: bool, reply_to: str | None
) -> None:
    r = router(_Authors({"1": "tester", "2": "other"}),
               **{"discord:c1": {"personas": ["other", "third"]}})  # fmt: skip
    copies = await r.route(message(text, bot=bot, addressed=addressed, reply_to=reply_to))
    personas = [c.scope.persona for c in copies]
    assert sorted(personas) == ["other", "tester", "third"]  # each present persona once
    flags = [c.addressed_to_bot for c in copies]
    assert flags == sorted(flags)  # the silent first, then who answers
    if sum(flags) > 1:
        assert not bot
    assert all(c.model_copy(update={"scope": copies[0].scope, "addressed_to_bot": False})
               == copies[0].model_copy(update={"addressed_to_bot": False})
               for c in copies)  # fmt: skip


@pytest.mark.parametrize("key", ["discord:c1", "discord:g"])
async def test_a_channel_or_its_server_configures_presence(key: str) -> None:
    r = router(**{key: {"personas": ["other"]}})
    assert [p.id for p in r.present(message("x").scope)] == ["tester", "other"]
