"""The dashboard under test: a real bot app (the mock backend) on a real database, the
dashboard served on a free loopback port, httpx clients and Chromium pages signed in
as an admin, a moderator (optionally limited to some personas) or a viewer.

Fixtures:
- `dash`: a running `DashUnderTest`, once on a SQLite file and once on PostgreSQL.
- `dash_sqlite`: the same on SQLite only (browser tests: one database is enough there).
- `browser`: Debian's Chromium driven by Playwright (skipped with the reason where
  /usr/bin/chromium is missing; never in CI, where scripts/test.sh installs it).
- `page_as`: `await page_as(dash, "moderator", personas=["tester"])` -> a Playwright
  `Page` in a fresh browser context, signed in (the session row made directly, its
  cookie given to the context).

Build another setup (more personas, hot reload, settings) with `open_dash(...)`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.llm.mock import MockBackend
from bot.web.dashboard import DashboardServer, Moderator, Role
from bot.web.dashboard.store import add_moderator, create_session, list_audit
from tests.test_engine import PERSONA

os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The password every test account gets.
PASSWORD = "correct horse battery"
#: Where the browser tests put screenshots of the main pages. They are taken on every
#: run (a page that cannot be drawn fails), but written over the ones kept in docs/
#: (docs/dashboard.md shows them) only with BOT_SCREENSHOTS=docs, so a test run
#: leaves the checkout as it was.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "dashboard"
    if os.environ.get("BOT_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / "personabot-screenshots"
)
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


class Clock:
    """A settable clock for the dashboard (sessions expire, rate windows pass)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class DashUnderTest:
    """A running dashboard over a running app."""

    bot: App
    server: DashboardServer
    settings: Settings
    clock: Clock
    personas_dir: Path
    accounts: dict[str, Moderator] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    async def add(
        self,
        name: str,
        role: str | Role = "admin",
        *,
        personas: list[str] | None = None,
        password: str = PASSWORD,
    ) -> Moderator:
        """Add (or replace) a password account."""
        level = role if isinstance(role, Role) else Role.parse(role)
        who = await self.bot.db.run(
            lambda conn: add_moderator(conn, name, level, password, personas=personas)
        )
        self.accounts[name] = who
        return who

    async def session(self, who: Moderator) -> tuple[str, str]:
        """A session cookie value and CSRF token for `who`, made directly."""
        now = self.clock()
        return await self.bot.db.run(
            lambda conn: create_session(conn, who, now=now, lifetime=timedelta(hours=1))
        )

    @asynccontextmanager
    async def client(
        self, role: str = "admin", *, personas: list[str] | None = None, name: str | None = None
    ) -> AsyncIterator[SignedIn]:
        """An httpx client signed in (by the real sign-in form) as a new account."""
        name = name or f"{role}-{len(self.accounts) + 1}"
        who = await self.add(name, role, personas=personas)
        async with httpx.AsyncClient(base_url=self.url, timeout=20) as http:
            csrf = await sign_in(http, name, PASSWORD)
            yield SignedIn(http, who, csrf)

    async def audit(self, **filters: Any) -> list[Any]:
        """The audit log, newest first."""
        return await self.bot.db.read(lambda conn: list_audit(conn, limit=500, **filters))


