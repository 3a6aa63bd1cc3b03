"""Persona lore through the real engine: what lands in the system message, and where."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.app import App, open_app
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.personas.lorebook import LORE_HEADING
from tests.test_engine import PERSONA, ScriptedMemory, dm, make_settings

LORE = """\
lore:
  budget_tokens: 200
  scan_depth: 2
  entries:
    - name: home
      always: true
      text: You live in a lighthouse on a rock.
    - name: keeper
      keys: [keeper, Ada]
      text: The old keeper was called Ada; she taught you to fix the lamp.
    - name: gulls
      keys: [gull, gulls, 海鸥]
      text: The gulls steal chips from tourists.
"""

HOME = "- You live in a lighthouse on a rock."
KEEPER = "- The old keeper was called Ada; she taught you to fix the lamp."
GULLS = "- The gulls steal chips from tourists."


def write_persona(tmp_path: Path, lore: str = LORE) -> None:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA + lore, encoding="utf-8")


@pytest.fixture
async def open_lore_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Opens the app over the tester persona with LORE; memory is off unless asked."""
    opened: list[Any] = []

    async def factory(backend: MockBackend, *, memory: bool = False, lore: str = LORE) -> App:
        write_persona(tmp_path, lore)
        cm = open_app(make_settings(tmp_path), backend=backend, watch=False, memory=memory)
        app = await cm.__aenter__()
        opened.append(cm)
        return app

    yield factory
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)


def system_of(request: ChatRequest) -> str:
    assert request.messages[0].role == "system"
    return request.messages[0].content


async def test_keyword_in_the_message_puts_its_entry_in_the_system_message(
    open_lore_app: Any,
) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    assert app.engine.memory is None  # lore needs no memory
    await app.engine.handle(dm("Tell me about the old KEEPER"))
    system = system_of(backend.requests[-1])
    assert system.endswith(f"{LORE_HEADING}\n{HOME}\n{KEEPER}")
    assert GULLS not in system
    assert system.index("You are Tess") < system.index(LORE_HEADING)
    assert "medical advice" in system  # the static guidance is still there


async def test_without_a_keyword_only_always_on_entries_are_shown(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("Do you like bookkeeping?"))  # 'keeper' inside a word
    system = system_of(backend.requests[-1])
    assert system.endswith(f"{LORE_HEADING}\n{HOME}")
    assert KEEPER not in system and GULLS not in system


async def test_cjk_keyword_in_a_message_triggers_its_entry(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("今天看到好多海鸥！"))
    assert system_of(backend.requests[-1]).endswith(f"{HOME}\n{GULLS}")


async def test_recent_history_triggers_entries_up_to_the_scan_depth(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("I saw a gull"))
    await app.engine.handle(dm("what else?"))  # history: the gull message, "ok"
    assert GULLS in system_of(backend.requests[-1])
    await app.engine.handle(dm("and then?"))  # scan_depth 2: "what else?", "ok"
    system = system_of(backend.requests[-1])
    assert GULLS not in system and system.endswith(f"{LORE_HEADING}\n{HOME}")
    # The gull message is still in the prompt's history; only the scan is bounded.
    assert "I saw a gull" in [m.content for m in backend.requests[-1].messages]


async def test_lore_goes_before_recalled_memories(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend, memory=True)
    memory = ScriptedMemory("What you remember about Ann:\n- Ann likes the keeper's stories.")
    app.engine.memory = memory
    await app.engine.handle(dm("Was Ada kind?"))
    system = system_of(backend.requests[-1])
    assert system.endswith(
        f"{LORE_HEADING}\n{HOME}\n{KEEPER}\n\n"
        "What you remember about Ann:\n- Ann likes the keeper's stories."
    )
    [recall] = memory.recalls
    assert recall.query == "Was Ada kind?"  # lore does not change what memory is asked


async def test_lore_depends_on_the_conversation_not_on_other_people(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("Tell me about Ada", user="u1", name="Ann"))
    assert KEEPER in system_of(backend.requests[-1])
    await app.engine.handle(dm("hello", user="u2", name="Bob"))
    system = system_of(backend.requests[-1])
    assert "Bob" in system and KEEPER not in system and HOME in system


async def test_proactive_turn_scans_the_instruction_and_puts_lore_before_the_cue(
    open_lore_app: Any,
) -> None:
    backend = MockBackend(lambda req: "Good morning!")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("the gulls were loud"))
    out = await app.engine.proactive(
        dm("x").scope, instruction="Tell Ann something about the keeper.", display_name="Ann"
    )
    assert out is not None
    system = system_of(backend.requests[-1])
    lore = f"{LORE_HEADING}\n{HOME}\n{KEEPER}\n{GULLS}"  # instruction, then history
    assert f"{lore}\n\nNow you write first" in system


async def test_no_lore_section_changes_nothing(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend, lore="")
    await app.engine.handle(dm("the keeper"))
    system = system_of(backend.requests[-1])
    assert LORE_HEADING not in system
    assert system.endswith("You are Tess, talking with Ann on test.")


