"""Sign-in, sessions, CSRF, roles, rate limits and error pages of the dashboard,
over HTTP against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text

from bot.web.dashboard.i18n import LANGUAGES
from bot.web.dashboard.pages import DASHBOARD
from tests.dashboard.conftest import CSRF_FIELD, PASSWORD, DashUnderTest, open_dash, sign_in


async def _login_form(http: httpx.AsyncClient) -> str:
    page = await http.get("/login")
    found = CSRF_FIELD.search(page.text)
    assert found
    return found.group(1)


async def test_sign_in_sets_a_strict_http_only_session_and_stores_only_its_hash(
    dash: DashUnderTest,
) -> None:
    await dash.add("ann", "admin")
    async with httpx.AsyncClient(base_url=dash.url) as http:
        assert (await http.get("/")).headers["location"] == "/login?next=/"
        token = await _login_form(http)
        response = await http.post(
            "/login", data={"name": "ann", "password": PASSWORD, "csrf": token, "next": "/audit"}
        )
        assert response.status_code == 303 and response.headers["location"] == "/audit"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("dash_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        value = cookie.split(";")[0].split("=", 1)[1]
        home = await http.get("/")
        assert home.status_code == 200 and "ann" in home.text
        assert "$argon2" not in home.text
    rows = await dash.bot.db.read(
        lambda conn: conn.execute(text("SELECT token_hash FROM dashboard_sessions")).all()
    )
    assert len(rows) == 1 and rows[0][0] != value and len(rows[0][0]) == 64
    stored = await dash.bot.db.read(
        lambda conn: conn.execute(text("SELECT password_hash FROM dashboard_moderators")).scalar()
    )
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_a_wrong_password_and_an_unknown_name_read_the_same(dash: DashUnderTest) -> None:
    await dash.add("ann", "admin")
    async with httpx.AsyncClient(base_url=dash.url) as http:
        token = await _login_form(http)
        wrong = await http.post("/login", data={"name": "ann", "password": "x" * 12, "csrf": token})
        nobody = await http.post(
            "/login", data={"name": "nobody", "password": "x" * 12, "csrf": token}
        )
    assert wrong.status_code == nobody.status_code == 401
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in nobody.text
    assert "dash_session" not in wrong.headers.get("set-cookie", "")


async def test_sign_out_ends_the_session_everywhere(dash: DashUnderTest) -> None:
    async with dash.client("viewer") as me:
        cookie = me.http.cookies["dash_session"]
        out = await me.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
    async with httpx.AsyncClient(base_url=dash.url, cookies={"dash_session": cookie}) as again:
        assert (await again.get("/")).status_code == 303


async def test_a_session_expires(dash: DashUnderTest) -> None:
    async with dash.client("viewer") as me:
        assert (await me.http.get("/")).status_code == 200
        dash.clock.advance(hours=dash.settings.dashboard.session_hours + 1)
        assert (await me.http.get("/")).status_code == 303


async def test_secure_cookies_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    async with open_dash(tmp_path, url, overrides={"dashboard": {"secure_cookies": "always"}}) as d:
        await d.add("ann", "admin")
        async with httpx.AsyncClient(base_url=d.url) as http:
            page = await http.get("/login")
            assert "Secure" in page.headers["set-cookie"]
            found = CSRF_FIELD.search(page.text)
            assert found
            token = found.group(1)  # httpx sends no Secure cookie over plain http: send it
            response = await http.post(
                "/login",
                data={"name": "ann", "password": PASSWORD, "csrf": token},
                headers={"Cookie": f"dash_login={token}"},
            )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


# -- CSRF -----------------------------------------------------------------------------


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    dash: DashUnderTest,
) -> None:
    async with dash.client("admin") as me:
        for data in ({}, {"csrf": "not-the-token"}, {"csrf": ""}):
            response = await me.http.post("/probe/persona/tester", data={"note": "x", **data})
            assert response.status_code == 403
            assert "did not come from this dashboard" in response.text
        json_refused = await me.http.post(
            "/probe/json", headers={"Accept": "application/json", "X-CSRF-Token": "wrong"}
        )
        assert json_refused.status_code == 403 and json_refused.json()["status"] == 403
        assert await dash.audit() == []
        # The right token, in the form or in the header, gets through.
        ok = await me.post("/probe/persona/tester", {"note": "hello"})
        assert ok.status_code == 303
        header = await me.http.post("/probe/json", headers={"X-CSRF-Token": me.csrf})
        assert header.json() == {"ok": True, "who": me.who.name}
    [entry] = await dash.audit()
    assert (entry.actor, entry.action, entry.target) == (
        me.who.name,
        "probe.change",
        "persona:tester",
    )
    assert entry.before is None and entry.after == {"note": "hello"}


async def test_a_form_posted_from_another_site_is_refused(dash: DashUnderTest) -> None:
    async with dash.client("admin") as me:
        response = await me.post(
            "/probe/persona/tester", {"note": "x"}, headers={"Origin": "https://evil.example"}
        )
        assert response.status_code == 403
        same = await me.post("/probe/persona/tester", {"note": "x"}, headers={"Origin": dash.url})
        assert same.status_code == 303


async def test_the_sign_in_form_needs_its_own_token(dash: DashUnderTest) -> None:
    await dash.add("ann", "admin")
    async with httpx.AsyncClient(base_url=dash.url) as http:
        await http.get("/login")
        response = await http.post("/login", data={"name": "ann", "password": PASSWORD})
        assert response.status_code == 403
        assert "dash_session" not in response.headers.get("set-cookie", "")


# -- roles ----------------------------------------------------------------------------


async def test_a_viewer_changes_nothing(dash: DashUnderTest) -> None:
    async with dash.client("viewer") as me:
        assert (await me.http.get("/audit")).status_code == 200
        for path in ("/probe/persona/tester", "/probe/admin", "/probe/json"):
            response = await me.post(path, {"note": "x"})
            assert response.status_code == 403, path
    assert await dash.audit() == []


async def test_a_moderator_changes_only_its_personas(dash: DashUnderTest) -> None:
    async with dash.client("moderator", personas=["tester"]) as mine:
        assert (await mine.post("/probe/persona/tester", {"note": "ok"})).status_code == 303
        refused = await mine.post("/probe/persona/other", {"note": "no"})
        assert refused.status_code == 403 and "persona other" in refused.text
        assert (await mine.post("/probe/admin")).status_code == 403
    async with dash.client("moderator") as every:  # no --persona: every persona
        assert (await every.post("/probe/persona/other", {"note": "ok"})).status_code == 303
    async with dash.client("admin") as admin:
        assert (await admin.post("/probe/admin")).status_code == 200
    assert [e.action for e in await dash.audit()] == ["probe.admin", "probe.change", "probe.change"]


async def test_signed_out_requests_never_reach_a_page(dash: DashUnderTest) -> None:
    async with httpx.AsyncClient(base_url=dash.url) as http:
        assert (await http.post("/probe/admin", data={"csrf": "x"})).status_code == 401
        json_page = await http.get("/audit", headers={"Accept": "application/json"})
        assert json_page.status_code == 401
        forged = await http.get("/", headers={"Cookie": "dash_session=" + "forged" * 30})
        assert forged.status_code == 303


# -- the sign-in limit ----------------------------------------------------------------


async def test_failed_sign_ins_are_limited_per_name_in_the_database(
    dash: DashUnderTest, tmp_path: Path
) -> None:
    await dash.add("ann", "admin")
    limit = dash.settings.dashboard.login_failures_per_name
    async with httpx.AsyncClient(base_url=dash.url) as http:
        token = await _login_form(http)
        for _ in range(limit):
            bad = {"name": "ann", "password": "wrong" * 3, "csrf": token}
            assert (await http.post("/login", data=bad)).status_code == 401
        good = {"name": "ann", "password": PASSWORD, "csrf": token}
        limited = await http.post("/login", data=good)
        assert limited.status_code == 429 and "Too many failed sign-ins" in limited.text
        # Another account from the same address is not locked out by ann's failures.
        await dash.add("bob", "viewer")
        other = {"name": "bob", "password": PASSWORD, "csrf": token}
        assert (await http.post("/login", data=other)).status_code == 303
    # A second dashboard on the same database (another worker) counts the same rows.
    url = dash.bot.settings.database.url
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    async with open_dash(second_dir, url) as second, httpx.AsyncClient(base_url=second.url) as http:
        token = await _login_form(http)
        again = await http.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token})
        assert again.status_code == 429
    # Once the window has passed, the right password works again.
    dash.clock.advance(seconds=dash.settings.dashboard.login_window_s + 1)
    async with httpx.AsyncClient(base_url=dash.url) as http:
        await sign_in(http, "ann", PASSWORD)


async def test_failed_sign_ins_are_limited_per_address(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ip.db"
    overrides = {"dashboard": {"login_failures_per_ip": 3, "login_failures_per_name": 100}}
    async with open_dash(tmp_path, url, overrides=overrides) as d:
        await d.add("ann", "admin")
        async with httpx.AsyncClient(base_url=d.url) as http:
            token = await _login_form(http)
            for n in range(3):
                bad = {"name": f"guess{n}", "password": "x" * 12, "csrf": token}
                assert (await http.post("/login", data=bad)).status_code == 401
            good = {"name": "ann", "password": PASSWORD, "csrf": token}
            assert (await http.post("/login", data=good)).status_code == 429


# -- hostile input and error pages ----------------------------------------------------


async def test_hostile_input_gets_a_clear_page_never_a_traceback(dash: DashUnderTest) -> None:
    async with dash.client("admin") as me:
        huge = await me.http.post(
            "/probe/persona/tester",
            content=b"csrf=" + b"x" * (dash.settings.dashboard.max_body_bytes + 10),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413 and "too large" in huge.text
        nul = await me.post("/probe/persona/tester", {"note": "a\x00b"})
        assert nul.status_code == 400 and "NUL" in nul.text
        long = await me.post("/probe/persona/tester", {"note": "x" * 101})
        assert long.status_code == 400 and "at most 100" in long.text
        missing = await me.post("/probe/persona/tester", {})
        assert missing.status_code == 400 and "note: missing" in missing.text
        assert (await me.http.get("/audit?before=abc")).status_code == 400
        assert (await me.http.get("/audit?before=-1")).status_code == 400
        assert (await me.http.get("/audit?actor=" + "x" * 300)).status_code == 400
        boom = await me.http.get("/probe/boom")
        assert boom.status_code == 500
        assert "secret-internal-detail" not in boom.text and "Traceback" not in boom.text
        missing_page = await me.http.get("/no/such/page")
        assert missing_page.status_code == 404 and "There is no such page." in missing_page.text
        assert (await me.http.put("/audit", headers={"X-CSRF-Token": me.csrf})).status_code == 405
        # Off-site redirects after sign-in are refused.
        assert (await me.http.get("/lang?to=en&next=//evil.example")).headers["location"] == "/"
        assert (await me.http.get("/lang?to=xx")).status_code == 400
    async with httpx.AsyncClient(base_url=dash.url) as http:
        token = await _login_form(http)
        for name in ("x" * 500, "a\x00b", "名字", ""):
            response = await http.post(
                "/login", data={"name": name, "password": "p" * 5000, "csrf": token}
            )
            assert response.status_code in (400, 401), name
        assert (await http.get("/login?next=https://evil.example")).status_code == 200


async def test_security_headers_on_every_page(dash: DashUnderTest) -> None:
    async with httpx.AsyncClient(base_url=dash.url) as http:
        for path in ("/login", "/no/such/page", "/"):
            headers = (await http.get(path)).headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"


# -- languages ------------------------------------------------------------------------


async def test_the_browser_language_picks_chinese_and_the_switch_remembers(
    dash: DashUnderTest,
) -> None:
    async with dash.client("viewer") as me:
        zh = await me.http.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        assert "概览" in zh.text and 'lang="zh-CN"' in zh.text
        en = await me.http.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"})
        assert "Overview" in en.text
        switched = await me.http.get("/lang?to=zh&next=/audit")
        assert switched.headers["location"] == "/audit"
        after = await me.http.get("/audit", headers={"Accept-Language": "en"})
        assert "审计日志" in after.text


async def test_every_string_has_a_chinese_text(dash: DashUnderTest) -> None:
    catalogue = dash.server.app[DASHBOARD].catalogue
    english = catalogue.keys("en") - {k for k in catalogue.keys("en") if k.startswith("probe.")}
    for lang in LANGUAGES[1:]:
        missing = english - catalogue.keys(lang)
        assert not missing, f"{lang} lacks {sorted(missing)}"


async def test_two_workers_share_sessions(dash: DashUnderTest, tmp_path: Path) -> None:
    # Sessions are rows, not process memory: a second worker's dashboard on the same
    # database honours a session made by the first, and a sign-out on it ends both.
    other_dir = tmp_path / "worker-2"
    other_dir.mkdir()
    async with (
        dash.client("moderator", personas=["tester"]) as me,
        open_dash(other_dir, dash.bot.settings.database.url) as second,
        httpx.AsyncClient(base_url=second.url) as http,
    ):
        http.cookies.set("dash_session", me.http.cookies["dash_session"])
        assert me.who.name in (await http.get("/")).text
        changed = await http.post(
            "/probe/persona/tester", data={"csrf": me.csrf, "note": "via worker 2"}
        )
        assert changed.status_code == 303
        await http.post("/logout", data={"csrf": me.csrf})
        assert (await me.http.get("/")).status_code == 303
    [entry] = await dash.audit()
    assert entry.after == {"note": "via worker 2"}
