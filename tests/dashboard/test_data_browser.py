"""The conversations, people and operations pages in a real browser: Chromium driven by
Playwright against the running dashboard over a real app (SQLite, memory on, BM25).

Flag a reply and correct it, forget a memory, a viewer refused a change; the live
charts draw; the conversation page fits a phone; screenshots in docs/dashboard/.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlmodel import SQLModel

from bot.messages import Actor, Incoming, Scope
from tests.dashboard.conftest import SCREENSHOTS, DashUnderTest, PageAs, open_dash


def _turn(text: str, user: str = "u1", name: str = "Ann", channel: str | None = None) -> Incoming:
    """A direct message, or with `channel` a message in a guild's channel."""
    scope = Scope(
        platform="test",
        space="guild" if channel else None,
        channel=channel or f"dm-{user}",
        user=user,
        persona="tester",
    )
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=name), text=text
    )


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[DashUnderTest]:
    exports = tmp_path / "exports"
    (exports / "20261201T030000Z").mkdir(parents=True)
    manifest = {
        "created_at": "2026-12-01T03:00:00+00:00",
        "files": {"tester/chat.train.jsonl": {"records": 41}, "tester/dpo.train.jsonl":
                  {"records": 3}},
        "filters": {"flagged": 4, "opted_out": 2},
        "personas": {"tester": {"dpo_pairs": {"correction": 1, "feedback": 2}}},
    }  # fmt: skip
    (exports / "20261201T030000Z" / "manifest.json").write_text(json.dumps(manifest))
    async with open_dash(
        tmp_path,
        f"sqlite:///{tmp_path}/dash.db",
        memory=True,
        overrides={
            "memory": {"embedding_model": "none"},
            "export": {"out_dir": str(exports)},
            "finetune": {"out_dir": str(tmp_path / "adapters")},
        },
    ) as running:
        engine = running.bot.engine
        await engine.handle(_turn("Good morning! Any plans for today?"))
        await engine.handle(_turn("What is the capital of Australia?"))
        await engine.handle(_turn("我的猫叫小白", user="u2", name="小明"))
        await engine.handle(_turn("hi all", user="u3", name="Cy", channel="general"))
        yield running


async def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def _one(dash: DashUnderTest, sql: str, **params: Any) -> Any:
    return await dash.bot.db.read(lambda conn: conn.execute(text(sql), params).scalar_one())


async def test_flag_and_correct_a_reply_in_the_browser(
    dash: DashUnderTest, page_as: PageAs
) -> None:
    page = await page_as(dash, "moderator", personas=["tester"], name="mia")
    await page.click("text=Conversations")
    await page.wait_for_selector("table.conversations")
    await _shot(page, "conversations.png")
    await page.fill("input[name=q]", "Australia")
    await page.click("#conversation-filters button[type=submit]")
    rows = page.locator("table.conversations tbody tr")
    assert await rows.count() == 1
    await rows.first.locator("a").click()
    reply = await _one(
        dash, "SELECT max(id) FROM messages WHERE direction = 'out' AND text LIKE '%Australia%'"
    )
    item = page.locator(f"#m{reply}")
    await item.locator("input[name=reason]").fill("made up a fact")
    await item.locator("form.flag button").click()
    await page.wait_for_selector(f"#m{reply}.flagged")
    assert "made up a fact" in await page.locator(f"#m{reply} .flag-state").inner_text()
    await page.locator(f"#m{reply} details summary").click()
    await page.locator(f"#m{reply} textarea[name=text]").fill("Canberra.")
    await page.locator(f"#m{reply} form.correct button").click()
    await page.wait_for_selector(f"#m{reply} .correction")
    assert "Canberra." in await page.locator(f"#m{reply} .correction").inner_text()
    assert await _one(dash, "SELECT flag_reason FROM messages WHERE id = :i", i=reply) == (
        "made up a fact"
    )
    assert await _one(dash, "SELECT corrected_text FROM messages WHERE id = :i", i=reply) == (
        "Canberra."
    )
    await _shot(page, "conversation-flagged.png")
    actions = [e.action for e in reversed(await dash.audit(target=f"message:{reply}"))]
    assert actions == ["reply.flag", "reply.correct"]

    phone = await page_as(dash, "viewer", viewport={"width": 390, "height": 844})
    await phone.goto(page.url.split("#")[0])
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the conversation page scrolls sideways on a phone ({width}px)"
    await _shot(phone, "conversation-phone.png")


