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
                line(space="g2", channel="general", text="Elsewhere: my sister sings"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["memory", "import", str(data), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "imported 5 message(s)" in result.output
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
    channel = search(db, "--channel", "general", "--space", "g")
    assert [h["text"] for h in channel] == ["In the channel: my sister plays chess"]
    other = search(db, "--channel", "general", "--space", "g2")
    assert [h["text"] for h in other] == ["Elsewhere: my sister sings"]


def test_a_channel_name_in_two_servers_needs_the_server(db: Path) -> None:
    result = runner.invoke(
        app,
        ["memory", "search", "--user", "ann", "--persona", "tess", "--query", "sister",
         "--channel", "general", "--db", str(db)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "2 servers (g, g2)" in result.output and "--space" in result.output


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
    assert gone.exit_code == 0 and "4 messages" in gone.output
    assert search(db) == []
    still = runner.invoke(
        app, ["memory", "search", "--user", "bob", "--persona", "tess", "--query", "sister",
              "--json", "--db", str(db)],
    )  # fmt: skip
    assert len(json.loads(still.output)) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["forget", "--user", "ann"], "usage error: give exactly one of --id ID or --all"),
        (["show", "--user", "nobody", "--platform", "console"],
         "usage error: --user 'nobody': no such person on platform 'console'"),
    ],
)  # fmt: skip
def test_mistakes_in_memory_commands_are_usage_errors(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["memory", *argv, "--db", str(db)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == message


def test_many_queries_in_one_process_with_a_clock(db: Path) -> None:
    queries = db.parent / "queries.txt"
    queries.write_text(
        "sister\n"
        '{"query": "Lisbon", "id": "q2", "k": 1}\n'
        '{"query": "sister yesterday", "now": "2026-05-02T09:00:00Z"}\n'
        '{"query": "sister yesterday"}\n',
        encoding="utf-8",
    )
    result = runner.invoke(
        app,
        ["memory", "search", "--user", "ann", "--persona", "tess", "--queries", str(queries),
         "--now", "2026-09-01T00:00:00", "--json", "--db", str(db)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answers = [json.loads(x) for x in result.output.splitlines()]
    assert [a["line"] for a in answers] == [1, 2, 3, 4]
    assert answers[1]["id"] == "q2" and len(answers[1]["hits"]) == 1
    assert answers[0]["hits"][0]["text"] == "My sister Mia lives in Lisbon"
    # "yesterday" boosts 1 May only on 2 May; --now (September) is every other line's clock.
    assert answers[2]["hits"][0]["score"] > answers[3]["hits"][0]["score"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--query", "x", "--now", "soon"], "not an ISO 8601 time"),
        (["--query", "x", "--queries", "q.txt"], "exactly one of --query"),
        ([], "exactly one of --query"),
        (["--query", "x", "--space", "g"], "--space and --thread name where --channel is"),
    ],
)
def test_bad_search_arguments_are_usage_errors(db: Path, argv: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["memory", "search", "--user", "ann", "--persona", "tess", "--db", str(db), *argv]
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_a_query_with_undecodable_bytes_searches(db: Path) -> None:
    import os

    result = runner.invoke(
        app,
        ["memory", "search", "--user", "ann", "--persona", "tess", "--json", "--db", str(db),
         "--query", "sister " + os.fsdecode(b"\xff\xfe")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["text"] == "My sister Mia lives in Lisbon"


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--user", "\udcff", "--persona", "tess", "--query", "x"],
        ["search", "--user", "ann", "--persona", "t\udcfe", "--query", "x"],
        ["search", "--user", "ann", "--persona", "tess", "--query", "x", "--channel", "\x1b[2J"],
        ["search", "--user", "ann", "--platform", " ", "--persona", "tess", "--query", "x"],
        ["show", "--user", "an\udcffn"],
        ["forget", "--user", "\udcff", "--all"],
        ["forget", "--user", "ann", "--all", "--persona", "\x00"],
    ],
)
def test_garbled_names_on_the_command_line_are_usage_errors(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["memory", *argv, "--db", str(db)])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1
