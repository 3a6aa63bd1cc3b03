import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.logs import SecretRedactor, configure_logging
from bot.messages import Actor, Incoming, Scope
from tests.test_engine import PERSONA


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = handlers


def test_redactor_masks_known_secrets_and_token_shapes_everywhere() -> None:
    redact = SecretRedactor(["hunter2-secret"])
    event = {
        "event": "calling with hunter2-secret",
        "headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"},
        "tokens": [
            "123456789:AAH4bQ-very-long-telegram-token-value-xyz",
            "sk-proj-abcdefghijklmnop1234",
        ],
        "error": ValueError("bad key hunter2-secret"),
        "count": 3,
    }
    out = redact(None, "info", event)
    text = json.dumps(out)
    assert "hunter2" not in text and "AAH4bQ" not in text and "sk-proj" not in text
    assert "abcdefghijklmnopqrstuvwxyz" not in text
    assert out["headers"]["Authorization"] == "Bearer **********"
    assert out["error"] == "ValueError: bad key **********" and out["count"] == 3


def test_json_logs_redact_and_stay_parseable() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", secrets=["s3cr3t-value"], stream=stream)
    structlog.get_logger("t").info("connecting", url="http://x", key="s3cr3t-value", text="你好")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["key"] == "**********" and record["text"] == "你好" and record["level"] == "info"


async def test_each_turn_is_logged_with_scope_and_persona(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/l.db"},
            "personas": {"dirs": [str(personas)], "watch": False},
        },
    )
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)
    async with open_app(settings, backend=MockBackend(), watch=False) as app:
        scope = Scope(platform="test", space="g1", channel="c1", user="u9", persona="tester")
        await app.engine.handle(
            Incoming(scope=scope, actor=Actor(platform="test", id="u9"), text="hi")
        )
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    [answered] = [r for r in records if r["event"] == "turn.answered"]
    assert (
        answered["persona"] == "tester"
        and answered["user"] == "u9"
        and answered["platform"] == "test"
    )
    assert answered["conversation"] == "test/g1/c1/-/tester"
    after = [r for r in records if r["event"] != "turn.answered" and "conversation" in r]
    assert after == []  # the binding ends with the turn
