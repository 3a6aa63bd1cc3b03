"""A fake Telegram Bot API server that python-telegram-bot talks to over sockets.

It is a real aiohttp server on 127.0.0.1 (a random free port) that runs on the
caller's event loop, and it enforces the platform rules our adapter must respect:

- `sendMessage` longer than 4,096 characters: 400 "message is too long"; empty: 400;
  a `parse_mode` whose markup does not parse: 400 "can't parse entities";
- a private chat whose user never started the bot: 403 "bot can't initiate
  conversation with a user"; a user who blocked the bot: 403 "bot was blocked";
- one scripted 429 with `retry_after` (`fail_next`);
- `getUpdates` long-polls, honouring `timeout`, `offset`, `limit` and
  `allowed_updates` (reactions are only delivered when asked for, as on Telegram);
  while a webhook is set it answers 409, and pushes updates to the webhook instead,
  with the `X-Telegram-Bot-Api-Secret-Token` header;
- `getFile` and the file download endpoint, `sendChatAction`, `setWebhook`,
  `deleteWebhook`, `setMyCommands`; an unknown token gets 401, an unknown method 404;
- an update is forgotten only once a later `offset` confirms it (as on Telegram), so
  a bot that dies before confirming gets it again.

`Harsh` makes it harsher than the real Bot API, at seeded rates: a share of sends
answered 429 with `retry_after`, some calls delayed, a fixed latency on every call,
Telegram's flood limit (more than 30 sends in a second: 429) enforced. `push_raw`
injects any update body, e.g. one python-telegram-bot cannot parse (`poll()` is
one: a poll without `allows_revoting`, as older self-hosted servers send).

Every sent message is kept in `sent` with its arrival time (`time.monotonic()`), so
tests can assert pacing; `actions` holds chat actions. Updates are injected with the
helpers (`private_message`, `group_message`, `edit`, `reaction`, `poll`,
`member_join`, `sticker`, `photo`, `document`), which return the update dict.

    async with FakeTelegramAPI() as api:
        app = ApplicationBuilder().token(api.token).base_url(api.base_url)
              .base_file_url(api.base_file_url).build()
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes._telegram_updates import SentMessage, UpdateBuilders

__all__ = ["FakeTelegramAPI", "Harsh", "SentMessage", "max_in_window"]

TOKEN = "123456:TEST-token_for-the-fake"
MAX_TEXT = 4096
# Telegram delivers every kind except these when `allowed_updates` is not given.
_NOT_BY_DEFAULT = {"chat_member", "message_reaction", "message_reaction_count"}
_MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_HTML_TAG = re.compile(r"</?(b|strong|i|em|u|ins|s|strike|del|code|pre|a|tg-spoiler|span)\b[^>]*>")


@dataclass(frozen=True)
class Harsh:
    """Misbehaviour at seeded rates; the default misbehaves not at all.

    `rate_limit_share` of sendMessage calls answer 429 with `retry_after`;
    `delay_share` of all calls wait `delay_s` (a uniform range) before answering;
    every call waits `latency_s`; with `flood_limit`, a send beyond that many in the
    last second answers 429 (Telegram's ~30/s per bot).
    """

    seed: int = 0
    rate_limit_share: float = 0.0
    retry_after: int = 1
    delay_share: float = 0.0
    delay_s: tuple[float, float] = (0.5, 2.0)
    latency_s: float = 0.0
    flood_limit: int | None = None
    #: Methods the random 429s and delays apply to (the long poll is never delayed).
    methods: frozenset[str] = field(
        default_factory=lambda: frozenset({"sendMessage", "sendChatAction"})
    )


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of `times` (sorted or not) that fall in any `window_s` span."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, bisect.bisect_right(ordered, start + window_s - 1e-9) - i)
    return best


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None = None
    chat_id: int | None = None


class FakeTelegramAPI(UpdateBuilders):
    """The Bot API's HTTP surface, in memory; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        bot_id: int = 4242,
        username: str = "persona_test_bot",
        first_name: str = "Tess",
        harsh: Harsh | None = None,
    ) -> None:
        self.token = token
        self.harsh = harsh or Harsh()
        self._rng = random.Random(self.harsh.seed)
        self.bot_user = {
            "id": bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.port = 0
        self.updates: list[dict[str, Any]] = []  # not yet confirmed by an offset
        self.sent: list[SentMessage] = []
        self.actions: list[tuple[int, str, float]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.started: set[int] = set()  # private chats whose user started the bot
        self.blocked: set[int] = set()
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.webhook_allowed: list[str] | None = None
        self.webhook_responses: list[int] = []
        self.allowed_updates: list[str] | None = None
        self.commands: list[dict[str, Any]] = []
        #: Called with each SentMessage as it is accepted (benchmarks hook this).
        self.on_sent: Callable[[SentMessage], None] | None = None
        self.record_calls = True
        #: Calls per method (kept even when `record_calls` is off).
        self.counts: Counter[str] = Counter()
        #: Arrival time of every sendMessage call, answered or refused.
        self.send_attempts: list[float] = []
        #: 429s answered (random, flood limit or scripted).
        self.rate_limited = 0
        #: The highest update_id confirmed by an offset.
        self.confirmed = 0
        #: sendMessage calls being answered right now (a crash here may repeat them).
        self.sends_in_flight = 0
        #: False: getUpdates answers at once, ignoring `timeout` (a server that does
        #: not long-poll; a naive client would spin on it).
        self.long_poll = True
        #: Called with each update just before it is posted to the webhook.
        self.on_webhook_post: Callable[[dict[str, Any]], None] | None = None
        self._failures: list[_Failure] = []
        self._next_update = itertools.count(1)
        self._next_message = itertools.count(1000)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._push_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._date = int(time.time())
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """For `ApplicationBuilder.base_url` (PTB appends the token)."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For `ApplicationBuilder.base_file_url`."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    async def start(self) -> None:
        """Serve on a random free port of 127.0.0.1."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop serving (long polls in progress are answered first)."""
        self._closing = True
        self._new_update.set()
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegramAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- scripting ---------------------------------------------------------------------

    def fail_next(
        self,
        method: str = "sendMessage",
        *,
        status: int = 429,
        retry_after: int | None = 1,
        description: str | None = None,
        chat_id: int | None = None,
    ) -> None:
        """The next call of `method` (to `chat_id`, if given) fails once like this."""
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}" if status == 429 else "scripted"
            )
        self._failures.append(_Failure(method, status, description, retry_after, chat_id))

    def add_file(self, content: bytes, file_name: str = "file.bin") -> str:
        """Store a file the bot can fetch with getFile; returns its file_id."""
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = (file_name, content)
        return file_id

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        """Messages sent to one chat, in order."""
        return [m for m in self.sent if m.chat_id == chat_id]

    async def wait_for(
        self, condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
    ) -> None:
        """Poll `condition` until it is true; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    # -- the HTTP side ------------------------------------------------------------------

    @staticmethod
    def _error(status: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data: dict[str, Any] = await request.json()
            return data
        form = await request.post()
        return dict(form.items())

    def _take_failure(self, method: str, chat_id: int | None) -> _Failure | None:
        for failure in self._failures:
            if failure.method == method and failure.chat_id in (None, chat_id):
                self._failures.remove(failure)
                return failure
        return None

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except (ConnectionResetError, aiohttp.ClientPayloadError):
            # The client gave up mid-request (PTB cancels a typing action when the
            # reply is ready first): nothing to answer.
            return web.Response(status=400)
        if self.record_calls:
            self.calls.append((method, params))
        self.counts[method] += 1
        sending = method == "sendMessage"
        if sending:
            self.send_attempts.append(time.monotonic())
            self.sends_in_flight += 1
        try:
            return await self._answer(method, params)
        finally:
            if sending:
                self.sends_in_flight -= 1

    async def _answer(self, method: str, params: dict[str, Any]) -> web.Response:
        harsh = self.harsh
        if harsh.latency_s:
            await asyncio.sleep(harsh.latency_s)
        chat_id = _int(params.get("chat_id"))
        failure = self._take_failure(method, chat_id)
        if failure is not None:
            if failure.status == 429:
                self.rate_limited += 1
                return self._error(429, failure.description, retry_after=failure.retry_after)
            return self._error(failure.status, failure.description)
        if method in harsh.methods:
            if harsh.delay_share and self._rng.random() < harsh.delay_share:
                await asyncio.sleep(self._rng.uniform(*harsh.delay_s))
            if method == "sendMessage" and self._flooded():
                return self._too_many(1)
            if harsh.rate_limit_share and self._rng.random() < harsh.rate_limit_share:
                return self._too_many(harsh.retry_after)
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return self._error(404, "Not Found")
        result: web.Response = await handler(params)
        return result

    def _flooded(self) -> bool:
        limit = self.harsh.flood_limit
        if limit is None:
            return False
        now = time.monotonic()
        recent = len(self.send_attempts) - bisect.bisect_left(self.send_attempts, now - 1.0)
        return recent > limit

    def _too_many(self, retry_after: int) -> web.Response:
        self.rate_limited += 1
        return self._error(
            429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
        )

    def max_sends_per_second(self) -> int:
        """The most sendMessage calls that arrived within any one second."""
        return max_in_window(self.send_attempts)

    async def _m_getme(self, params: dict[str, Any]) -> web.Response:
        return self._ok(self.bot_user)

    async def _m_getupdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url is not None:
            return self._error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = _int(params.get("offset")) or 0
        limit = _int(params.get("limit")) or 100
        timeout = float(params.get("timeout") or 0) if self.long_poll else 0.0
        allowed = params.get("allowed_updates")
        if allowed is not None:
            self.allowed_updates = json.loads(allowed) if isinstance(allowed, str) else allowed
        if offset:
            # Only now are the updates before `offset` confirmed, and forgotten.
            self.confirmed = max(self.confirmed, offset - 1)
            self.updates = [u for u in self.updates if _update_id(u) >= offset]
        deadline = time.monotonic() + timeout
        while True:
            ready = [u for u in self.updates if self._wanted(u, self.allowed_updates)][:limit]
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0 or self._closing:
                return self._ok(ready)
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), remaining)

    @staticmethod
    def _wanted(update: dict[str, Any], allowed: list[str] | None) -> bool:
        kind = next((k for k in update if k != "update_id"), "")
        if not allowed:
            return kind not in _NOT_BY_DEFAULT
        return kind in allowed

    async def _m_sendmessage(self, params: dict[str, Any]) -> web.Response:
        chat_id = _int(params.get("chat_id"))
        text = str(params.get("text", ""))
        parse_mode = params.get("parse_mode") or None
        if chat_id is None:
            return self._error(400, "Bad Request: chat_id is empty")
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        if parse_mode is not None and not _markup_parses(text, str(parse_mode)):
            return self._error(400, "Bad Request: can't parse entities: unsupported markup")
        if chat_id > 0:
            if chat_id in self.blocked:
                return self._error(403, "Forbidden: bot was blocked by the user")
            if chat_id not in self.started:
                return self._error(403, "Forbidden: bot can't initiate conversation with a user")
        reply = params.get("reply_parameters")
        reply_to = None
        if reply:
            reply_to = (json.loads(reply) if isinstance(reply, str) else reply).get("message_id")
        sent = SentMessage(
            chat_id=chat_id,
            text=text,
            message_id=next(self._next_message),
            at=time.monotonic(),
            parse_mode=str(parse_mode) if parse_mode else None,
            reply_to=reply_to,
            thread=_int(params.get("message_thread_id")),
        )
        self.sent.append(sent)
        if self.on_sent is not None:
            self.on_sent(sent)
        result: dict[str, Any] = {
            "message_id": sent.message_id,
            "date": self._date,
            "chat": self._chat(chat_id),
            "from": self.bot_user,
            "text": text,
        }
        if sent.thread is not None:
            result["message_thread_id"] = sent.thread
        return self._ok(result)

    async def _m_sendchataction(self, params: dict[str, Any]) -> web.Response:
        chat_id = _int(params.get("chat_id"))
        assert chat_id is not None
        if chat_id > 0 and (chat_id in self.blocked or chat_id not in self.started):
            return self._error(403, "Forbidden: bot was blocked by the user")
        self.actions.append((chat_id, str(params.get("action")), time.monotonic()))
        return self._ok(True)

    async def _m_getfile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params.get("file_id"))
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        name, content = self.files[file_id]
        return self._ok(
            {
                "file_id": file_id,
                "file_unique_id": file_id + "-u",
                "file_size": len(content),
                "file_path": f"documents/{file_id}/{name}",
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        parts = request.match_info["path"].split("/")
        if len(parts) < 2 or parts[1] not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[parts[1]][1])

    async def _m_setwebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = str(params["url"]) or None
        self.webhook_secret = params.get("secret_token")
        allowed = params.get("allowed_updates")
        self.webhook_allowed = json.loads(allowed) if isinstance(allowed, str) else allowed
        if self.webhook_url and self.updates:
            self._ensure_pusher()
        return self._ok(True)

    async def _m_deletewebhook(self, params: dict[str, Any]) -> web.Response:
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates.clear()
        self.webhook_url = None
        return self._ok(True)

    async def _m_setmycommands(self, params: dict[str, Any]) -> web.Response:
        raw = params.get("commands", "[]")
        self.commands = json.loads(raw) if isinstance(raw, str) else raw
        return self._ok(True)

    # -- webhook delivery --------------------------------------------------------------

    def _ensure_pusher(self) -> None:
        if self._push_task is None or self._push_task.done():
            self._push_task = asyncio.get_running_loop().create_task(self._push_webhook())

    async def _push_webhook(self) -> None:
        """Post pending updates to the webhook, one at a time, like Telegram does."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        while self.webhook_url is not None and self.updates:
            update = self.updates[0]
            if not self._wanted(update, self.webhook_allowed):
                self.updates.pop(0)
                continue
            if self.on_webhook_post is not None:
                self.on_webhook_post(update)
            headers = {}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = str(self.webhook_secret)
            try:
                async with self._session.post(
                    self.webhook_url,
                    json=update,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    self.webhook_responses.append(response.status)
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                self.updates.pop(0)
            else:  # Telegram retries later; so do we, a little sooner
                await asyncio.sleep(0.05)


def _update_id(update: dict[str, Any]) -> int:
    value = update.get("update_id")
    return value if isinstance(value, int) else 0


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _markup_parses(text: str, parse_mode: str) -> bool:
    """Roughly Telegram's own check: would this text parse in that mode?"""
    mode = parse_mode.lower()
    if mode == "markdownv2":
        escaped = False
        for char in text:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char in _MARKDOWN_V2_RESERVED:
                return False  # strict: every reserved character must be escaped
        return True
    if mode == "html":
        stripped = _HTML_TAG.sub("", text)
        return "<" not in stripped and not re.search(r"&(?!(lt|gt|amp|quot);)", stripped)
    if mode == "markdown":
        return text.count("*") % 2 == 0 and text.count("_") % 2 == 0 and text.count("`") % 2 == 0
    return False
