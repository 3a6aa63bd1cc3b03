"""The persona pages over HTTP: the real dashboard on 127.0.0.1 over a real app and
database (SQLite and PostgreSQL), signed in through the real form."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from bot.app import open_app
from bot.config import load_settings
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from tests.dashboard.conftest import DashUnderTest, open_dash
from tests.test_engine import PERSONA


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _turn(text: str) -> Incoming:
    scope = Scope(platform="test", channel="dm-u1", user="u1", persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id="u1", display_name="Ann"), text=text
    )


def _speaks_its_prompt(request: ChatRequest) -> str:
    """A scripted model that answers with the persona's line of its system prompt."""
    lines = request.messages[0].content.splitlines()
    return next((line for line in lines if line.startswith("You are")), "?")


async def test_list_editor_check_save_and_the_bot_uses_it(
    tmp_path: Path, database_url: str
) -> None:
    async with open_dash(tmp_path, database_url, backend=MockBackend(_speaks_its_prompt)) as dash:
        await _edit_and_use(dash)


async def _edit_and_use(dash: DashUnderTest) -> None:
    before = await dash.bot.engine.handle(_turn("hello"))
    assert [o.text for o in before] == ["You are Tess, talking with Ann on test."]
    async with dash.client("admin") as admin:
        listing = await admin.http.get("/personas")
        assert listing.status_code == 200 and 'data-persona="tester"' in listing.text
        page = await admin.http.get("/personas/tester")
        assert page.status_code == 200 and "You are Tess" in page.text
        bad = PERSONA.replace("temperature: 0.5", "temperature: hot")
        checked = await admin.post("/personas/tester/check", {"yaml": bad})
        problems = checked.json()["problems"]
        assert [p["text"] for p in problems] == [
            "personas/tester.yaml:10:16: sampling.temperature: Input should be a valid number, "
            "unable to parse string as a number (got 'hot')"
        ]
        refused = await admin.post("/personas/tester/save", {"yaml": bad, "base": _hash(PERSONA)})
        assert refused.status_code == 422 and "sampling.temperature" in refused.text
        assert (dash.personas_dir / "tester.yaml").read_text() == PERSONA
        good = PERSONA.replace("You are Tess", "You are Tess the Brave")
        saved = await admin.post("/personas/tester/save", {"yaml": good, "base": _hash(PERSONA)})
        assert saved.status_code == 303
        assert saved.headers["location"] == f"/personas/tester?saved={_hash(good)}"
    assert (dash.personas_dir / "tester.yaml").read_text() == good
    after = await dash.bot.engine.handle(_turn("hello again"))
    assert [o.text for o in after] == ["You are Tess the Brave, talking with Ann on test."]
    entries = await dash.audit(target="persona:tester")
    assert [(e.action, e.before, e.after) for e in entries] == [("persona.save", PERSONA, good)]


async def test_preview_of_unsaved_text_shows_lore_and_tokens(dash: DashUnderTest) -> None:
    text = (
        PERSONA + "lore:\n  entries:\n    - name: the cat\n      keys: [cat]\n      text: Soot.\n"
    )
    async with dash.client("viewer") as viewer:
        shown = await viewer.post(
            "/personas/tester/preview", {"yaml": text, "message": "my cat!", "user": "Ann"}
        )
        body = shown.json()
        assert body["ok"], body
        assert [f["entry"] for f in body["preview"]["lore"]["fired"]] == ["the cat"]
        assert body["preview"]["messages"][0]["role"] == "system"
        assert body["preview"]["prompt_tokens"] > 0
        empty = await viewer.post("/personas/tester/preview", {"yaml": text, "message": " "})
        assert empty.json()["error"]