@dataclass
class SignedIn:
    """A signed-in httpx client, its account and the session's CSRF token."""

    http: httpx.AsyncClient
    who: Moderator
    csrf: str

    async def post(
        self, path: str, data: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        """POST a form with the CSRF token."""
        return await self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


async def sign_in(http: httpx.AsyncClient, name: str, password: str) -> str:
    """Sign in through the form; the session's CSRF token."""
    page = await http.get("/login")
    token = CSRF_FIELD.search(page.text)
    assert token, page.text
    response = await http.post(
        "/login", data={"name": name, "password": password, "csrf": token.group(1)}
    )
    assert response.status_code == 303, response.text
    home = await http.get("/")
    assert home.status_code == 200, home.text
    found = CSRF_META.search(home.text)
    assert found and found.group(1)
    return found.group(1)


def dash_settings(
    tmp_path: Path,
    url: str,
    *,
    personas: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Settings for a test dashboard: persona files (default: `tester`), no memory."""
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    for pid, text in (personas or {"tester": PERSONA}).items():
        (folder / f"{pid}.yaml").write_text(text, encoding="utf-8")
    values: dict[str, Any] = {
        "database": {"url": url},
        "personas": {
            "dirs": [str(folder)],
            "default": next(iter(personas or {"tester": 0})),
            "watch": False,
        },
        "memory": {"enabled": False},
        "dashboard": {"port": 0},
    }
    for section, entries in (overrides or {}).items():
        values.setdefault(section, {}).update(entries)
    return load_settings(None, values)


@asynccontextmanager
async def open_dash(
    tmp_path: Path,
    url: str,
    *,
    personas: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    backend: Any = None,
    watch: bool = False,
    memory: bool = False,
) -> AsyncIterator[DashUnderTest]:
    """A running dashboard over an app on `url` (the mock backend echoes)."""
    settings = dash_settings(tmp_path, url, personas=personas, overrides=overrides)
    backend = backend or MockBackend(lambda req: f"heard: {req.messages[-1].content}")
    clock = Clock()
    async with open_app(settings, backend=backend, watch=watch, memory=memory) as bot:
        from bot.web.dashboard import create_dashboard
        from bot.web.dashboard.app import PAGE_MODULES

        modules = (*PAGE_MODULES, "tests.dashboard.probe")
        app = create_dashboard(bot, settings, clock=clock, modules=modules)
        server = DashboardServer(app, host="127.0.0.1", port=0)
        await server.start()
        try:
            yield DashUnderTest(bot, server, settings, clock, Path(settings.personas.dirs[0]))
        finally:
            await server.stop()


@pytest.fixture
async def dash(tmp_path: Path, database_url: str) -> AsyncIterator[DashUnderTest]:
    """A running dashboard, once on SQLite and once on PostgreSQL."""
    async with open_dash(tmp_path, database_url) as running:
        yield running


@pytest.fixture
async def dash_sqlite(tmp_path: Path) -> AsyncIterator[DashUnderTest]:
    """A running dashboard on a SQLite file."""
    async with open_dash(tmp_path, f"sqlite:///{tmp_path}/dash.db") as running:
        yield running


# -- the browser ----------------------------------------------------------------------


def chromium_missing() -> str | None:
    """Why browser tests cannot run here (None: they can)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium fonts-noto-cjk; CI does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (.venv/bin/pip install playwright; CI does)"
    return None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """Chromium (Debian's build, headless, its own fresh profile) driven by Playwright."""
    reason = chromium_missing()
    if reason is not None:
        if os.environ.get("BOT_TEST_BROWSER") == "required":
            pytest.fail(f"BOT_TEST_BROWSER=required, but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    profile = tmp_path / "chromium-profile"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--disk-cache-dir={profile / 'cache'}"],
            headless=True,
        )
        try:
            yield browser
        finally:
            await browser.close()
    shutil.rmtree(profile, ignore_errors=True)


PageAs = Callable[..., Awaitable[Any]]


@pytest.fixture
async def page_as(browser: Any) -> AsyncIterator[PageAs]:
    """`await page_as(dash, role, personas=None, name=None, locale="en-US")`: a Page in
    its own context, signed in as a new account of `role`, already on `/`."""
    contexts: list[Any] = []

    async def make(
        dash: DashUnderTest,
        role: str = "admin",
        *,
        personas: list[str] | None = None,
        name: str | None = None,
        locale: str = "en-US",
        viewport: dict[str, int] | None = None,
    ) -> Any:
        who = await dash.add(name or f"{role}-{len(dash.accounts) + 1}", role, personas=personas)
        token, _csrf = await dash.session(who)
        context = await browser.new_context(
            locale=locale, viewport=viewport or {"width": 1280, "height": 900}
        )
        contexts.append(context)
        await context.add_cookies(
            [
                {
                    "name": "dash_session",
                    "value": token,
                    "url": dash.url,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(dash.url + "/")
        return page

    yield make
    for context in contexts:
        await context.close()
