"""Signing in and out: the password form (rate-limited per name and per address,
counted in the database so every worker agrees), the session cookie, the language
switch, and Discord sign-in when it is configured (bot/web/dashboard/oauth.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import secrets
from datetime import timedelta

import structlog
from aiohttp import web

from bot.web.dashboard.i18n import LANGUAGES
from bot.web.dashboard.pages import (
    CSRF_KEY,
    DASHBOARD,
    MODERATOR_KEY,
    Dashboard,
    DashboardError,
    Pages,
    form_text,
    language,
    render,
    see_other,
)
from bot.web.dashboard.store import (
    MAX_PASSWORD,
    Moderator,
    clear_failures,
    count_failures,
    create_session,
    delete_session,
    password_account,
    record_failure,
    verify_password,
)

__all__ = ["client_ip", "is_https", "register", "safe_next", "sign_in"]

log = structlog.get_logger("bot.dashboard")

SESSION_COOKIE = "dash_session"
LOGIN_COOKIE = "dash_login"
LANG_COOKIE = "dash_lang"


def register(app: web.Application, pages: Pages) -> None:
    """The sign-in routes (public: no session needed)."""
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang", switch_language)
    state = app[DASHBOARD]
    if state.config.discord_client_id is not None:
        from bot.web.dashboard.oauth import register as register_oauth

        register_oauth(app)


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over https (a proxy's word counts only when
    `dashboard.trust_proxy` is set)."""
    if request.secure:
        return True
    if request.app[DASHBOARD].config.trust_proxy:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def client_ip(request: web.Request) -> str:
    """The address that rate limits count: the peer, or behind a trusted proxy the
    last address it added to X-Forwarded-For."""
    peer = request.remote or "unknown"
    if request.app[DASHBOARD].config.trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            peer = forwarded.split(",")[-1].strip()[:64] or peer
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:64]
    if address.version == 6:  # one person holds a whole /64
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def safe_next(target: str | None) -> str:
    """A path of this dashboard to go to after signing in (anything else: `/`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\r\n\\") or len(target) > 1000:
        return "/"
    return target


def _cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, **extra: object
) -> None:
    config = request.app[DASHBOARD].config
    secure = config.secure_cookies == "always" or (
        config.secure_cookies == "auto" and is_https(request)
    )
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        **extra,  # type: ignore[arg-type]
    )


async def sign_in(request: web.Request, who: Moderator, location: str) -> web.StreamResponse:
    """Start a session for `who` and send the browser to `location`."""
    state = request.app[DASHBOARD]
    lifetime = timedelta(hours=state.config.session_hours)
    now = state.now()
    token, _csrf = await state.db.run(
        lambda conn: create_session(conn, who, now=now, lifetime=lifetime)
    )
    response = see_other(location)
    _cookie(request, response, SESSION_COOKIE, token, max_age=int(lifetime.total_seconds()))
    response.del_cookie(LOGIN_COOKIE, path="/")
    log.info("dashboard.signed_in", name=who.name, role=who.role.label, via=who.via)
    return response


async def login_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    """The sign-in form (with its own CSRF token, in a cookie and in the form)."""
    state = request.app[DASHBOARD]
    if MODERATOR_KEY in request and error is None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    token = request.cookies.get(LOGIN_COOKIE) or _new_token()
    if len(token) > 64:
        token = _new_token()
    request[CSRF_KEY] = token
    next_path = request.query.get("next")
    if request.method == "POST":
        form = await request.post()
        value = form.get("next")
        next_path = value if isinstance(value, str) else None
    response = render(
        request,
        "login.html",
        {
            "error": error,
            "next": safe_next(next_path),
            "discord": state.config.discord_client_id is not None,
        },
        status=status,
    )
    _cookie(request, response, LOGIN_COOKIE, token)
    return response


def _new_token() -> str:
    return secrets.token_urlsafe(24)


async def login(request: web.Request) -> web.StreamResponse:
    """Check a name and password (the form's CSRF token already checked)."""
    state = request.app[DASHBOARD]
    form = await request.post()
    name = form_text(form, "name", max_chars=200, default="").strip()
    password = form_text(form, "password", max_chars=MAX_PASSWORD * 4, default="")
    next_field = form.get("next")
    location = safe_next(next_field if isinstance(next_field, str) else None)
    ip = client_ip(request)
    keys = [f"name:{name[:100]}", f"ip:{ip}"]
    limits = (state.config.login_failures_per_name, state.config.login_failures_per_ip)
    window = timedelta(seconds=state.config.login_window_s)
    now = state.now()
    counts = await state.db.read(
        lambda conn: [count_failures(conn, key, now=now, window=window) for key in keys]
    )
    if any(count >= limit for count, limit in zip(counts, limits, strict=True)):
        log.warning("dashboard.login_limited", name=name[:100], ip=ip)
        minutes = max(1, math.ceil(window.total_seconds() / 60))
        text = state.catalogue.text(_lang(request), "login.limited", minutes=minutes)
        return await login_page(request, error=text, status=429)
    who, stored = await state.db.read(lambda conn: password_account(conn, name))
    async with state.hashing:
        ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or who is None:
        await state.db.run(lambda conn: record_failure(conn, keys, now=now, window=window))
        log.info("dashboard.login_failed", name=name[:100], ip=ip)
        text = state.catalogue.text(_lang(request), "login.failed")
        return await login_page(request, error=text, status=401)
    await state.db.run(lambda conn: clear_failures(conn, keys[0]))
    return await sign_in(request, who, location)


def _lang(request: web.Request) -> str:
    return language(request)


async def logout(request: web.Request) -> web.StreamResponse:
    """End this browser's session (CSRF-checked like every form)."""
    state: Dashboard = request.app[DASHBOARD]
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        await state.db.run(lambda conn: delete_session(conn, token))
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def switch_language(request: web.Request) -> web.StreamResponse:
    """/lang?to=zh&next=/path: remember the choice in a cookie and go back."""
    to = request.query.get("to", "")
    if to not in LANGUAGES:
        raise DashboardError(400, detail=f"to: one of {', '.join(LANGUAGES)}")
    response = see_other(safe_next(request.query.get("next")))
    response.set_cookie(
        LANG_COOKIE, to, max_age=365 * 86400, path="/", samesite="Lax", httponly=True
    )
    return response
