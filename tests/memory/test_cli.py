"""`bot memory ...` driven through the real `bot` app (in process, for speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app

runner = CliRunner()


def line(**kw: object) -> str:
    base = {
        "platform": "console",
        "space": None,
        "channel": "dm-ann",
        "user": "ann",
        "display_name": "Ann",
        "persona": "tess",
        "role": "user",
        "text": "hello",
        "timestamp": "2026-05-01T10:00:00Z",
    }
    return json.dumps({**base, **kw})


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOT_MEMORY__EMBEDDING_MODEL", "none")
    # In process, the command's logging setup would outlive the test: keep it out.
    monkeypatch.setattr("bot.logs.configure_logging", lambda **kw: None)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "import.jsonl"
    data.write_text(
        "\n".join(
            [
                line(text="My sister Mia lives in Lisbon"),
                line(role="assistant", text="Lisbon is lovely!", timestamp="2026-05-01T10:00:05Z"),
                line(user="bob", channel="dm-bob", display_name="Bob", text="My sister is Zoe"),
                line(space="g", channel="general", text="In the channel: my sister plays chess"),
                '{"platform": "console", "text": "missing fields"}',
                "not json at all",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["memory", "import", str(data), "--db", str(db)])
    assert result.exit_code == 1, result.output  # two bad lines: reported, the rest imported
    assert "imported 4 message(s), skipped 2" in result.output
    assert "import.jsonl:5:" in result.output and "import.jsonl:6:" in result.output
    return db


def search(db: Path, *extra: str) -> list[dict[str, object]]:
    result = runner.invoke(
        app,
        ["memory", "search", "--user", "ann", "--persona", "tess", "--query", "sister",
         "--k", "5", "--json", "--db", str(db), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    hits: list[dict[str, object]] = json.loads(result.output)
    return hits


def test_search_sees_only_the_persons_dm_or_the_named_channel(db: Path) -> None:
    hits = search(db)
    assert [h["text"] for h in hits] == ["My sister Mia lives in Lisbon"]
    assert set(hits[0]) == {"id", "kind", "score", "text", "at", "speaker", "source_ids"}
    channel = search(db, "--channel", "general")
    assert [h["text"] for h in channel] == ["In the channel: my sister plays chess"]


def test_show_and_forget(db: Path) -> None:
    shown = runner.invoke(app, ["memory", "show", "--user", "ann", "--db", str(db)])
    assert shown.exit_code == 0 and "nothing remembered" in shown.output
    bobs = runner.invoke(
        app, ["memory", "search", "--user", "bob", "--persona", "tess", "--query", "sister",
              "--json", "--db", str(db)],
    )  # fmt: skip
    bob_id = json.loads(bobs.output)[0]["id"]
    refused = runner.invoke(
        app, ["memory", "forget", "--user", "ann", "--id", bob_id, "--db", str(db)]
    )
    assert refused.exit_code == 1 and "not yours" in refused.output
    gone = runner.invoke(app, ["memory", "forget", "--user", "ann", "--all", "--db", str(db)])
    assert gone.exit_code == 0 and "3 messages" in gone.output
    assert search(db) == []
    still = runner.invoke(
        app, ["memory", "search", "--user", "bob", "--persona", "tess", "--query", "sister",
              "--json", "--db", str(db)],
    )  # fmt: skip
    assert len(json.loads(still.output)) == 1


def test_forget_needs_exactly_one_target(db: Path) -> None:
    result = runner.invoke(app, ["memory", "forget", "--user", "ann", "--db", str(db)])
    assert result.exit_code != 0
