"""The groups settings: a persona file's `groups:` section and the config's `groups`
(bot/groups/policy.py), and the per-channel state and counters (bot/groups/state.py).
Hostile values are problems with a place, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.groups.decide import Decision, MessageFacts, Verdict
from bot.groups.policy import GroupSettings, SpeakOverride, SpeakPolicy
from bot.groups.state import GroupCounters, GroupState
from bot.personas.loader import parse_persona
from bot.personas.problems import PersonaFileError
from tests.test_engine import PERSONA


def test_a_persona_file_sets_its_policy() -> None:
    text = PERSONA + (
        "groups:\n  mode: talkative\n  talkativeness: 0.25\n  cooldown_s: 90\n"
        "  nicknames: [Tessie]\n  keywords: [cats, 猫]\n  answer_bots: true\n"
    )
    policy = parse_persona(text.encode(), Path("tester.yaml")).persona.groups
    assert policy == SpeakPolicy(
        mode="talkative", talkativeness=0.25, cooldown_s=90, nicknames=("Tessie",),
        keywords=("cats", "猫"), answer_bots=True,
    )  # fmt: skip
    plain = parse_persona(PERSONA.encode(), Path("tester.yaml")).persona.groups
    assert plain == SpeakPolicy()  # old files stay valid: addressed only, no bots


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("groups: {mode: loud}", "groups.mode"),
        ("groups: {talkativeness: 1.5}", "groups.talkativeness"),
        ("groups: {talkativeness: -0.1}", "groups.talkativeness"),
        ("groups: {cooldown_s: 1e9}", "groups.cooldown_s"),
        ('groups: {nicknames: ["two\\nlines"]}', "groups.nicknames.0"),
        ('groups: {nicknames: [""]}', "groups.nicknames.0"),
        (f"groups: {{keywords: [{'x' * 65}]}}", "groups.keywords.0"),
        (f"groups: {{keywords: [{', '.join(['k'] * 51)}]}}", "groups.keywords"),
        ("groups: {answer_bots: maybe}", "groups.answer_bots"),
        ("groups: {shout: true}", "groups.shout"),
        ("groups: [always]", "groups"),
    ],
)
def test_hostile_persona_sections_are_problems_with_a_place(section: str, field: str) -> None:
    with pytest.raises(PersonaFileError) as caught:
        parse_persona((PERSONA + section + "\n").encode(), Path("tester.yaml"))
    problems = caught.value.problems
    assert any(p.field == field for p in problems), [str(p) for p in problems]
    assert all(p.line >= 1 for p in problems)


@pytest.mark.parametrize(
    "groups",
    [
        {"replies_per_minute": -1},
        {"max_bot_chain": 1000},
        {"channels": {"discord:1": {"personas": ["Not An Id"]}}},
        {"channels": {"discord:1": {"personas": ["a"] * 17}}},
        {"channels": {"discord:1": {"speak": {"a": {"mode": "never"}}}}},
        {"channels": {"discord:1": {"loud": True}}},
        {"channels": {"x": {}}},
    ],
)
def test_hostile_config_is_a_config_error(groups: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="groups"):
        load_settings(None, {"groups": groups})


def test_a_channel_override_wins_over_the_server_and_the_persona() -> None:
    channel = {"replies_per_minute": 2, "speak": {"a": {"mode": "always"}}}
    settings = GroupSettings.model_validate(
        {"channels": {"discord:10": channel, "discord:1": {"personas": ["b"]}}}
    )
    assert settings.channel("discord", "1", "10").replies_per_minute == 2  # type: ignore[union-attr]
    assert settings.channel("discord", "1", "11").personas == ("b",)  # type: ignore[union-attr]
    assert settings.channel("telegram", None, "10") is None
    base = SpeakPolicy(talkativeness=0.3, nicknames=("T",))
    merged = base.merged(SpeakOverride(mode="always"))
    assert merged == SpeakPolicy(mode="always", talkativeness=0.3, nicknames=("T",))
    assert base.merged(None) is base


def _spoke(*personas: str, reason: str = "name") -> Decision:
    return Decision(tuple(Verdict(p, True, reason) for p in personas))


def test_the_budget_window_slides_and_the_chain_resets_when_a_person_speaks() -> None:
    state = GroupState()
    person, bot = MessageFacts("hi"), MessageFacts("beep", author_is_bot=True)
    for t in range(5):
        state.record("c", person, _spoke("a"), now=float(t))
    view = state.view("c", 10.0, replies_per_minute=5, max_bot_chain=3)
    assert view.replies_last_minute == 5
    assert state.view("c", 62.5, replies_per_minute=5, max_bot_chain=3).replies_last_minute == 2
    state.record("c", bot, _spoke("a"), now=70.0)  # 1 (our reply to the person) + bot + reply
    assert state.view("c", 70.0, replies_per_minute=5, max_bot_chain=3).bot_chain == 3
    ours = MessageFacts("ok", author_persona="a", author_is_bot=True)
    state.record("c", ours, Decision(()), now=71.0)  # our reply shown back: not counted twice
    assert state.view("c", 71.0, replies_per_minute=5, max_bot_chain=3).bot_chain == 3
    state.record("c", person, Decision(()), now=72.0)
    assert state.view("c", 72.0, replies_per_minute=5, max_bot_chain=3).bot_chain == 0
    state.record("c", person, _spoke("a", reason="talkative"), now=80.0)
    assert state.view("c", 80.0, replies_per_minute=5, max_bot_chain=3).last_unprompted == {
        "a": 80.0
    }


def test_state_is_bounded() -> None:
    state = GroupState(max_channels=100)
    for n in range(1000):
        for t in range(20):
            state.record(f"c{n}", MessageFacts("x"), _spoke("a"), now=float(t))
    assert len(state) == 100
    assert state.view("c999", 0.0, replies_per_minute=0, max_bot_chain=3).replies_last_minute == 20
    assert state.view("c0", 0.0, replies_per_minute=0, max_bot_chain=3).replies_last_minute == 0


def test_counters_count_every_verdict() -> None:
    counters = GroupCounters()
    counters.count(Decision((Verdict("a", True, "name"), Verdict("b", False, "other_addressed"))))
    counters.count(Decision((Verdict("a", False, "budget"),)))
    counters.add("silent", "from_bot")
    assert counters.snapshot() == {
        "silent.budget": 1, "silent.from_bot": 1, "silent.other_addressed": 1, "spoke.name": 1,
    }  # fmt: skip
    assert counters.get("spoke", "name") == 1 and counters.get("spoke", "always") == 0
