"""The dashboard's core in Chromium: signing in through the form, the language
switch and the browser's language, a phone-sized screen, and refusals the browser
itself meets (a form from another site, a viewer's change, a missing token).
Screenshots of the sign-in page and the overview are kept in docs/dashboard/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.web.dashboard.store import audit
from tests.dashboard.conftest import PASSWORD, SCREENSHOTS, DashUnderTest, PageAs


async def test_sign_in_through_the_form_and_out(dash_sqlite: DashUnderTest, browser: Any) -> None:
    dash = dash_sqlite
    await dash.add("ann", "admin")
    await dash.bot.db.run(
        lambda conn: audit(conn, "ann", "persona.save", "persona:tester", {"v": 1}, {"v": 2})
    )
    context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(dash.url + "/audit")
    assert page.url.endswith("/login?next=/audit")
    await page.fill("input[name=name]", "ann")
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    assert await page.text_content("p.error") == "Wrong name or password."
    await page.fill("input[name=name]", "ann")
    await page.fill("input[name=password]", PASSWORD)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "login.png"))
    await page.click("button[type=submit]")
    await page.wait_for_url("**/audit")
    assert "persona:tester" in await page.text_content("table.audit")
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["dash_session"]["httpOnly"] and cookies["dash_session"]["sameSite"] == "Strict"
    # The session cookie is out of the page's reach.
    assert "dash_session" not in await page.evaluate("document.cookie")
    await page.goto(dash.url + "/")
    await page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)
    await page.click("form[action='/logout'] button")
    await page.wait_for_url("**/login")
    await page.goto(dash.url + "/")
    assert "/login" in page.url
    await context.close()


async def test_chinese_follows_the_browser_and_the_switch(
    dash_sqlite: DashUnderTest, page_as: PageAs
) -> None:
    page = await page_as(dash_sqlite, "moderator", personas=["tester"], locale="zh-CN")
    assert await page.text_content("h1") == "概览"
    assert "你可以修改的人设：tester" in await page.text_content("main")
    await page.click("a[hreflang=en]")
    await page.wait_for_load_state()
    assert await page.text_content("h1") == "Overview"
    await page.click("a[hreflang=zh]")
    await page.wait_for_load_state()
    assert await page.text_content("h1") == "概览"
    await page.screenshot(path=str(SCREENSHOTS / "overview-zh.png"), full_page=True)


async def test_readable_on_a_phone(dash_sqlite: DashUnderTest, page_as: PageAs) -> None:
    page = await page_as(dash_sqlite, "admin", viewport={"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    size = await page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert size >= 16
    await page.screenshot(path=str(SCREENSHOTS / "overview-phone.png"), full_page=True)


@pytest.fixture
async def other_site() -> AsyncIterator[Any]:
    """Another site on loopback whose page posts a form to the dashboard by itself."""
    target: dict[str, str] = {}

    async def attack(_request: web.Request) -> web.Response:
        html = (
            f'<form id="f" method="post" action="{target["url"]}/probe/persona/tester">'
            '<input name="note" value="forged"><input name="csrf" value="guess"></form>'
            '<script>document.getElementById("f").submit()</script>'
        )
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", attack)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield target, f"http://localhost:{port}/"
    finally:
        await runner.cleanup()


async def test_a_form_from_another_site_changes_nothing(
    dash_sqlite: DashUnderTest, page_as: PageAs, other_site: Any
) -> None:
    target, url = other_site
    target["url"] = dash_sqlite.url
    page = await page_as(dash_sqlite, "admin")
    response_status: list[int] = []
    page.on(
        "response",
        lambda r: response_status.append(r.status) if "/probe/" in r.url else None,
    )
    await page.goto(url)
    await page.wait_for_url("**/probe/persona/tester")
    assert response_status and response_status[-1] in (401, 403)
    assert await dash_sqlite.audit() == []


async def test_a_viewer_is_refused_and_a_missing_token_is_refused(
    dash_sqlite: DashUnderTest, page_as: PageAs
) -> None:
    viewer = await page_as(dash_sqlite, "viewer")
    status = await viewer.evaluate(
        "dashboard.post('/probe/persona/tester', new URLSearchParams({note: 'x'}))"
        ".then(r => r.status)"
    )
    assert status == 403
    admin = await page_as(dash_sqlite, "admin")
    without = await admin.evaluate(
        "fetch('/probe/json', {method: 'POST', headers: {Accept: 'application/json'}})"
        ".then(r => r.json())"
    )
    assert without["status"] == 403
    with_token = await admin.evaluate("dashboard.post('/probe/json', {}).then(r => r.json())")
    assert with_token["ok"] is True
    assert await dash_sqlite.audit() == []
