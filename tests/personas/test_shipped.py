"""The personas shipped in personas/: valid, rendered, and in their own languages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import PersonaSettings
from bot.personas import (
    PersonaRegistry,
    PromptContext,
    check_paths,
    load_persona,
    render_greeting,
    render_system_prompt,
)

from .conftest import SHIPPED_DIR

SHIPPED = sorted(SHIPPED_DIR.glob("*.yaml"))


def test_the_expected_personas_ship() -> None:
    assert [p.stem for p in SHIPPED] == ["biscuit", "samantha", "xiaoyu"]
    assert PersonaSettings().default in {p.stem for p in SHIPPED}


def test_shipped_personas_pass_the_checker() -> None:
    assert [str(p) for p in check_paths([SHIPPED_DIR])] == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_file_points_editors_at_the_schema(path: Path) -> None:
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=./persona.schema.json"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize(("hour", "direct"), [(7, True), (12, False), (18, True), (23, False)])
def test_shipped_personas_render(path: Path, hour: int, direct: bool) -> None:
    loaded = load_persona(path)
    persona = loaded.persona
    assert loaded.persona.id == path.stem
    assert persona.examples and persona.safety.decline_topics and persona.style.traits
    ctx = PromptContext(
        "Zoë 🌸",
        "u-42",
        "telegram",
        datetime(2024, 5, 4, hour, 30, tzinfo=ZoneInfo("UTC")),
        "UTC",
        direct,
    )
    prompt = render_system_prompt(persona, ctx)
    greeting = render_greeting(persona, ctx)
    assert "Zoë 🌸" in prompt
    assert greeting is not None and "Zoë 🌸" in greeting
    assert "{{" not in prompt and "{%" not in prompt
    assert f"{hour}:30" in prompt


def test_xiaoyu_speaks_simplified_chinese() -> None:
    persona = load_persona(SHIPPED_DIR / "xiaoyu.yaml").persona
    assert persona.language == "zh"
    assert persona.name == "小雨"
    ctx = PromptContext(
        "小明",
        "u",
        "discord",
        datetime(2024, 5, 4, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
        "Asia/Shanghai",
        True,
    )
    prompt = render_system_prompt(persona, ctx)
    assert prompt.startswith("你是小雨，")
    assert "星期六" in prompt and "小明" in prompt
    assert render_greeting(persona, ctx) == (
        "小明，你好呀！我是小雨，你的 AI 学习伙伴。"
        "今天想学点什么？数学、语文、英语，还是一起做个学习计划？"
    )
    assert persona.examples[0][0].content == "这道题我不会：2x + 3 = 11"


def test_biscuit_keeps_its_habits_in_prompt_and_schedule() -> None:
    persona = load_persona(SHIPPED_DIR / "biscuit.yaml").persona
    assert "07:30" in persona.system_prompt and "18:00" in persona.system_prompt
    assert persona.schedule is not None
    habits = {h.name: h.cron for h in persona.schedule.habits}
    assert habits == {"walk": "30 7 * * *", "dinner": "0 18 * * *"}
    ctx = PromptContext(
        "Sam", "u", "console", datetime(2024, 5, 4, 7, 35, tzinfo=ZoneInfo("UTC")), "UTC", True
    )
    assert "walk time" in render_system_prompt(persona, ctx)


async def test_registry_serves_the_shipped_personas() -> None:
    registry = PersonaRegistry([SHIPPED_DIR])
    assert await registry.load_all() == []
    assert registry.ids() == ["biscuit", "samantha", "xiaoyu"]