async def test_forget_a_memory_in_the_browser(dash: DashUnderTest, page_as: PageAs) -> None:
    uid = await _one(dash, "SELECT id FROM users WHERE platform_user_id = 'u2'")
    source = await _one(dash, "SELECT min(id) FROM messages WHERE user_id = :u", u=uid)
    now = datetime.now(UTC)
    facts = SQLModel.metadata.tables["facts"]
    fact = await dash.bot.db.run(
        lambda conn: conn.execute(
            insert(facts).values(
                user_id=uid, persona_id="tester", conversation_id=3, is_direct=True,
                text="小明的猫叫小白", source_ids=json.dumps([source]), confidence=0.9,
                importance=0.5, created_at=now, updated_at=now,
            )
        ).inserted_primary_key[0]
    )  # fmt: skip
    await dash.bot.people.set_opted_out("test", "u2", True)  # /optout
    page = await page_as(dash, "moderator", personas=["tester"], name="max", locale="zh-CN")
    await page.click("text=用户")
    await page.fill("input[name=q]", "小明")
    await page.click("form.filters button[type=submit]")
    await page.locator(f'tr[data-person="{uid}"] a').click()
    memory = page.locator(f'li[data-memory="f{fact}"]')
    assert "小白" in await memory.inner_text()
    assert "已选择退出" in await page.locator("ul.consent").inner_text()
    assert "事实" in await memory.inner_text()
    await _shot(page, "person-zh.png")
    page.once("dialog", lambda dialog: dialog.accept())
    await memory.locator("form.forget button").click()
    await page.wait_for_selector("#forgot")
    assert await page.locator(f'li[data-memory="f{fact}"]').count() == 0
    assert await _one(dash, "SELECT count(*) FROM facts WHERE id = :f", f=fact) == 0
    (entry,) = await dash.audit(target=f"person:{uid}")
    assert entry.action == "memory.forget" and entry.actor == "max"


async def test_a_viewer_is_refused_and_the_charts_draw(
    dash: DashUnderTest, page_as: PageAs
) -> None:
    page = await page_as(dash, "viewer", name="vic")
    await page.goto(dash.url + "/conversations/1")
    assert await page.locator("#view-only").count() == 1
    assert await page.locator("form.flag").count() == 0
    reply = await _one(dash, "SELECT min(id) FROM messages WHERE direction = 'out'")
    # The page's own fetch (CSRF header and all) is refused by role, not by a missing form.
    status = await page.evaluate(
        "async (id) => (await dashboard.post(`/conversations/messages/${id}/flag`, "
        "new URLSearchParams({reason: 'x'}))).status",
        reply,
    )
    assert status == 403
    assert await _one(dash, "SELECT count(*) FROM messages WHERE flagged_at IS NOT NULL") == 0

    adapters = SQLModel.metadata.tables["lora_adapters"]
    now = datetime.now(UTC)
    await dash.bot.db.run(
        lambda conn: conn.execute(
            insert(adapters),
            [
                dict(name=name, persona_id="tester", path=f"/srv/adapters/{name}",
                     sha256="0" * 64, base_model="Qwen/Qwen2.5-7B-Instruct", rank=16,
                     report=json.dumps({"gate": {"passed": True, "win_rate": 0.58}}),
                     status=status, canary_share=share, forced=False, created_at=now,
                     promoted_at=now if status == "serving" else None)
                for name, status, share in (("tester-20261124", "serving", 1.0),
                                            ("tester-20261201", "canary", 0.1))
            ],
        )
    )  # fmt: skip
    await page.goto(dash.url + "/operations")
    assert await page.locator("form[action$='/promote']").count() == 0  # a viewer: no buttons
    await page.wait_for_function(
        # A function, not an expression: the page's CSP forbids eval, which polling an
        # expression would need.
        "() => document.querySelector('figure[data-series=inbox] polyline')"
        ".getAttribute('points') !== ''",
        timeout=20_000,
    )
    assert "correction 1" in await page.locator("#exports").inner_text()
    mod = await page_as(dash, "moderator", personas=["tester"], name="ops")
    await mod.goto(dash.url + "/operations")
    before = float(await mod.locator("[data-value=turns]").inner_text())
    for n in range(3):  # turns between two polls: the next poll shows them
        await dash.bot.engine.handle(_turn(f"more {n}", user=f"w{n}", name=f"W{n}"))
    await mod.wait_for_function(
        "(before) => Number(document.querySelector('[data-value=turns]').textContent) > before",
        arg=before,
        timeout=20_000,
    )
    await mod.wait_for_function(
        # A function, not an expression: the page's CSP forbids eval, which polling an
        # expression would need.
        "() => document.querySelector('figure[data-series=turns] polyline')"
        ".getAttribute('points') !== ''",
        timeout=20_000,
    )
    await _shot(mod, "operations.png")
    mod.once("dialog", lambda dialog: dialog.accept())
    await mod.locator('tr[data-adapter="tester-20261201"] form[action$="/promote"] button').click()
    await mod.wait_for_selector("#done")
    assert (
        await _one(dash, "SELECT status FROM lora_adapters WHERE name = 'tester-20261201'")
        == "serving"
    )
