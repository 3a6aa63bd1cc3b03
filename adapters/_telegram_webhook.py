"""The Telegram webhook: our own aiohttp route, answering 200 only after the commit.

Telegram posts one update per request and posts it again until it gets a 200, so
200 must mean "durable": the body is committed (through `accept`, the inbox) first,
and a failed commit answers 503. Only a request carrying the secret token
(`X-Telegram-Bot-Api-Secret-Token`, compared in constant time) is read at all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

import structlog
from aiohttp import web
from telegram import Bot
from telegram.error import TelegramError

from adapters._telegram_intake import Accept, webhook_events
from bot.config import TelegramSettings
from bot.errors import AdapterError

__all__ = ["WebhookServer", "derived_secret"]

log = structlog.get_logger("adapters.telegram")

#: Telegram's updates are far smaller; anything bigger is refused with 413.
_MAX_BODY = 2 * 1024 * 1024


def derived_secret(token: str) -> str:
    """A webhook secret every worker with this bot token computes alike; only whoever
    knows the token can compute it (Telegram allows A-Z, a-z, 0-9, _ and -)."""
    digest = hmac.new(token.encode(), b"personabot telegram webhook", hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


class WebhookServer:
    """Serves `settings.webhook_path` and registers `settings.webhook_url` with Telegram."""

    def __init__(
        self, settings: TelegramSettings, accept: Accept, *, shared_secret: bool = False
    ) -> None:
        """`shared_secret`: without a configured secret, derive one from the token
        (several workers register the same webhook and must all accept its posts)."""
        self.settings = settings
        self.accept = accept
        secret = settings.webhook_secret
        # Without a configured secret a random one is registered for this run, so the
        # route never accepts unauthenticated posts.
        if secret is not None:
            self.secret = secret.get_secret_value()
        elif shared_secret and settings.token is not None:
            self.secret = derived_secret(settings.token.get_secret_value())
        else:
            self.secret = secrets.token_urlsafe(32)
        #: The port actually bound (listen_port 0: any free one).
        self.port: int | None = None

    async def serve(
        self,
        bot: Bot,
        stop: asyncio.Event,
        *,
        allowed_updates: Sequence[str],
        ready: asyncio.Event,
    ) -> None:
        """Listen, register the webhook, set `ready`, and serve until `stop` is set.

        Raises `AdapterError` when the port cannot be bound or setWebhook fails.
        """
        settings = self.settings
        web_app = web.Application(client_max_size=_MAX_BODY)
        web_app.router.add_post(settings.webhook_path, self._post)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
            try:
                await site.start()
            except OSError as exc:
                raise AdapterError(
                    f"telegram: cannot listen on {settings.listen_host}:"
                    f"{settings.listen_port} for the webhook: {exc.strerror}"
                ) from None
            sockets = getattr(site._server, "sockets", None)
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            assert settings.webhook_url is not None
            try:
                await bot.set_webhook(
                    settings.webhook_url,
                    secret_token=self.secret,
                    allowed_updates=list(allowed_updates),
                )
            except TelegramError as exc:
                raise AdapterError(f"telegram: setWebhook failed: {exc}") from None
            ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()  # no more posts: Telegram keeps the rest for later

    async def _post(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            log.warning("telegram.webhook_bad_secret", remote=request.remote)
            return web.Response(status=401, text="wrong or missing secret token")
        body = await request.read()
        # Whatever the body is, it is stored: a malformed one as an event that fails
        # with its reason when handled (posting it again would not mend it).
        events = webhook_events(body)
        try:
            await self.accept(events)
        except Exception as exc:  # not durable: Telegram must post it again
            log.error("telegram.webhook_commit_failed", error=str(exc)[:300])
            return web.Response(status=503, text="not stored; try again")
        return web.Response(text="ok")
