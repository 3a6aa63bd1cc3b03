"""Sign in with Discord (OAuth2 authorization code), mapping guild roles to ours.

/oauth/discord sends the browser to Discord's authorize page with a random `state`
(kept in a short-lived cookie, SameSite=Lax so that it comes back with Discord's
redirect); /oauth/discord/callback checks `state`, trades the code for a token,
reads the member's roles in `dashboard.discord_guild_id` and maps them through
`dashboard.discord_roles` (the highest wins; none mapped: refused). The callback
then shows a page that continues to the dashboard: the session cookie is
SameSite=Strict, which a browser does not send on a redirect chain that began on
another site. Discord's token is used once and never stored.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from aiohttp import web

from bot.web.dashboard.pages import DASHBOARD, MODERATOR_KEY, DashboardError, render
from bot.web.dashboard.store import Role, upsert_discord_moderator

__all__ = ["register"]

log = structlog.get_logger("bot.dashboard")

STATE_COOKIE = "dash_oauth"
#: How long the browser may take on Discord's page.
STATE_MAX_AGE_S = 600
SCOPES = "identify guilds.members.read"


def register(app: web.Application) -> None:
    app.router.add_get("/oauth/discord", start)
    app.router.add_get("/oauth/discord/callback", callback)


def _redirect_uri(request: web.Request) -> str:
    config = request.app[DASHBOARD].config
    from bot.web.dashboard.auth import is_https

    base = config.public_url or f"{'https' if is_https(request) else 'http'}://{request.host}"
    return f"{base}/oauth/discord/callback"


async def start(request: web.Request) -> web.StreamResponse:
    """Off to Discord's authorize page."""
    from bot.web.dashboard.auth import is_https, safe_next

    config = request.app[DASHBOARD].config
    state = secrets.token_urlsafe(24)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": config.discord_client_id or "",
            "scope": SCOPES,
            "state": state,
            "redirect_uri": _redirect_uri(request),
            "prompt": "none",
        }
    )
    response = web.Response(
        status=303, headers={"Location": f"{config.discord_authorize_url}?{query}"}
    )
    secure = config.secure_cookies == "always" or (
        config.secure_cookies == "auto" and is_https(request)
    )
    next_path = safe_next(request.query.get("next"))
    response.set_cookie(
        STATE_COOKIE,
        f"{state}|{next_path}",
        max_age=STATE_MAX_AGE_S,
        httponly=True,
        samesite="Lax",
        secure=secure,
        path="/oauth/discord",
    )
    return response


class _Refused(Exception):
    pass


async def callback(request: web.Request) -> web.StreamResponse:
    """Discord sent the browser back: check, map the roles, sign in."""
    from bot.web.dashboard.auth import safe_next, sign_in

    kept = request.cookies.get(STATE_COOKIE, "")
    expected, _, next_path = kept.partition("|")
    state = request.query.get("state", "")
    if request.query.get("error"):
        return _failed(request, request.query["error"][:100])
    if not expected or not state or not hmac.compare_digest(state.encode(), expected.encode()):
        return _failed(request, "state does not match (start again from the sign-in page)")
    code = request.query.get("code", "")
    if not code or len(code) > 512:
        return _failed(request, "no code")
    try:
        user, roles = await _fetch_member(request, code)
        role, personas = _map_roles(request, roles)
    except _Refused as exc:
        return _failed(request, str(exc))
    app_state = request.app[DASHBOARD]
    discord_id = str(user.get("id", ""))
    if not discord_id.isdigit() or len(discord_id) > 32:
        return _failed(request, "Discord sent no user id")
    username = str(user.get("username", ""))[:64]
    now = app_state.now()
    who = await app_state.db.run(
        lambda conn: upsert_discord_moderator(conn, discord_id, username, role, personas, now=now)
    )
    redirect = await sign_in(request, who, safe_next(next_path))
    # Not a redirect: a page of ours that continues, so the Strict cookie is sent.
    request[MODERATOR_KEY] = who
    page = render(request, "continue.html", {"location": redirect.headers["Location"]})
    for cookie in redirect.cookies.values():
        page.cookies[cookie.key] = cookie
    page.del_cookie(STATE_COOKIE, path="/oauth/discord")
    return page


async def _fetch_member(request: web.Request, code: str) -> tuple[dict[str, Any], list[str]]:
    config = request.app[DASHBOARD].config
    secret = config.discord_client_secret
    api = config.discord_api_url
    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            token = await http.post(
                f"{api}/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": _redirect_uri(request),
                },
                auth=(config.discord_client_id or "", secret.get_secret_value() if secret else ""),
            )
            if token.status_code != 200:
                raise _Refused(f"Discord refused the code (HTTP {token.status_code})")
            access = token.json().get("access_token")
            if not isinstance(access, str) or not access:
                raise _Refused("Discord sent no access token")
            headers = {"Authorization": f"Bearer {access}"}
            member = await http.get(
                f"{api}/users/@me/guilds/{config.discord_guild_id}/member", headers=headers
            )
            if member.status_code == 404:
                raise _Refused("you are not a member of the moderators' server")
            if member.status_code != 200:
                raise _Refused(f"Discord did not say your roles (HTTP {member.status_code})")
            data = member.json()
    except httpx.HTTPError as exc:
        log.warning("dashboard.discord_unreachable", error=type(exc).__name__)
        raise _Refused("Discord could not be reached") from None
    except ValueError:
        raise _Refused("Discord's answer was not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("user"), dict):
        raise _Refused("Discord's answer had no user")
    roles = data.get("roles")
    if not isinstance(roles, list):
        raise _Refused("Discord's answer had no roles")
    return data["user"], [str(r) for r in roles[:250]]


def _map_roles(request: web.Request, roles: list[str]) -> tuple[Role, list[str] | None]:
    config = request.app[DASHBOARD].config
    ours = [Role.parse(config.discord_roles[r]) for r in roles if r in config.discord_roles]
    if not ours:
        raise _Refused("none of your roles on the server is a dashboard role")
    role = max(ours)
    limited = [r for r in roles if r in config.discord_role_personas]
    if role != Role.MODERATOR or not limited:
        return role, None
    personas = sorted({p for r in limited for p in config.discord_role_personas[r]})
    return role, personas


def _failed(request: web.Request, reason: str) -> web.StreamResponse:
    log.info("dashboard.discord_refused", reason=reason)
    state = request.app[DASHBOARD]
    from bot.web.dashboard.pages import language

    text = state.catalogue.text(language(request), "login.discord_failed", reason=reason)
    raise DashboardError(403, "error.403", detail=text)
