"""The conversations, people and operations pages over HTTP (httpx against the real
dashboard, SQLite and PostgreSQL): what each role sees and may change, hostile input,
and that every change lands in the ledger and the audit log."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text
from sqlmodel import SQLModel

from bot.messages import Actor, Incoming, Scope
from tests.dashboard.conftest import DashUnderTest, open_dash


def dm(text: str, user: str = "u1", name: str = "Ann") -> Incoming:
    scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=name), text=text
    )


async def _ids(dash: DashUnderTest, direction: str) -> list[int]:
    return await dash.bot.db.read(
        lambda conn: [
            int(i)
            for i in conn.execute(
                text("SELECT id FROM messages WHERE direction = :d ORDER BY id"), {"d": direction}
            ).scalars()
        ]
    )


async def _flag_state(dash: DashUnderTest, mid: int) -> tuple[object, object, object]:
    row = await dash.bot.db.read(
        lambda conn: conn.execute(
            text("SELECT flagged_at, flag_reason, corrected_text FROM messages WHERE id = :i"),
            {"i": mid},
        ).one()
    )
    return row[0], row[1], row[2]


async def test_browse_as_a_viewer_and_change_nothing(dash: DashUnderTest) -> None:
    await dash.bot.engine.handle(dm("<script>alert(1)</script> hello", name="<b>Eve</b>"))
    (reply,) = await _ids(dash, "out")
    async with dash.client("viewer") as viewer:
        listing = await viewer.http.get("/conversations")
        assert listing.status_code == 200 and "dm-u1" in listing.text
        (cid,) = re.findall(r'data-conversation="(\d+)"', listing.text)
        page = await viewer.http.get(f"/conversations/{cid}")
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text  # escaped, never markup
        assert html.escape("<script>alert(1)</script>", quote=False) in page.text
        assert "&lt;b&gt;Eve&lt;/b&gt;" in page.text
        assert "mock" in page.text and f"a reply to #{reply - 1}" in page.text
        version = re.search(r'href="(/personas/tester/versions/[0-9a-f]{64})"', page.text)
        assert version and (await viewer.http.get(version.group(1))).status_code == 200
        assert f"/conversations/messages/{reply}/flag" not in page.text  # no forms for a viewer
        assert 'id="view-only"' in page.text

        refused = await viewer.post(f"/conversations/messages/{reply}/flag", {"reason": "x"})
        assert refused.status_code == 403
        refused = await viewer.post(f"/conversations/messages/{reply}/correct", {"text": "y"})
        assert refused.status_code == 403
        people = await viewer.http.get("/people?q=%3Cb%3E")
        assert people.status_code == 200 and "&lt;b&gt;Eve" in people.text
        (uid,) = re.findall(r'data-person="(\d+)"', people.text)
        person = await viewer.http.get(f"/people/{uid}")
        assert person.status_code == 200 and "/forget" not in person.text
        forget = await viewer.post(f"/people/{uid}/forget", {"memory": "all"})
        assert forget.status_code == 403
        ops = await viewer.http.get("/operations")
        assert ops.status_code == 200 and "/promote" not in ops.text
        live = await viewer.http.get("/operations/metrics.json")
        assert live.status_code == 200 and live.json()["now"]["series"]["personabot_turns_total"]
    assert await _flag_state(dash, reply) == (None, None, None)
    assert await dash.audit() == []


async def test_flag_correct_unflag_by_the_personas_moderator(dash: DashUnderTest) -> None:
    await dash.bot.engine.handle(dm("what is the capital of France?"))
    (asked,) = await _ids(dash, "in")
    (reply,) = await _ids(dash, "out")
    async with dash.client("moderator", personas=["other"]) as stranger:
        no = await stranger.post(f"/conversations/messages/{reply}/flag", {"reason": "x"})
        assert no.status_code == 403
    async with dash.client("moderator", personas=["tester"]) as mod:
        page = await mod.http.get("/conversations/1")
        assert f"/conversations/messages/{reply}/flag" in page.text
        flagged = await mod.post(
            f"/conversations/messages/{reply}/flag", {"reason": "wrong answer"}
        )
        assert flagged.status_code == 303
        assert flagged.headers["location"].endswith(f"#m{reply}")
        at, reason, _ = await _flag_state(dash, reply)
        assert at is not None and reason == "wrong answer"
        fixed = await mod.post(f"/conversations/messages/{reply}/correct", {"text": "Paris."})
        assert fixed.status_code == 303
        assert (await _flag_state(dash, reply))[2] == "Paris."
        page = await mod.http.get("/conversations/1")
        assert "Paris." in page.text and "Flagged" in page.text

        # Hostile or wrong input: clear pages, nothing changed.
        assert (await mod.post(f"/conversations/messages/{asked}/flag")).status_code == 400
        assert (await mod.post("/conversations/messages/999999/flag")).status_code == 404
        too_long = await mod.post(f"/conversations/messages/{reply}/correct", {"text": "x" * 9000})
        assert too_long.status_code == 400
        nul = await mod.post(f"/conversations/messages/{reply}/correct", {"text": "a\x00b"})
        assert nul.status_code == 400
        blank = await mod.post(f"/conversations/messages/{reply}/correct", {"text": "   "})
        assert blank.status_code == 400 and "Traceback" not in blank.text
        no_csrf = await mod.http.post(f"/conversations/messages/{reply}/unflag")
        assert no_csrf.status_code == 403
        assert (await mod.http.get("/conversations?cursor=1;drop")).status_code == 400
        assert (await mod.http.get("/conversations?q=" + "x" * 300)).status_code == 400
        assert (await mod.http.get("/conversations/99999999")).status_code == 404
        assert (await mod.http.get("/conversations/1?before=abc")).status_code == 400

        back = await mod.post(f"/conversations/messages/{reply}/unflag")
        assert back.status_code == 303
    assert await _flag_state(dash, reply) == (None, None, None)
    actions = [e.action for e in reversed(await dash.audit(target=f"message:{reply}"))]
    assert actions == ["reply.flag", "reply.correct", "reply.unflag"]


async def test_forget_one_memory_and_everything(tmp_path: Path, database_url: str) -> None:
    async with open_dash(
        tmp_path, database_url, memory=True, overrides={"memory": {"embedding_model": "none"}}
    ) as dash:
        await dash.bot.engine.handle(dm("my locker code is 4321", user="p", name="Pat"))
        await dash.bot.engine.handle(dm("I like otters", user="p", name="Pat"))
        uid = await dash.bot.db.read(
            lambda conn: conn.execute(
                text("SELECT id FROM users WHERE platform_user_id = 'p'")
            ).scalar_one()
        )
        now = datetime.now(UTC)
        facts = SQLModel.metadata.tables["facts"]
        first_in = (await _ids(dash, "in"))[0]
        fact_id = await dash.bot.db.run(
            lambda conn: conn.execute(
                insert(facts).values(
                    user_id=uid, persona_id="tester", conversation_id=1, is_direct=True,
                    text="Pat's locker code is 4321", source_ids=json.dumps([first_in]),
                    confidence=1.0, importance=0.5, created_at=now, updated_at=now,
                )
            ).inserted_primary_key[0]
        )  # fmt: skip
        async with dash.client("moderator", personas=["other"]) as stranger:
            page = await stranger.http.get(f"/people/{uid}")
            assert f'data-memory="f{fact_id}"' in page.text and "/forget" not in page.text
            no = await stranger.post(f"/people/{uid}/forget", {"memory": f"f{fact_id}"})
            assert no.status_code == 403
            no = await stranger.post(f"/people/{uid}/forget", {"memory": "all"})
            assert no.status_code == 403
        async with dash.client("moderator", personas=["tester"]) as mod:
            assert (await mod.post(f"/people/{uid}/forget", {"memory": "x1"})).status_code == 400
            gone = await mod.post(f"/people/{uid}/forget", {"memory": "f999999"})
            assert gone.status_code == 404
            done = await mod.post(f"/people/{uid}/forget", {"memory": f"f{fact_id}"})
            assert done.status_code == 303
            page = await mod.http.get(done.headers["location"])
            assert "Forgotten" in page.text and "locker" not in page.text
            # Limited to one persona: "all" means all of that persona, never every one.
            assert (await mod.post(f"/people/{uid}/forget", {"memory": "all"})).status_code == 403
            everything = await mod.post(
                f"/people/{uid}/forget", {"memory": "all", "persona": "tester"}
            )
            assert everything.status_code == 303
        left = await dash.bot.db.read(
            lambda conn: conn.execute(
                text("SELECT count(*) FROM messages WHERE user_id = :u"), {"u": uid}
            ).scalar_one()
        )
        assert left == 0
        entries = await dash.audit(target=f"person:{uid}")
        assert [e.before["memory"] for e in reversed(entries)] == [f"f{fact_id}", "all"]
        assert "4321" not in json.dumps([(e.before, e.after) for e in entries])
        if database_url.startswith("sqlite"):
            # No byte left: the file, its WAL and shared memory, as /forget promises.
            db_file = Path(database_url.removeprefix("sqlite:///"))
            for path in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
                if path.exists():
                    raw = path.read_bytes()
                    assert b"locker" not in raw and b"otters" not in raw, path


async def test_forget_without_long_term_memory_takes_the_same_path(dash: DashUnderTest) -> None:
    assert dash.bot.memory is None
    await dash.bot.engine.handle(dm("remember the walrus", user="w", name="Wal"))
    uid = await dash.bot.db.read(
        lambda conn: conn.execute(
            text("SELECT id FROM users WHERE platform_user_id = 'w'")
        ).scalar_one()
    )
    async with dash.client("admin") as admin:
        done = await admin.post(f"/people/{uid}/forget", {"memory": "all"})
        assert done.status_code == 303
    left = await dash.bot.db.read(
        lambda conn: conn.execute(
            text("SELECT count(*) FROM messages WHERE text LIKE '%walrus%'")
        ).scalar_one()
    )
    assert left == 0
    (entry,) = await dash.audit(target=f"person:{uid}")
    assert entry.after["deleted"]["messages"] == 2


async def test_operations_promote_and_roll_back(dash: DashUnderTest, tmp_path: Path) -> None:
    adapters = SQLModel.metadata.tables["lora_adapters"]
    now = datetime.now(UTC)
    await dash.bot.db.run(
        lambda conn: conn.execute(
            insert(adapters),
            [
                dict(name=name, persona_id="tester", path=str(tmp_path / name), sha256="0" * 64,
                     base_model="tiny", rank=4, report='{"gate": {"passed": true}}',
                     status=status, canary_share=share, forced=False, created_at=now,
                     promoted_at=now if status == "serving" else None)
                for name, status, share in (("tester-a", "serving", 1.0),
                                            ("tester-b", "canary", 0.1))
            ],
        )
    )  # fmt: skip
    async with dash.client("viewer") as viewer:
        page = await viewer.http.get("/operations")
        assert 'data-adapter="tester-b"' in page.text and "too little feedback" in page.text
        assert "/operations/adapters/tester-b/promote" not in page.text
        no = await viewer.post("/operations/adapters/tester-b/promote")
        assert no.status_code == 403
    async with dash.client("moderator", personas=["tester"]) as mod:
        assert (await mod.post("/operations/adapters/..%2F/promote")).status_code == 404
        assert (await mod.post("/operations/adapters/nope/promote")).status_code == 404
        bad = await mod.post("/operations/adapters/tester-a/promote")  # already serving
        assert bad.status_code == 400 and "only a canary or candidate" in bad.text
        done = await mod.post("/operations/adapters/tester-b/promote")
        assert done.status_code == 303
        back = await mod.post("/operations/adapters/tester-b/rollback")
        assert back.status_code == 303
    states: dict[str, str] = await dash.bot.db.read(
        lambda conn: dict(conn.execute(text("SELECT name, status FROM lora_adapters")).all())
    )
    assert states == {"tester-a": "serving", "tester-b": "rolled_back"}
    actions = [e.action for e in reversed(await dash.audit())]
    assert actions == ["adapter.promote", "adapter.rollback"]


async def test_hostile_query_strings_and_forms(dash: DashUnderTest) -> None:
    await dash.bot.engine.handle(dm("plain words"))
    (reply,) = await _ids(dash, "out")
    async with dash.client("admin") as admin:
        for path in (
            "/conversations?q=%ED%A0%80",  # a lone surrogate, as UTF-8 bytes
            "/conversations?person=%00x",
            "/conversations?cursor=99999999999999999.1",
            "/conversations?cursor=-1.1",
            "/conversations?persona=" + "p" * 65,
            "/people?q=%25%5F%5C",
            "/people?before=-5",
            "/people/1?forgot=<script>",
            "/operations?done=" + "d" * 500,
        ):
            page = await admin.http.get(path)
            assert page.status_code in (200, 400), (path, page.status_code)
            assert "Traceback" not in page.text and "<script>" not in page.text
        odd = await admin.http.post(
            f"/conversations/messages/{reply}/correct",
            content=f"csrf={admin.csrf}&text=ok%ED%B2%80then%FF".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert odd.status_code in (303, 400)
        assert "Traceback" not in odd.text
        flood = await admin.post(f"/conversations/messages/{reply}/flag", {"reason": "r" * 600})
        assert flood.status_code == 400
