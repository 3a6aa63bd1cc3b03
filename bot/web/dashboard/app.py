"""The dashboard's aiohttp application: `create_dashboard(bot)` and its server.

Middlewares, outermost first: error pages (never a traceback; JSON for fetch
calls), security headers, the reader's language, the session (every route but
sign-in, the language switch and static files needs one) and the CSRF check of
every unsafe method (the session's token in the `csrf` field or the
`X-CSRF-Token` header; the sign-in form's own token before there is a session).
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web

from bot.web.dashboard import auth
from bot.web.dashboard.auth import LANG_COOKIE, LOGIN_COOKIE, SESSION_COOKIE
from bot.web.dashboard.i18n import LANGUAGES, negotiate
from bot.web.dashboard.pages import (
    CSRF_KEY,
    DASHBOARD,
    LANG_KEY,
    MODERATOR_KEY,
    STATIC,
    Dashboard,
    DashboardError,
    Pages,
    render,
    templates,
)
from bot.web.dashboard.store import session_moderator
from bot.web.listen import listen

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from bot.app import App
    from bot.config import Settings

__all__ = ["DashboardServer", "create_dashboard", "start_dashboard"]

log = structlog.get_logger("bot.dashboard")

#: The page modules, registered in this order when present (each defines
#: `register(pages)`); a module not written yet is skipped.
PAGE_MODULES = (
    "bot.web.dashboard.home",
    "bot.web.dashboard.personas",
    "bot.web.dashboard.conversations",
    "bot.web.dashboard.people",
    "bot.web.dashboard.operations",
)

#: Paths served without a session.
PUBLIC = ("/login", "/lang", "/oauth/discord", "/static/", "/favicon.ico")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_dashboard(
    bot: App,
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    modules: tuple[str, ...] = PAGE_MODULES,
) -> web.Application:
    """The dashboard over a running bot's parts (`bot.app.App`): its database,
    personas, engine, memory and metrics. `settings` default to the bot's."""
    settings = settings or bot.settings
    state = Dashboard(bot=bot, settings=settings, templates=templates())
    if clock is not None:
        state.clock = clock
    app = web.Application(
        client_max_size=settings.dashboard.max_body_bytes,
        middlewares=[_headers, _errors, _language, _session, _csrf],
    )
    app[DASHBOARD] = state
    pages = Pages(app, state)
    auth.register(app, pages)
    for name in modules:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(pages)
    app.router.add_static("/static", STATIC, append_version=False)
    return app


# -- middlewares ----------------------------------------------------------------------


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _error_response(request: web.Request, status: int, key: str, **values: Any) -> web.Response:
    state = request.app[DASHBOARD]
    lang = request.get(LANG_KEY, LANGUAGES[0])
    text = state.catalogue.text(lang, key, **values)
    if _wants_json(request):
        return web.json_response({"error": text, "status": status}, status=status)
    try:
        return render(request, "error.html", {"status": status, "message": text}, status=status)
    except Exception:  # a broken template must not hide the error itself
        log.exception("dashboard.error_page_failed")
        return web.Response(text=text, status=status, content_type="text/plain")


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except DashboardError as exc:
        return _error_response(request, exc.status, exc.key, **exc.values)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            limit = request.app[DASHBOARD].config.max_body_bytes
            return _error_response(request, 413, "error.413", limit=_size(limit))
        key = f"error.{exc.status}" if exc.status in (400, 403, 404, 405, 429) else "error.400"
        return _error_response(request, exc.status, key, detail=exc.reason)
    except Exception:
        log.exception("dashboard.failed", path=request.path[:200], method=request.method)
        return _error_response(request, 500, "error.500")


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:  # redirects
        _secure_headers(request, exc)
        raise
    _secure_headers(request, response)
    return response


def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", _CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def _language(request: web.Request, handler: Any) -> web.StreamResponse:
    chosen = request.cookies.get(LANG_COOKIE)
    request[LANG_KEY] = negotiate(request.headers.get("Accept-Language"), chosen)
    response: web.StreamResponse = await handler(request)
    return response


def is_public(path: str) -> bool:
    return any(
        path == p or (p.endswith("/") and path.startswith(p)) or path.startswith(p + "/")
        for p in PUBLIC
    )


@web.middleware
async def _session(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[DASHBOARD]
    token = request.cookies.get(SESSION_COOKIE, "")
    if token and not request.path.startswith("/static/"):
        now = state.now()
        found = await state.db.read(lambda conn: session_moderator(conn, token, now=now))
        if found is not None:
            request[MODERATOR_KEY], request[CSRF_KEY] = found
    if MODERATOR_KEY not in request and not is_public(request.path):
        if request.method in ("GET", "HEAD") and not _wants_json(request):
            raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs[:1000], safe="/"))
        raise DashboardError(401, "error.403", detail="not signed in")
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def _csrf(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method in UNSAFE:
        _check_origin(request)
        expected = request.get(CSRF_KEY) or (
            request.cookies.get(LOGIN_COOKIE) if request.path == "/login" else None
        )
        sent = request.headers.get("X-CSRF-Token")
        if sent is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            field = (await request.post()).get("csrf")
            sent = field if isinstance(field, str) else None
        if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            log.info("dashboard.csrf_refused", path=request.path[:200])
            raise DashboardError(403, "error.csrf")
    response: web.StreamResponse = await handler(request)
    return response


def _check_origin(request: web.Request) -> None:
    """A browser names the page a form came from: refuse other sites outright."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if urlsplit(origin).netloc != request.host:
        log.info("dashboard.origin_refused", origin=origin[:200])
        raise DashboardError(403, "error.csrf")


# -- the server -----------------------------------------------------------------------


class DashboardServer:
    """Serves the dashboard on `host:port` (`async with`, or `start` / `stop`)."""

    def __init__(self, app: web.Application, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; `ConfigError` when the address cannot be bound."""
        self._runner, self.port = await listen(self.app, self.host, self.port, label="dashboard")
        log.info("dashboard.listening", url=self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> DashboardServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_dashboard(
    bot: App, settings: Settings | None = None, *, host: str | None = None, port: int | None = None
) -> DashboardServer:
    """Build the dashboard over `bot` and serve it (host and port default to the
    `dashboard` settings)."""
    settings = settings or bot.settings
    server = DashboardServer(
        create_dashboard(bot, settings),
        host=host or settings.dashboard.host,
        port=settings.dashboard.port if port is None else port,
    )
    await server.start()
    return server
