"""First messages: the greeting or one of a card's alternate greetings, the same for a
person every time; a card's group-only greetings in groups; card text stays text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App, open_app
from bot.llm.mock import MockBackend
from bot.messages import Scope
from bot.personas.greetings import greeting_choices, pick_greeting
from bot.personas.schema import Persona
from tests.test_engine import PERSONA, make_settings

CARD = """\
card:
  spec: chara_card_v3
  first_mes: "Hi {{user}}!"
  alternate_greetings:
    - "Oh, {{user}}, it's you. {{char}} waves."
    - "Evening! It is {{time}}. {{ ''.__class__ }} {% for x in y %}{% endraw %}"
    - "   "
  group_only_greetings:
    - "Hello, everyone! {{char}} is here."
"""


def persona(extra: str = CARD) -> Persona:
    import yaml

    return Persona.model_validate(yaml.safe_load(PERSONA + extra))


def dm_scope(user: str) -> Scope:
    return Scope(platform="telegram", channel=user, user=user, persona="tester")


def group_scope(user: str, channel: str = "-100") -> Scope:
    return Scope(platform="telegram", space=channel, channel=channel, user=user, persona="tester")


def test_dm_choices_are_the_greeting_and_the_alternates_and_blanks_are_skipped() -> None:
    fields = [field for field, _ in greeting_choices(persona(), group=False)]
    assert fields == ["greeting", "card.alternate_greetings.0", "card.alternate_greetings.1"]


def test_the_pick_is_stable_per_person_and_spread_over_people() -> None:
    p = persona()
    picks = {user: pick_greeting(p, dm_scope(user)) for user in map(str, range(300))}
    # A restart is a new Persona object: the same pick.
    again = persona()
    assert all(pick_greeting(again, dm_scope(u)) == picked for u, picked in picks.items())
    counts: dict[str, int] = {}
    for picked in picks.values():
        assert picked is not None
        counts[picked[0]] = counts.get(picked[0], 0) + 1
    assert set(counts) == {"greeting", "card.alternate_greetings.0", "card.alternate_greetings.1"}
    assert min(counts.values()) > 50  # roughly even


def test_groups_get_the_group_only_greetings_else_the_dm_ones() -> None:
    picked = pick_greeting(persona(), group_scope("7"))
    assert picked is not None and picked[0] == "card.group_only_greetings.0"
    without = persona(CARD.split("  group_only_greetings")[0])
    picked = pick_greeting(without, group_scope("7"))
    assert picked is not None and not picked[0].startswith("card.group_only")


def test_no_greeting_and_no_card_means_none() -> None:
    bare = Persona.model_validate(
        {"version": 1, "id": "bare", "name": "Bare", "system_prompt": "You are Bare."}
    )
    assert pick_greeting(bare, dm_scope("1")) is None


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA + CARD, encoding="utf-8")
    async with open_app(
        make_settings(tmp_path), backend=MockBackend(lambda r: "ok"), watch=False, memory=False
    ) as opened:
        yield opened


async def test_the_engine_greets_with_the_picked_greeting_rendered_as_text(app: App) -> None:
    p = app.engine.personas.get("tester").persona
    seen: dict[str, str] = {}
    for user in map(str, range(40)):
        field = pick_greeting(p, dm_scope(user))
        assert field is not None
        out = await app.engine.greeting(dm_scope(user), "Zoë {{ 7*7 }}")
        assert out is not None
        seen[field[0]] = out.text
        again = await app.engine.greeting(dm_scope(user), "Zoë {{ 7*7 }}")
        assert again is not None and again.text == out.text
    # The name as a speaker label (no `*`), never run as a template.
    assert seen["greeting"] == "Hi Zoë {{ 7 7 }}!"
    assert seen["card.alternate_greetings.0"] == "Oh, Zoë {{ 7 7 }}, it's you. Tess waves."
    # Card text is data: its Jinja is printed as written, the known macro filled in.
    hostile = seen["card.alternate_greetings.1"]
    assert hostile.startswith("Evening! It is ")
    assert hostile.endswith("{{ ''.__class__ }} {% for x in y %}{% endraw %}")
    group = await app.engine.greeting(group_scope("5"), "Ann")
    assert group is not None and group.text == "Hello, everyone! Tess is here."
