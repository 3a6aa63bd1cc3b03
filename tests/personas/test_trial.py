"""The trial render at load, reload and upload: a version whose templates fail it is
never served, the last good one keeps serving, and one bad file costs only itself.
And a template that runs to the deadline at render time costs only its own turn."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.app import App, open_app
from bot.commands import CommandContext
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.personas import RENDER_LIMITS, PersonaRegistry

from .conftest import persona_text

Write = Callable[..., Path]

RUNAWAY = "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}"
REFUSED_AT_RENDER = "{{ user.nickname }}"


def with_prompt(persona_id: str, template: str) -> str:
    return f"id: {persona_id}\nname: {persona_id.title()}\nsystem_prompt: |\n  {template}\n"


async def test_reload_keeps_the_last_good_version_when_the_trial_fails(
    write: Write, tmp_path: Path
) -> None:
    path = write("a.yaml", persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    assert await registry.load_all() == []
    good = registry.get("a")
    for template in (RUNAWAY, REFUSED_AT_RENDER, "{{ 'x' * 10**9 }}"):
        write("a.yaml", with_prompt("a", template))
        with capture_logs() as logs:
            [problem] = await registry.reload(path)
        assert (problem.path, problem.line, problem.field) == (path, 4, "system_prompt")
        assert registry.get("a") is good
        rejected = [e for e in logs if e["event"] == "persona.rejected"]
        assert rejected and rejected[0]["kept_hash"] == good.content_hash


async def test_one_bad_file_among_good_ones_blocks_nothing(write: Write, tmp_path: Path) -> None:
    write("a.yaml", persona_text("a"))
    write("b.yaml", with_prompt("b", RUNAWAY))
    write("c.yaml", with_prompt("c", "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}"))
    write("d.yaml", with_prompt("d", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"))
    write("e.yaml", persona_text("e"))
    registry = PersonaRegistry([tmp_path])
    problems = await registry.load_all()
    assert sorted(p.path.name for p in problems) == ["b.yaml", "c.yaml", "d.yaml"]
    assert registry.ids() == ["a", "e"]


async def test_a_loader_crash_costs_only_its_file(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loader turns every problem into a PersonaFileError; a bug that raises
    # anything else must still not stop the other files from loading.
    from bot.personas import registry as registry_module

    real = registry_module.load_persona  # type: ignore[attr-defined]
    crash = write("crash.yaml", persona_text("crash"))
    write("fine.yaml", persona_text("fine"))

    def load(path: Path) -> Any:
        if path == crash:
            raise RuntimeError("boom")
        return real(path)

    monkeypatch.setattr(registry_module, "load_persona", load)
    registry = PersonaRegistry([tmp_path])
    [problem] = await registry.load_all()
    assert problem.path == crash and "boom" in problem.message
    assert registry.ids() == ["fine"]


# -- through the app: upload and a turn ---------------------------------------------------

SLOW_FOR_ONE = (
    "{% set xs = (range(10000)|list) * 9 %}{% if user.id == 'slowpoke' %}"
    "{% for i in range(10000) %}{{ xs|max }}{% endfor %}{% endif %}You are Tess."
)
PERSONA = f"id: tester\nname: Tess\nsystem_prompt: |\n  {SLOW_FOR_ONE}\ngreeting: Hi!\n"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/t.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": False},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "reply"), watch=False) as opened:
        yield opened


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "t.db") as conn:
        return conn.execute(sql).fetchall()


def moderator(**kw: Any) -> CommandContext:
    scope = Scope(platform="test", channel="dm-mod", user="mod", persona="tester")
    return CommandContext(
        scope=scope,
        actor=Actor(platform="test", id="mod", display_name="Mo"),
        is_moderator=True,
        attachment_name="tester.yaml",
        **kw,
    )


async def test_upload_of_a_version_that_fails_the_trial_changes_nothing(
    app: App, tmp_path: Path
) -> None:
    before = app.personas.get("tester")
    on_disk = (tmp_path / "personas" / "tester.yaml").read_text(encoding="utf-8")
    for template in (RUNAWAY, REFUSED_AT_RENDER):
        answer = await app.commands.run(
            "persona", "upload", moderator(attachment_text=with_prompt("tester", template))
        )
        assert answer.startswith("The persona has problems:")
        assert "tester.yaml:4:3: system_prompt: fails when rendered with sample values" in answer
        assert app.personas.get("tester") is before
        assert (tmp_path / "personas" / "tester.yaml").read_text(encoding="utf-8") == on_disk
    assert len(rows(tmp_path, "select * from persona_versions where persona_id='tester'")) == 1


def dm(user: str) -> Incoming:
    scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=user), text="hi"
    )


async def test_a_render_that_hits_the_deadline_does_not_block_the_loop(
    app: App, tmp_path: Path
) -> None:
    # The template passed its trial (the sample people are not 'slowpoke'), so only
    # the render bound stands between this turn and a stuck bot.
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    stop = asyncio.Event()
    ticking = asyncio.create_task(ticker(stop))
    started = time.monotonic()
    [slow] = await app.engine.handle(dm("slowpoke"))
    elapsed = time.monotonic() - started
    [fine] = await app.engine.handle(dm("ann"))
    stop.set()
    await ticking

    assert slow.is_error and not fine.is_error and fine.text == "reply"
    assert RENDER_LIMITS.max_seconds * 0.9 < elapsed < RENDER_LIMITS.max_wall_seconds + 3
    during = [t for t in ticks if started <= t <= started + elapsed]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    # Blocked, the loop would have stood still for the whole render (0.5 s).
    assert len(during) >= 10 and max(gaps) < RENDER_LIMITS.max_seconds / 2
    [(stage, error_type, reason)] = rows(tmp_path, "select stage, error_type, reason from failures")
    assert (stage, error_type) == ("persona", "TemplateLimitError")
    assert "longer than 0.5 s" in reason


async def test_a_greeting_renders_off_the_loop(app: App) -> None:
    scope = Scope(platform="test", channel="dm-new", user="new", persona="tester")
    out = await app.engine.greeting(scope, "New")
    assert out is not None and out.text == "Hi!"


async def test_a_template_that_fails_only_for_the_layouts_made_up_people_still_serves(
    tmp_path: Path,
) -> None:
    # The engine renders the template for two made-up people to find its static
    # head; a template that fails for them (here: an unknown platform) must still
    # serve real people, who passed the trial.
    personas = tmp_path / "personas"
    personas.mkdir()
    template = "Hello from {{ {'telegram': 'T', 'discord': 'D', 'test': 'X'}[platform] }}."
    (personas / "tester.yaml").write_text(with_prompt("tester", template), encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/t.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": False},
        },
    )
    seen: list[Any] = []

    def answer(request: Any) -> str:
        seen.append(request)
        return "reply"

    async with open_app(settings, backend=MockBackend(answer), watch=False) as opened:
        [out] = await opened.engine.handle(dm("ann"))
    assert not out.is_error and out.text == "reply"
    assert "Hello from X." in seen[0].messages[0].content
