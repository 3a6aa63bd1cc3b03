"""The console adapter in-process, interactive mode included (scripted mode is
driven as a subprocess in tests/test_cli.py)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from adapters.base import split_message
from adapters.console import ConsoleAdapter
from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from tests.test_engine import PERSONA


def settings_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    (personas / "other.yaml").write_text(
        PERSONA.replace("id: tester", "id: other").replace("Tess", "Otto"),
        encoding="utf-8",
    )
    return load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/c.db"},
            "personas": {"dirs": [str(personas)], "watch": False},
        },
    )


async def test_interactive_session_streams_and_runs_commands(tmp_path: Path) -> None:
    def handler(req):  # type: ignore[no-untyped-def]
        name = "Tess" if "You are Tess" in req.messages[0].content else "Otto"
        return f"{name}: heard {req.messages[-1].content}"

    backend = MockBackend(handler)
    stdin = io.StringIO(
        "hello\n/persona\n/persona nobody\n/persona other\nhi Otto\n/reset\nagain\n/quit\nnever\n"
    )
    stdout = io.StringIO()
    async with open_app(settings_for(tmp_path), backend=backend, watch=False) as app:
        console = ConsoleAdapter(
            app.services,
            persona="tester",
            display_name="Ann",
            stdin=stdin,
            stdout=stdout,
            interactive=True,
        )
        await console.run(asyncio.Event())
        out = stdout.getvalue()
        assert "Chatting with Tess (tester)" in out and "Tess> Hi Ann!" in out  # greeting
        assert "Tess> heard hello\n" in out  # streamed, label stripped
        assert "[persona: tester]" in out
        assert "No persona" in out or "nobody" in out
        assert "Chatting with Otto (other)" in out and "Otto> heard hi Otto\n" in out
        assert "[a fresh conversation; earlier ones stay stored]" in out
        assert "never" not in out  # /quit stopped reading
        # After /reset the model sees no earlier history.
        assert [m.content for m in backend.requests[-1].messages[1:]] == ["again"]
        rows = await app.db.run(
            lambda c: c.exec_driver_sql(
                "select direction, status from messages where kind = 'message' order by id"
            ).all()
        )
        assert [tuple(r) for r in rows] == [
            ("in", "answered"),
            ("out", "delivered"),
            ("in", "answered"),
            ("out", "delivered"),
            ("in", "answered"),
            ("out", "delivered"),
        ]


def test_split_message_prefers_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph here.\n\nSecond one is a little longer. It has two sentences."
    assert split_message(text, 40) == [
        "First paragraph here.",
        "Second one is a little longer.",
        "It has two sentences.",
    ]
    words = " ".join(["word"] * 30)
    parts = split_message(words, 23)
    assert all(len(p) <= 23 for p in parts) and " ".join(parts) == words
    assert split_message("x" * 50, 20) == ["x" * 20, "x" * 20, "x" * 10]
    assert split_message("短句。" * 10, 9) == ["短句。短句。短句。"] * 3 + ["短句。"]


async def test_the_console_has_every_platform_command(tmp_path: Path) -> None:
    backend = MockBackend(lambda req: "My sister Mia lives in Lisbon, you said.")
    stdin = io.StringIO(
        "my sister Mia lives in Lisbon\n/timezone Europe/Berlin\n/timezone Mars/Base\n"
        "/optout\n/memory\n/forget all\n/optin\n/help\n/frobnicate\n/quit\n"
    )
    stdout = io.StringIO()
    async with open_app(settings_for(tmp_path), backend=backend, watch=False) as app:
        console = ConsoleAdapter(
            app.services, persona="tester", stdin=stdin, stdout=stdout, interactive=True
        )
        await console.run(asyncio.Event())
        out = stdout.getvalue()
        assert "Time zone set to Europe/Berlin." in out
        assert "'Mars/Base' is not a time zone I know" in out
        assert "Opted out: your messages stay out of training data" in out
        assert "What I remember" in out or "I don't remember anything" in out
        assert "Done: I forgot everything about you." in out
        assert "Opted in again." in out
        assert "/reset" in out and "/optout: keep your messages out" in out  # /help: both
        assert "Unknown command /frobnicate." in out
        rows = await app.db.run(
            lambda c: c.exec_driver_sql(
                "select platform, platform_user_id, timezone, opted_out from users"
            ).all()
        )
        assert [tuple(r) for r in rows] == [("console", "local", "Europe/Berlin", 0)]
        assert (console.turns, console.unanswered) == (1, 0)


def test_the_default_name_is_not_the_personas_memory_label() -> None:
    import inspect

    default = inspect.signature(ConsoleAdapter).parameters["display_name"].default
    assert default.casefold() != "you"
