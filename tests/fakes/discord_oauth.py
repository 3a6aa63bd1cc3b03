"""A fake Discord OAuth2 provider on loopback, for the dashboard's "Sign in with Discord".

It serves what the dashboard uses, as Discord documents it: the authorize page
(`GET /oauth2/authorize`, approved at once for the member `next_member` names, then a
redirect to `redirect_uri` with `code` and `state`), the token exchange (`POST
/api/oauth2/token`, client id and secret by HTTP Basic, the same `redirect_uri`, a
code used once) and the member of a guild (`GET /api/users/@me/guilds/{guild}/member`
with the bearer token: `user` and `roles`, 404 for someone not in the guild).

    async with FakeDiscordOAuth(client_id="app", client_secret="s", guild_id="1") as fake:
        fake.members["42"] = {"username": "ann", "roles": ["900"]}
        fake.next_member = "42"
        ... settings: dashboard.discord_authorize_url = fake.authorize_url,
                      dashboard.discord_api_url = fake.api_url ...
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

__all__ = ["FakeDiscordOAuth"]


@dataclass
class FakeDiscordOAuth:
    client_id: str = "dashboard-app"
    client_secret: str = "fake-client-secret"
    guild_id: str = "111"
    #: The host it listens on (`localhost`: another site than 127.0.0.1 for a browser).
    host: str = "127.0.0.1"
    #: Discord user id -> {"username": ..., "roles": [role ids]}; absent: not in the guild.
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Who approves on the authorize page (a user id); "deny" answers error=access_denied.
    next_member: str = ""
    #: Every request, as (method, path).
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: When set, the token endpoint answers this status.
    token_status: int | None = None
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (user, redirect)
    _tokens: dict[str, str] = field(default_factory=dict)  # access token -> user
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/oauth2/authorize"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    async def __aenter__(self) -> FakeDiscordOAuth:
        app = web.Application()
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_post("/api/oauth2/token", self._token)
        app.router.add_get("/api/users/@me/guilds/{guild}/member", self._member)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(("GET", request.path))
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return web.Response(status=400, text="invalid client_id or response_type")
        redirect = q.get("redirect_uri", "")
        if not redirect.startswith("http"):
            return web.Response(status=400, text="invalid redirect_uri")
        if self.next_member == "deny":
            query = urlencode({"error": "access_denied", "state": q.get("state", "")})
            raise web.HTTPFound(f"{redirect}?{query}")
        code = secrets.token_urlsafe(16)
        self._codes[code] = (self.next_member, redirect)
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, 'state': q.get('state', '')})}")

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(("POST", request.path))
        if self.token_status is not None:
            return web.json_response({"error": "server_error"}, status=self.token_status)
        auth = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if auth != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        found = self._codes.pop(str(form.get("code", "")), None)
        if form.get("grant_type") != "authorization_code" or found is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        user, redirect = found
        if form.get("redirect_uri") != redirect:
            return web.json_response({"error": "invalid_grant"}, status=400)
        token = secrets.token_urlsafe(16)
        self._tokens[token] = user
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 604800,
                "scope": "identify guilds.members.read",
            }
        )

    async def _member(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(("GET", request.path))
        auth = request.headers.get("Authorization", "")
        user = self._tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or user is None:
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        member = self.members.get(user)
        if request.match_info["guild"] != self.guild_id or member is None:
            return web.json_response({"message": "Unknown Guild", "code": 10004}, status=404)
        return web.json_response(
            {
                "user": {"id": user, "username": member["username"], "discriminator": "0"},
                "roles": member["roles"],
                "nick": None,
                "joined_at": "2026-01-01T00:00:00+00:00",
            }
        )
