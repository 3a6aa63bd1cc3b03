"""discord.py pointed at a configured REST API and gateway, per client.

discord.py builds every REST URL from the class attribute `discord.http.Route.BASE`
and connects to `DiscordWebSocket.DEFAULT_GATEWAY`; changing those is process-wide
(two clients in one process would have to agree). Instead the client made here
carries its own `HTTPClient` that rebases each request's URL, and a webhook adapter
(interaction answers and follow-ups travel through `discord.webhook.async_`) that
does the same; it is installed in the adapter's context, not globally.
"""

from __future__ import annotations

import asyncio
from contextvars import Token
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

__all__ = ["Routes", "make_client", "reset_webhook_routes", "use_routes_for_webhooks"]

#: After a request is cancelled during a global 429, when later requests may go
#: again (Discord's global waits are under a second; one that goes too early is
#: answered 429 and waits that out).
GLOBAL_REOPEN_S = 1.0


class Routes:
    """Where one client's REST calls and gateway connection go (None: Discord's own)."""

    def __init__(self, api_base_url: str | None, gateway_url: str | None) -> None:
        self.api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self.gateway = yarl.URL(gateway_url) if gateway_url else None

    def rebase(self, url: str) -> str:
        """`url` with Discord's API base replaced by the configured one."""
        base = Route.BASE  # read now: discord.py may switch API versions
        if self.api_base_url is not None and url.startswith(base):
            return self.api_base_url + url[len(base) :]
        return url

    def gateway_for(self, url: str) -> str:
        """Discord's default gateway replaced by the configured one (query kept); a
        `resume_gateway_url` the configured gateway handed out is left alone."""
        if self.gateway is None:
            return url
        parsed = yarl.URL(url)
        if parsed.host != DiscordWebSocket.DEFAULT_GATEWAY.host:
            return url
        return str(self.gateway.with_query(parsed.query))


class RoutedHTTPClient(HTTPClient):
    """discord.py's HTTP client (its rate-limit buckets included) with a base URL."""

    def __init__(self, like: HTTPClient, routes: Routes) -> None:
        super().__init__(
            like.loop,
            like.connector or None,
            proxy=like.proxy,
            proxy_auth=like.proxy_auth,
            unsync_clock=not like.use_clock,
            http_trace=like.http_trace,
            max_ratelimit_timeout=like.max_ratelimit_timeout,
        )
        self.routes = routes

    async def request(self, route: Route, **kwargs: Any) -> Any:
        route.url = self.routes.rebase(route.url)
        try:
            return await super().request(route, **kwargs)
        except asyncio.CancelledError:
            self._reopen_global()
            raise

    def _reopen_global(self) -> None:
        # discord.py clears `_global_over` while a request sleeps off a global 429 and
        # sets it again only when that sleep ends normally. A request cancelled in the
        # sleep (a typing indicator given up on, a turn past its timeout, a lane
        # cancelled) would leave every later request of this client waiting for ever
        # (seen as chats whose replies never left after a burst of 429s).
        over = getattr(self, "_global_over", None)
        if isinstance(over, asyncio.Event) and not over.is_set():
            self.loop.call_later(GLOBAL_REOPEN_S, over.set)

    async def ws_connect(self, url: str, *, compress: int = 0) -> aiohttp.ClientWebSocketResponse:
        return await super().ws_connect(self.routes.gateway_for(url), compress=compress)

    async def static_login(self, token: str) -> Any:
        user = await super().static_login(token)
        if self.routes.api_base_url is not None and self.routes.gateway is None:
            # An API of our own (a proxy, a test double) names its gateway.
            _, url, _ = await self.get_bot_gateway()
            self.routes.gateway = yarl.URL(url)
        return user


class _RoutedWebhookAdapter(AsyncWebhookAdapter):
    def __init__(self, routes: Routes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.routes = routes

    async def request(self, route: Route, *args: Any, **kwargs: Any) -> Any:
        route.url = self.routes.rebase(route.url)
        return await super().request(route, *args, **kwargs)


def use_routes_for_webhooks(routes: Routes) -> Token[AsyncWebhookAdapter] | None:
    """Route interaction answers in the current context (and the tasks it starts);
    returns the token to reset it with, None when nothing needed changing."""
    if routes.api_base_url is None:
        return None
    return async_context.set(_RoutedWebhookAdapter(routes))


class _RoutedMixin:
    """Swaps in a `RoutedHTTPClient` before discord.py's connection state keeps the
    client's HTTP client (every model reaches REST through that state)."""

    http: HTTPClient
    _routes: Routes

    def __init__(self, *, routes: Routes, **options: Any) -> None:
        self._routes = routes
        super().__init__(**options)

    def _get_state(self, **options: Any) -> Any:
        # Client.__init__ calls this once `self.http` exists, before anything keeps it.
        self.http = RoutedHTTPClient(self.http, self._routes)
        return super()._get_state(**options)  # type: ignore[misc]


class _RoutedClient(_RoutedMixin, discord.Client):
    pass


class _RoutedShardedClient(_RoutedMixin, discord.AutoShardedClient):
    pass


def make_client(routes: Routes, *, sharded: bool, **options: Any) -> discord.Client:
    """A `discord.Client` (or `AutoShardedClient`) whose REST calls and gateway follow
    `routes`; `options` are discord.py's own."""
    if sharded:
        return _RoutedShardedClient(routes=routes, **options)
    return _RoutedClient(routes=routes, **options)


def reset_webhook_routes(token: Token[AsyncWebhookAdapter]) -> None:
    """Undo `use_routes_for_webhooks`."""
    async_context.reset(token)