async def test_entries_over_the_budget_are_left_out_and_logged(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    # Estimated tokens: heading and home 17, with the keeper 36, with the gulls 28.
    app = await open_lore_app(backend, lore=LORE.replace("budget_tokens: 200", "budget_tokens: 30"))
    with capture_logs() as logs:
        await app.engine.handle(dm("Ada and the gulls"))
    system = system_of(backend.requests[-1])
    assert system.endswith(f"{LORE_HEADING}\n{HOME}\n{GULLS}")
    [entry] = [e for e in logs if e["event"] == "lore.over_budget"]
    assert entry["shown"] == ("home", "gulls") and entry["left_out"] == ("keeper",)


async def test_a_reloaded_persona_serves_its_new_lore(open_lore_app: Any, tmp_path: Path) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend)
    await app.engine.handle(dm("hi"))
    assert HOME in system_of(backend.requests[-1])
    write_persona(tmp_path, LORE.replace("in a lighthouse on a rock", "on a houseboat"))
    assert await app.personas.reload(tmp_path / "personas" / "tester.yaml") == []
    await app.engine.handle(dm("hi again"))
    system = system_of(backend.requests[-1])
    assert "- You live on a houseboat." in system and HOME not in system


# -- positions, timers and worlds through the real app ------------------------------

PLACED = """\
lore:
  budget_tokens: 400
  entries:
    - name: before
      keys: [tide]
      position: before_char
      text: BEFORE the tide.
    - name: after
      keys: [tide]
      text: AFTER the tide.
    - name: deep
      keys: [tide]
      position: at_depth
      depth: 2
      text: DEEP the tide.
    - name: bottom
      keys: [tide]
      position: at_depth
      depth: 0
      text: BOTTOM the tide.
    - name: very deep
      keys: [tide]
      position: at_depth
      depth: 50
      text: TOP the tide.
"""


async def test_each_position_goes_where_it_belongs(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend, lore=PLACED)
    await app.engine.handle(dm("hello"))
    await app.engine.handle(dm("and the tide?"))
    messages = [(m.role, m.content) for m in backend.requests[-1].messages]
    roles = [role for role, _ in messages]
    assert roles == ["system", "system", "user", "system", "assistant", "user", "system"]
    system = messages[0][1]
    # before_char ahead of the persona's prompt, after_char after it.
    assert system.startswith(f"{LORE_HEADING}\n- BEFORE the tide.\n\n")
    assert system.index("BEFORE") < system.index("Keep replies") < system.index("You are Tess")
    assert system.endswith(f"{LORE_HEADING}\n- AFTER the tide.")
    # Deeper than the history: at its start; depth 2: before the last two; 0: last.
    assert messages[1][1] == f"{LORE_HEADING}\n- TOP the tide."
    assert messages[2] == ("user", "hello")
    assert messages[3][1] == f"{LORE_HEADING}\n- DEEP the tide."
    assert messages[5] == ("user", "and the tide?")
    assert messages[6][1] == f"{LORE_HEADING}\n- BOTTOM the tide."


TIMED = """\
lore:
  entries:
    - name: storm
      keys: [storm]
      sticky: 4
      cooldown: 4
      text: A storm is coming.
"""
STORM = "- A storm is coming."


async def test_timers_hold_across_turns_and_restarts_per_conversation(
    open_lore_app: Any,
) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend, lore=TIMED)

    async def shown(text: str, user: str = "u1") -> bool:
        await app.engine.handle(dm(text, user=user))
        return STORM in system_of(backend.requests[-1])

    assert await shown("a storm!")  # length 1: fires; sticky through 5, cooldown through 9
    assert await shown("calm")  # 3: sticky
    assert await shown("calm")  # 5: sticky
    assert not await shown("storm again")  # 7: cooling down
    assert not await shown("calm", user="u2")  # another conversation: its own timers
    assert await shown("storm", user="u2")

    def rows() -> list[tuple[Any, ...]]:
        with app.db.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.exec_driver_sql(
                    "SELECT persona_id, entry_key, sticky_until, cooldown_until "
                    "FROM lore_timers ORDER BY conversation_id"
                )
            ]

    assert rows() == [("tester", "storm", 5, 9), ("tester", "storm", 7, 11)]
    assert not await shown("storm")  # 9: still cooling down
    assert await shown("storm")  # 11: fires again


async def test_timers_survive_a_restart(open_lore_app: Any) -> None:
    backend = MockBackend(lambda req: "ok")
    app = await open_lore_app(backend, lore=TIMED)
    await app.engine.handle(dm("storm"))
    second = MockBackend(lambda req: "ok")
    again = await open_lore_app(second, lore=TIMED)  # a new app on the same file
    await again.engine.handle(dm("calm"))
    assert STORM in system_of(second.requests[-1])


async def test_two_personas_share_a_world(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    (personas / "worlds").mkdir(parents=True)
    (personas / "worlds" / "harbour.yaml").write_text(
        "id: harbour\nentries:\n  - name: docks\n    keys: [dock]\n"
        "    text: The docks smell of tar.\n",
        encoding="utf-8",
    )
    world = "lore:\n  worlds: [harbour]\n"
    (personas / "tester.yaml").write_text(PERSONA + world, encoding="utf-8")
    (personas / "other.yaml").write_text(
        PERSONA.replace("id: tester", "id: other") + world, encoding="utf-8"
    )
    backend = MockBackend(lambda req: "ok")
    async with open_app(make_settings(tmp_path), backend=backend, watch=False) as app:
        assert sorted(app.personas.ids()) == ["other", "tester"]  # the world is no persona
        await app.engine.handle(dm("to the dock"))
        scope = Scope(platform="test", channel="dm-u2", user="u2", persona="other")
        actor = Actor(platform="test", id="u2", display_name="Bo")
        await app.engine.handle(Incoming(scope=scope, actor=actor, text="the dock"))
        systems = [system_of(r) for r in backend.requests]
    assert len(systems) == 2
    assert all(s.endswith(f"{LORE_HEADING}\n- The docks smell of tar.") for s in systems)