async def test_viewer_and_limited_moderator_are_refused_changes(dash: DashUnderTest) -> None:
    good = PERSONA.replace("Tess", "Tessa")
    async with dash.client("viewer") as viewer:
        page = await viewer.http.get("/personas/tester")
        assert 'id="read-only"' in page.text and 'id="save"' not in page.text
        refused = await viewer.post("/personas/tester/save", {"yaml": good, "base": _hash(PERSONA)})
        assert refused.status_code == 403
    async with dash.client("moderator", personas=["someone-else"]) as other:
        refused = await other.post("/personas/tester/save", {"yaml": good, "base": _hash(PERSONA)})
        assert refused.status_code == 403
        gone = await other.post(
            "/personas/tester/rollback", {"hash": _hash(PERSONA), "base": _hash(PERSONA)}
        )
        assert gone.status_code == 403
    async with dash.client("moderator", personas=["mine"]) as limited:
        theirs = await limited.post(
            "/personas/_new/save", {"yaml": PERSONA.replace("id: tester", "id: theirs")}
        )
        assert theirs.status_code == 403
        assert not (dash.personas_dir / "theirs.yaml").exists()
        mine = await limited.post(
            "/personas/_new/save", {"yaml": PERSONA.replace("id: tester", "id: mine")}
        )
        assert mine.status_code == 303 and "mine" in dash.bot.personas
    async with dash.client("admin") as admin:
        no_token = await admin.http.post(
            "/personas/tester/save", data={"yaml": good, "base": _hash(PERSONA)}
        )
        assert no_token.status_code == 403
    assert (dash.personas_dir / "tester.yaml").read_text() == PERSONA
    assert await dash.audit(target="persona:tester") == []


async def test_versions_and_rollback(dash: DashUnderTest) -> None:
    good = PERSONA.replace("You are Tess", "You are Tessie")
    async with dash.client("admin") as admin:
        await admin.post("/personas/tester/save", {"yaml": good, "base": _hash(PERSONA)})
        listing = await admin.http.get("/personas/tester/versions")
        assert listing.text.index(_hash(good)) < listing.text.index(_hash(PERSONA))
        old = await admin.http.get(f"/personas/tester/versions/{_hash(PERSONA)}")
        assert old.status_code == 200 and "You are Tessie" in old.text  # the diff
        missing = await admin.http.get("/personas/tester/versions/" + "0" * 64)
        assert missing.status_code == 404
        hostile = await admin.http.get("/personas/tester/versions/..%2F..%2Fetc")
        assert hostile.status_code == 404
        stale = await admin.post(
            "/personas/tester/rollback", {"hash": _hash(PERSONA), "base": _hash(PERSONA)}
        )
        assert stale.status_code == 409 and "changed since you opened it" in stale.text
        back = await admin.post(
            "/personas/tester/rollback", {"hash": _hash(PERSONA), "base": _hash(good)}
        )
        assert back.status_code == 303
    assert dash.bot.personas.get("tester").content_hash == _hash(PERSONA)
    actions = [e.action for e in await dash.audit(target="persona:tester")]
    assert actions == ["persona.rollback", "persona.save"]


