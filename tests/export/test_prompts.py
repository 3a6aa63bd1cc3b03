"""The system prompts of records: rendered per turn, scrubbed, each line once."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.export.prompts import SystemPrompts, TurnContext
from bot.export.scrub import Scrubber
from tests.export.ledger import PERSONA_YAML

SOURCE = PERSONA_YAML.replace(
    "  You are {{ persona.name }}, a friendly companion.\n",
    "  You are {{ persona.name }}, a friendly companion.\n"
    "  Written by ops@example.org, call +49 30 1234567.\n",
)


def _turn(minute: int) -> TurnContext:
    return TurnContext(
        persona_hash="v1",
        platform="telegram",
        user_id="u_3f9a2c",
        display_name="User-3f9a2c",
        timezone=None,
        when=datetime(2026, 11, 2, 9, minute, tzinfo=UTC),
        is_direct=True,
    )


def test_prompts_are_scrubbed_and_each_distinct_line_only_once() -> None:
    seen: list[str] = []
    scrubber = Scrubber()

    def scrub(text: str) -> str:
        seen.append(text)
        return scrubber.scrub(text)

    prompts = SystemPrompts(lambda _: ("personas/pal.yaml", SOURCE), "UTC", scrub)
    first = prompts.render(_turn(1))
    second = prompts.render(_turn(2))
    assert first is not None and second is not None
    assert "Written by <EMAIL>, call <PHONE>." in first
    assert "example.org" not in first + second and "1234567" not in first + second
    assert "It is 09:01 on Monday" in first and "It is 09:02 on Monday" in second
    # The second render scrubbed only the line that changed: the time.
    assert len(seen) == len(set(first.split("\n"))) + 1
    assert seen[-1].startswith("It is 09:02")


def test_a_private_key_in_a_prompt_is_scrubbed_whole() -> None:
    source = PERSONA_YAML.replace(
        "  You are {{ persona.name }}, a friendly companion.\n",
        "  You are {{ persona.name }}, a friendly companion.\n"
        "  -----BEGIN PRIVATE KEY-----\n  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
        "  -----END PRIVATE KEY-----\n",
    )
    prompts = SystemPrompts(lambda _: ("personas/pal.yaml", source), "UTC", Scrubber().scrub)
    rendered = prompts.render(_turn(1))
    assert rendered is not None
    assert "MIIEvQ" not in rendered and "<SECRET>" in rendered