async def test_new_persona_import_and_export(dash: DashUnderTest) -> None:
    async with dash.client("admin") as admin:
        new = PERSONA.replace("id: tester", "id: fresh")
        made = await admin.post("/personas/_new/save", {"yaml": new})
        assert made.status_code == 303 and "fresh" in dash.bot.personas
        card = await admin.http.get("/personas/fresh/export?format=json")
        assert card.status_code == 200
        assert card.headers["content-disposition"] == 'attachment; filename="fresh.json"'
        data = json.loads(card.content)
        data["data"]["name"] = "Imported One"
        data["data"]["extensions"].pop("personabot", None)
        uploaded = await admin.http.post(
            "/personas/import",
            data={"csrf": admin.csrf},
            files={"card": ("../../evil name.json", json.dumps(data).encode(), "application/json")},
        )
        assert uploaded.status_code == 200, uploaded.text
        assert "imported-one" in dash.bot.personas
        assert (dash.personas_dir / "imported-one.yaml").exists()
        png = await admin.http.get("/personas/imported-one/export?format=png")
        assert png.content.startswith(b"\x89PNG")
        junk = await admin.http.post(
            "/personas/import",
            data={"csrf": admin.csrf},
            files={"card": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")},
        )
        assert junk.status_code == 422 and "x.png: " in junk.text and "Traceback" not in junk.text
        bad_format = await admin.http.get("/personas/fresh/export?format=exe")
        assert bad_format.status_code == 400
    actions = sorted(e.action for e in await dash.audit())
    assert actions == ["persona.create", "persona.import"]


async def test_hostile_paths_and_fields(dash: DashUnderTest) -> None:
    async with dash.client("admin") as admin:
        for path in ("/personas/..%2Fetc", "/personas/NOPE", "/personas/ghost/versions"):
            assert (await admin.http.get(path)).status_code == 404
        huge = await admin.post("/personas/tester/check", {"yaml": "x" * (1024 * 1024 + 1)})
        assert huge.status_code == 400
        nul = await admin.post("/personas/tester/save", {"yaml": "id: a\x00", "base": ""})
        assert nul.status_code == 400
        history = await admin.post(
            "/personas/tester/preview", {"yaml": PERSONA, "message": "hi", "history": "robot: x"}
        )
        assert "history line 1" in history.json()["error"]


async def test_another_bot_process_picks_up_a_save_with_its_watcher(tmp_path: Path) -> None:
    """`bot dashboard` and `bot run` as separate processes: the run's watcher serves the
    file the dashboard wrote (here a second app on the same persona directory)."""
    async with open_dash(tmp_path, f"sqlite:///{tmp_path}/dash.db") as dash:
        other_settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp_path}/run.db"},
                "personas": {"dirs": [str(dash.personas_dir)], "default": "tester"},
                "memory": {"enabled": False},
            },
        )
        backend = MockBackend(_speaks_its_prompt)
        async with open_app(other_settings, backend=backend, watch=True) as run:
            good = PERSONA.replace("You are Tess", "You are Tess of the Watch")
            async with dash.client("admin") as admin:
                saved = await admin.post(
                    "/personas/tester/save", {"yaml": good, "base": _hash(PERSONA)}
                )
                assert saved.status_code == 303
            for _ in range(200):
                if run.personas.get("tester").content_hash == _hash(good):
                    break
                await asyncio.sleep(0.05)
            replies = await run.engine.handle(_turn("hello"))
            assert [o.text for o in replies] == [
                "You are Tess of the Watch, talking with Ann on test."
            ]


async def test_checks_wait_their_turn_then_say_busy(
    dash_sqlite: DashUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.web.dashboard import persona_service
    from bot.web.dashboard.personas import PERSONAS

    monkeypatch.setattr(persona_service, "CHECK_QUEUE_S", 0.05)
    service = dash_sqlite.server.app[PERSONAS]
    for _ in range(persona_service.MAX_CONCURRENT_CHECKS):
        await service._checks.acquire()
    try:
        async with dash_sqlite.client("viewer") as viewer:
            busy = await viewer.post("/personas/tester/check", {"yaml": PERSONA})
            assert busy.json()["busy"] is True
    finally:
        for _ in range(persona_service.MAX_CONCURRENT_CHECKS):
            service._checks.release()


async def test_the_list_names_files_that_serve_nothing(dash_sqlite: DashUnderTest) -> None:
    (dash_sqlite.personas_dir / "broken.yaml").write_text("id: [\n", encoding="utf-8")
    twin = PERSONA.replace("name: Tess", "name: Twin")
    (dash_sqlite.personas_dir / "twin.yaml").write_text(twin, encoding="utf-8")
    async with dash_sqlite.client("viewer") as viewer:
        page = await viewer.http.get("/personas")
    assert 'data-file="personas/broken.yaml"' in page.text
    assert "personas/broken.yaml:2:1: (root): " in page.text
    assert "personas/twin.yaml:1:1: id: not served: its id is served from another file" in page.text
