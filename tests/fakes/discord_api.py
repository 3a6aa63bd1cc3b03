"""A fake Discord: REST API and gateway on 127.0.0.1, for discord.py to talk to.

It follows ../shared/recipes/platform-fakes.md: the adapter reaches it through config
(`discord.api_base_url = fake.api_base_url`, `discord.gateway_url = fake.gateway_url`),
it answers with `Content-Type: application/json` exactly, sends plain-text gateway
frames and sets READY's `resume_gateway_url` to itself. It runs on the event loop of
the test that starts it (a `bot run` subprocess can reach it there too):

    async with FakeDiscord() as fake:
        ... start the adapter with the two URLs, await fake.identified.wait() ...
        await fake.send_message(fake.message(GENERAL, ANN, "hi <@BOT>"))
        assert fake.sent_messages()[-1]["content"] == ...

Platform rules it enforces, so that the adapter's behaviour is tested and not assumed:
2,000 characters per message (400, code 50035), empty messages (400, code 50006),
scripted 429s with `retry_after` and a `Via` header, 50007 for DMs to people whose DMs
are closed, empty `content` for guild messages that do not mention the bot when the
MESSAGE_CONTENT intent was not requested, close code 4014 when the intent is requested
but not enabled "in the portal" (`portal_message_content=False`), 401 for a wrong token.
Every REST call is recorded (`calls`), typing posts included.

Like Discord it keeps each channel's history (`GET /channels/{id}/messages` with
`before`/`after`/`limit`, newest first, without the gateway-only `guild_id`/`member`):
a message written while no gateway session is connected is only in the history, as
when the bot is down. Message ids are snowflakes of the time they were made. A gateway
session can be RESUMEd (missed events replayed) until `invalidate_sessions()`; then the
client gets op 9 and IDENTIFYs a fresh session (a new READY). `drop_connections()`
closes the sockets as a network failure would. Sends with a `nonce` and
`enforce_nonce` within `nonce_window_s` of the first return the first message and
create nothing (`nonce_hits`). With `limits` on (the default) it enforces Discord's
limits: 5 messages per 5 s per channel (headers tell the client, as Discord's do) and
a global `global_per_second` requests per second, answered 429 with `global: true`;
every 429 is counted in `rate_limited` (scope, path).

Interactions follow Discord's clock: the first callback must come within
`interaction_window_s` (3 s) of the interaction (404, code 10062, after), a second
one is refused (400, code 40060), and the token's webhook (follow-ups, `PATCH
.../messages/@original`) answers only after a callback and within `token_lifetime_s`
(15 min; 401, code 50027, after; 404, code 10015, before any callback). A test can
hold webhook calls (`webhooks_held`, `release_held`) to kill the bot while one is in
flight, and slow the attachment CDN (`attachment_delays`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "ALWAYS_ON",
    "ANN",
    "APP_ID",
    "BOB",
    "BOT_ID",
    "CLOSED",
    "GENERAL",
    "GUILD",
    "KEYWORDS",
    "MOD_ROLE",
    "OTHER",
    "OTHER_BOT",
    "THREAD",
    "Call",
    "FakeDiscord",
    "FakeUser",
]

TOKEN = "fake-discord-token"
BOT_ID = 900_000_000_000_000_001
APP_ID = 900_000_000_000_000_002
GUILD = 100_000_000_000_000_000
GENERAL = 100_000_000_000_000_001  # an ordinary channel: mentions and replies only
ALWAYS_ON = 100_000_000_000_000_002  # configured always-on
OTHER = 100_000_000_000_000_003  # bound to another persona in config
THREAD = 100_000_000_000_000_004  # a thread inside OTHER
KEYWORDS = 100_000_000_000_000_005  # where keyword triggers are tested
MOD_ROLE = 100_000_000_000_000_050
MESSAGE_CONTENT = 1 << 15
_TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"
DISCORD_EPOCH_MS = 1_420_070_400_000
#: Discord's per-channel message bucket: this many per window.
CHANNEL_LIMIT, CHANNEL_WINDOW_S = 5, 5.0


def snowflake_at(when: float, sequence: int = 0) -> int:
    """A snowflake id for the Unix time `when` (seconds)."""
    return ((int(when * 1000) - DISCORD_EPOCH_MS) << 22) | (sequence & 0x3FFFFF)


def snowflake_time(snowflake: int) -> float:
    """The Unix time (seconds) a snowflake id was made at."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


def _iso(snowflake: int) -> str:
    return datetime.fromtimestamp(snowflake_time(snowflake), UTC).isoformat()


class _Snowflakes:
    """Increasing snowflake ids of the current time."""

    def __init__(self) -> None:
        self._last = 0

    def __iter__(self) -> _Snowflakes:
        return self

    def __next__(self) -> int:
        self._last = max(snowflake_at(time.time()), self._last + 1)
        return self._last


@dataclass(frozen=True)
class FakeUser:
    """A Discord user the fake knows."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


BOT = FakeUser(BOT_ID, "tess-bot", bot=True)
ANN = FakeUser(200_000_000_000_000_001, "ann", global_name="Ann")
BOB = FakeUser(200_000_000_000_000_002, "bob", global_name="Bob")
OTHER_BOT = FakeUser(200_000_000_000_000_003, "otherbot", bot=True)
CLOSED = FakeUser(200_000_000_000_000_004, "closed", global_name="Closed DMs")


@dataclass(frozen=True)
class Call:
    """One REST request the fake received."""

    method: str
    path: str  # without the /api/v10 prefix
    json: Any
    status: int
    at: float  # time.monotonic()
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class _Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class FakeDiscord:
    """The fake server; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        portal_message_content: bool = True,
        closed_users: frozenset[int] = frozenset({CLOSED.id}),
        recommended_shards: int = 1,
        limits: bool = True,
        global_per_second: int = 50,
        nonce_window_s: float = 600.0,
        interaction_window_s: float = 3.0,
        token_lifetime_s: float = 900.0,
    ) -> None:
        self.token = token
        self.limits = limits
        self.global_per_second = global_per_second
        self.nonce_window_s = nonce_window_s
        self.interaction_window_s = interaction_window_s
        self.token_lifetime_s = token_lifetime_s
        #: Interaction token -> (id, when it was made, time.monotonic()).
        self._issued: dict[str, tuple[str, float]] = {}
        #: Tokens whose interaction got its callback.
        self._acknowledged: set[str] = set()
        #: While True, webhook calls wait (in `held`) until `release_held`.
        self.webhooks_held = False
        self._held: list[asyncio.Future[bool]] = []
        #: Attachment name -> seconds the CDN waits before it serves it (a slow
        #: command); taking the entry out ends the wait at once.
        self.attachment_delays: dict[str, float] = {}
        #: Channel id -> its messages, oldest first, as the gateway carried them.
        self.history: dict[int, list[dict[str, Any]]] = {}
        #: (scope, path) of every 429 the limits answered: scope "global" or "channel".
        self.rate_limited: list[tuple[str, str]] = []
        #: Sends answered with the original message because their nonce was seen.
        self.nonce_hits = 0
        #: Sessions made by IDENTIFY: session id -> shard id.
        self.sessions: dict[str, int] = {}
        #: How each gateway connection began: "identify" or "resume".
        self.session_starts: list[str] = []
        self._nonces: dict[str, tuple[float, dict[str, Any]]] = {}
        self._channel_sends: dict[int, deque[float]] = {}
        self._global_window = (0.0, 0)  # (second it counts, requests in it)
        self._missed: dict[str, list[str]] = {}  # session -> frames sent while away
        self._socket_session: dict[int, str] = {}  # shard -> its live session
        self._echoes: set[asyncio.Task[bool]] = set()
        self.portal_message_content = portal_message_content
        self.closed_users = set(closed_users)
        self.recommended_shards = recommended_shards
        self.calls: list[Call] = []
        self.identifies: list[dict[str, Any]] = []
        self.identified = asyncio.Event()
        self.commands: list[dict[str, Any]] = []
        self.attachments: dict[str, bytes] = {}
        #: Message objects the bot created, as the fake answered them (ids included).
        self.created: list[dict[str, Any]] = []
        #: Called with (channel id, message) for each message the bot created (benchmarks).
        self.on_created: Callable[[int, dict[str, Any]], None] | None = None
        #: False keeps `calls` and `created` empty (long benchmark runs).
        self.record = True
        self._script: dict[str, list[_Scripted]] = {}
        self._ids: Iterator[int] = _Snowflakes()
        self._dm_channels: dict[int, int] = {}  # channel id -> recipient user id
        #: Channels marked age-restricted (`nsfw`), as GUILD_CREATE reports them.
        self.nsfw_channels: set[int] = set()
        self._users: dict[int, FakeUser] = dict(_USERS)
        self._sockets: dict[int, web.WebSocketResponse] = {}  # shard id -> socket
        self._shard_count = 1
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/attachments/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for ws in list(self._sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        """For `discord.api_base_url`."""
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """For `discord.gateway_url`."""
        return f"ws://127.0.0.1:{self.port}/gateway/"

    def patch_targets(self) -> Iterator[tuple[Any, str, Any]]:
        """(object, attribute, value) triples that point discord.py at this fake
        process-wide. Deprecated: set the two config keys instead."""
        import discord.gateway
        import discord.http

        yield discord.http.Route, "BASE", f"{self.base}/api/v10"
        yield (
            discord.gateway.DiscordWebSocket,
            "DEFAULT_GATEWAY",
            yarl.URL(f"ws://127.0.0.1:{self.port}/gateway/"),
        )

    # -- scripting -----------------------------------------------------------------------

    def script_429(self, path_prefix: str = "/channels/", *, retry_after: float = 0.2,
                   via: bool = True, times: int = 1, is_global: bool = False) -> None:  # fmt: skip
        """The next `times` requests whose path starts with `path_prefix` get a 429
        (with `is_global`, one that says the bot's global limit was hit)."""
        headers = {"Retry-After": str(retry_after),
                   "X-RateLimit-Scope": "global" if is_global else "user"}  # fmt: skip
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        if via:
            headers["Via"] = "1.1 google"
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": is_global}  # fmt: skip
        self._script.setdefault(path_prefix, []).extend(
            _Scripted(429, body, headers) for _ in range(times)
        )

    def dm_channel(self, user: FakeUser) -> int:
        """The id of the DM channel between the bot and `user` (made on first use)."""
        for channel, recipient in self._dm_channels.items():
            if recipient == user.id:
                return channel
        channel = next(self._ids)
        self._dm_channels[channel] = user.id
        self._users[user.id] = user
        return channel

    def add_attachment(self, name: str, data: bytes) -> dict[str, Any]:
        """Serve `data` at a CDN-like URL; returns the attachment payload."""
        self.attachments[name] = data
        url = f"{self.base}/attachments/{name}"
        return {
            "id": str(next(self._ids)),
            "filename": name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": "application/x-yaml",
        }

    # -- what the bot did ----------------------------------------------------------------

    def sent_messages(self, channel: int | None = None) -> list[dict[str, Any]]:
        """Bodies of the messages the bot created successfully, oldest first."""
        return [
            c.json
            for c in self.calls
            if c.method == "POST"
            and c.status == 200
            and c.path.startswith("/channels/")
            and c.path.endswith("/messages")
            and (channel is None or c.path == f"/channels/{channel}/messages")
        ]

    def typing_posts(self, channel: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.path.endswith("/typing") and (channel is None or f"/{channel}/" in c.path)
        ]

    def interaction_answers(self, interaction: dict[str, Any]) -> list[dict[str, Any]]:
        """The answers Discord accepted for one interaction, in order: the callback's
        message, follow-ups and edits of `@original` (which replace "thinking…"), each
        a dict with `content` and `flags` (64 = ephemeral)."""
        answers = []
        webhook = f"/webhooks/{APP_ID}/{interaction['token']}"
        original = f"{webhook}/messages/@original"
        for c in self.calls:
            if c.status >= 300:
                continue
            if c.path == f"/interactions/{interaction['id']}/{interaction['token']}/callback":
                data = (c.json or {}).get("data") or {}
                if c.json.get("type") == 4:
                    answers.append(data)
            elif (c.method, c.path) in (("POST", webhook), ("PATCH", original)):
                answers.append(c.json or {})
        return answers

    def interaction_calls(self, interaction: dict[str, Any]) -> list[Call]:
        """Every call made with one interaction's token, refused ones too."""
        token = str(interaction.get("token"))
        return [c for c in self.calls if f"/{token}/" in f"{c.path}/"]

    @property
    def held(self) -> int:
        """Webhook calls waiting for `release_held`."""
        return sum(1 for f in self._held if not f.done())

    def release_held(self, *, answer: bool) -> None:
        """Let the held webhook calls go: answered as usual, or (`answer=False`, the
        bot was killed meanwhile) dropped unrecorded, as if they never arrived."""
        self.webhooks_held = False
        for future in self._held:
            if not future.done():
                future.set_result(answer)
        self._held.clear()

    # -- payloads ------------------------------------------------------------------------

    def channel_payload(self, channel: int) -> dict[str, Any]:
        if channel in self._dm_channels:
            user = self._users[self._dm_channels[channel]]
            return {"id": str(channel), "type": 1, "recipients": [user.payload()],
                    "last_message_id": None}  # fmt: skip
        if channel == THREAD:
            return {
                "id": str(THREAD), "type": 11, "name": "a thread", "guild_id": str(GUILD),
                "parent_id": str(OTHER), "owner_id": str(ANN.id), "message_count": 0,
                "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                    "archive_timestamp": _TIMESTAMP, "locked": False},
            }  # fmt: skip
        names = {GENERAL: "general", ALWAYS_ON: "always-on", OTHER: "other", KEYWORDS: "kw"}
        return {
            "id": str(channel), "type": 0, "name": names.get(channel, "channel"),
            "guild_id": str(GUILD), "position": 0, "permission_overwrites": [],
            "nsfw": channel in self.nsfw_channels,
            "topic": None, "last_message_id": self._last_message_id(channel), "parent_id": None,
            "rate_limit_per_user": 0,
        }  # fmt: skip

    def _last_message_id(self, channel: int) -> str | None:
        # What Discord puts in GUILD_CREATE: the newest message's id (a bot may skip
        # reading a channel's history when it has that one already).
        messages = self.history.get(channel)
        return max((m["id"] for m in messages), key=int) if messages else None

    def guild_payload(self) -> dict[str, Any]:
        role = {"position": 0, "color": 0, "hoist": False, "managed": False,
                "mentionable": False, "flags": 0}  # fmt: skip
        channels = [self.channel_payload(c) for c in (GENERAL, ALWAYS_ON, OTHER, KEYWORDS)]
        return {
            "id": str(GUILD), "name": "Test Guild", "icon": None, "owner_id": str(ANN.id),
            "roles": [
                {**role, "id": str(GUILD), "name": "@everyone", "permissions": "1024"},
                {**role, "id": str(MOD_ROLE), "name": "Persona Mods", "permissions": "0"},
            ],
            "channels": channels, "threads": [self.channel_payload(THREAD)], "members": [],
            "member_count": 4, "emojis": [], "stickers": [], "features": [], "large": False,
            "unavailable": False, "voice_states": [], "presences": [], "joined_at": _TIMESTAMP,
            "premium_tier": 0, "preferred_locale": "en-US", "system_channel_flags": 0,
            "nsfw_level": 0, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "afk_timeout": 300,
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }  # fmt: skip

    def member_payload(self, user: FakeUser, roles: tuple[int, ...] = (),
                       permissions: int | None = None) -> dict[str, Any]:  # fmt: skip
        member: dict[str, Any] = {
            "user": user.payload(), "roles": [str(r) for r in roles], "nick": None,
            "joined_at": _TIMESTAMP, "deaf": False, "mute": False, "flags": 0,
        }  # fmt: skip
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def message(
        self,
        channel: int,
        author: FakeUser,
        content: str,
        *,
        mentions: tuple[FakeUser, ...] = (),
        reply_to: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        stickers: list[dict[str, Any]] | None = None,
        mention_everyone: bool = False,
        type: int = 0,
        message_id: int | None = None,
        edited: bool = False,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload as Discord would send it to this bot."""
        guild = channel not in self._dm_channels
        snowflake = message_id or next(self._ids)
        data: dict[str, Any] = {
            "id": str(snowflake), "channel_id": str(channel),
            "author": author.payload(), "content": content, "timestamp": _iso(snowflake),
            "edited_timestamp": _TIMESTAMP if edited else None, "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": [u.payload() for u in mentions], "mention_roles": [],
            "attachments": attachments or [], "embeds": [], "pinned": False,
            "type": 19 if reply_to is not None and type == 0 else type, "flags": 0,
            "sticker_items": stickers or [],
        }  # fmt: skip
        if guild:
            data["guild_id"] = str(GUILD)
            data["member"] = {k: v for k, v in self.member_payload(author).items() if k != "user"}
        if reply_to is not None:
            data["message_reference"] = {
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                "type": 0,
            }
            data["referenced_message"] = reply_to
        return data

    def interaction(
        self,
        name: str,
        user: FakeUser,
        channel: int,
        options: dict[str, Any] | None = None,
        *,
        permissions: int = 1024,
        roles: tuple[int, ...] = (),
        attachment: dict[str, Any] | None = None,
        age_s: float = 0.0,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for the slash command `/name`, made `age_s`
        seconds ago (its id's time; Discord's 3 s and 15 min count from then)."""
        guild = channel not in self._dm_channels
        option_list = []
        resolved: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if isinstance(value, FakeUser):  # a USER option, resolved as Discord does
                option_list.append({"name": key, "type": 6, "value": str(value.id)})
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
            elif isinstance(value, bool):
                option_list.append({"name": key, "type": 5, "value": value})
            else:
                option_list.append({"name": key, "type": 3, "value": value})
        if attachment is not None:
            option_list.append({"name": "upload", "type": 11, "value": attachment["id"]})
            resolved["attachments"] = {attachment["id"]: attachment}
        command = next((c for c in self.commands if c["name"] == name), None)
        made = time.time() - age_s
        interaction_id = str(
            snowflake_at(made, next(self._ids) % 4096) if age_s else next(self._ids)
        )
        token = f"itoken{next(self._ids)}"
        self._issued[token] = (interaction_id, time.monotonic() - age_s)
        data: dict[str, Any] = {
            "id": interaction_id, "application_id": str(APP_ID), "type": 2,
            "token": token, "version": 1, "locale": "en-US",
            "attachment_size_limit": 10_485_760, "app_permissions": "2048",
            "channel_id": str(channel), "channel": self.channel_payload(channel),
            "entitlements": [], "authorizing_integration_owners": {}, "context": 0,
            "data": {"id": command["id"] if command else "1", "name": name, "type": 1,
                     "options": option_list, "resolved": resolved},
        }  # fmt: skip
        if guild:
            data["guild_id"] = str(GUILD)
            data["guild_locale"] = "en-US"
            data["member"] = self.member_payload(user, roles, permissions)
        else:
            data["user"] = user.payload()
            data["context"] = 1
        return data

    # -- the gateway ---------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> bool:
        """Send a DISPATCH (op 0) to the shard that owns the event's guild; returns
        whether a live session got it (else it is kept for a RESUME of the session)."""
        guild = data.get("guild_id")
        try:
            shard = (int(guild) >> 22) % self._shard_count if guild else 0
        except (TypeError, ValueError):  # a hostile payload: shard 0 takes it
            shard = 0
        ws = self._sockets.get(shard)
        if ws is None and shard == 0 and self._sockets:
            ws = next(iter(self._sockets.values()))
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        if ws is None or ws.closed:
            session = self._socket_session.get(shard)
            if session in self.sessions:
                self._missed.setdefault(session, []).append(frame)
            return False
        try:
            await ws.send_str(frame)
        except (ConnectionError, RuntimeError):  # the socket went away meanwhile
            session = self._socket_session.get(shard)
            if session in self.sessions:
                self._missed.setdefault(session, []).append(frame)
            return False
        return True

    def connected(self) -> bool:
        """Whether any gateway socket is open."""
        return any(not ws.closed for ws in self._sockets.values())

    def invalidate_sessions(self) -> None:
        """Forget every session: a RESUME gets op 9 and the client IDENTIFYs afresh."""
        self.sessions.clear()
        self._missed.clear()

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket with `code` (4000: resumable, as a network blip)."""
        for ws in list(self._sockets.values()):
            await ws.close(code=code, message=b"dropped by the fake")

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                await self._identify(ws, frame["d"])
            elif op == 6:
                await self._resume(ws, frame["d"])
        for shard, live in list(self._sockets.items()):
            if live is ws:
                del self._sockets[shard]
        return ws

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        session = data.get("session_id")
        if data.get("token") != self.token or session not in self.sessions:
            self.session_starts.append("resume-refused")
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        self.session_starts.append("resume")
        shard = self.sessions[session]
        self._sockets[shard] = ws
        self._socket_session[shard] = session
        for frame in self._missed.pop(session, []):
            await ws.send_str(frame)
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & MESSAGE_CONTENT and not self.portal_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard_id, shard_count = data.get("shard") or [0, 1]
        self._shard_count = shard_count
        self._sockets[shard_id] = ws
        session = f"session-{shard_id}-{next(self._ids)}"
        self.sessions[session] = shard_id
        self._socket_session[shard_id] = session
        self.session_starts.append("identify")
        mine = (GUILD >> 22) % shard_count == shard_id
        ready = {
            "v": 10, "user": BOT.payload(), "session_id": session,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway/",
            "guilds": [{"id": str(GUILD), "unavailable": True}] if mine else [],
            "shard": [shard_id, shard_count], "private_channels": [], "relationships": [],
            "application": {"id": str(APP_ID), "flags": 0},
        }  # fmt: skip
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        if mine:
            self._seq += 1
            await ws.send_str(
                json.dumps(
                    {"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self.guild_payload()}
                )
            )
        if len(self._sockets) >= shard_count:
            self.identified.set()

    def requested_message_content(self) -> bool:
        return bool(
            self.identifies and int(self.identifies[-1].get("intents", 0)) & MESSAGE_CONTENT
        )

    def visible(self, data: dict[str, Any]) -> dict[str, Any]:
        """`data` as this bot may see it: without the MESSAGE_CONTENT intent, guild
        messages that do not mention it arrive with empty content."""
        if self.requested_message_content() or "guild_id" not in data:
            return data
        if any(m["id"] == str(BOT_ID) for m in data.get("mentions", [])):
            return data
        return {**data, "content": "", "embeds": [], "attachments": []}

    async def send_message(self, data: dict[str, Any]) -> dict[str, Any]:
        """A person writes `data`: it joins the channel's history and goes out as
        MESSAGE_CREATE (with the intent rule applied) if the bot is connected;
        returns `data`."""
        self.history.setdefault(int(data["channel_id"]), []).append(data)
        await self.dispatch("MESSAGE_CREATE", self.visible(data))
        return data

    def history_payload(self, data: dict[str, Any]) -> dict[str, Any]:
        """A stored message as REST returns it: no `guild_id` or `member` (those are
        gateway-only), the intent rule applied."""
        return {k: v for k, v in self.visible(data).items() if k not in ("guild_id", "member")}

    # -- REST ----------------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        if self.record:
            self.calls.append(Call("GET", request.path, None, 200, time.monotonic()))
        name = request.match_info["name"]
        deadline = time.monotonic() + self.attachment_delays.get(name, 0.0)
        while name in self.attachment_delays and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        data = self.attachments.get(name)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                body = {"multipart": raw.decode("utf-8", "replace")}
        if self.webhooks_held and path.startswith("/webhooks/"):
            held = asyncio.get_running_loop().create_future()
            self._held.append(held)
            if not await held:
                return web.Response(status=503)
        status, payload, headers = self._answer(request.method, path, body, request)
        if self.record:
            self.calls.append(
                Call(request.method, path, body, status, time.monotonic(), dict(request.query))
            )
        if payload is None:
            return web.Response(status=status, headers=headers)
        # Exactly application/json: with a charset discord.py reads the body as text.
        return web.Response(
            status=status,
            body=json.dumps(payload).encode(),
            headers={**headers, "Content-Type": "application/json"},
        )

    def _answer(
        self, method: str, path: str, body: Any, request: web.Request
    ) -> tuple[int, Any, dict[str, str]]:
        is_interaction = path.startswith(("/interactions/", "/webhooks/"))
        auth = request.headers.get("Authorization")
        if not is_interaction and auth != f"Bot {self.token}":
            return 401, {"message": "401: Unauthorized", "code": 0}, {}
        for prefix, queue in self._script.items():
            if path.startswith(prefix) and queue:
                scripted = queue.pop(0)
                return scripted.status, scripted.body, scripted.headers
        if self.limits and not is_interaction:
            limited = self._over_global_limit(path)
            if limited is not None:
                return limited
        if method == "GET" and path.startswith("/channels/") and path.endswith("/messages"):
            return self._history(int(path.split("/")[2]), request.query)
        if method == "GET" and path == "/users/@me":
            return 200, BOT.payload(), {}
        if method == "GET" and path == "/oauth2/applications/@me":
            return 200, self._application(), {}
        if method == "GET" and path == "/gateway/bot":
            return 200, {
                "url": f"ws://127.0.0.1:{self.port}/gateway/",
                "shards": self.recommended_shards,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                        "max_concurrency": 1},
            }, {}  # fmt: skip
        if method == "PUT" and path == f"/applications/{APP_ID}/commands":
            self.commands = [
                {"id": str(next(self._ids)), "application_id": str(APP_ID), "version": "1",
                 "type": 1, "default_member_permissions": None, "dm_permission": True,
                 "nsfw": False, "options": [], **command}
                for command in body or []
            ]  # fmt: skip
            return 200, self.commands, {}
        if method == "POST" and path.endswith("/typing"):
            return 204, None, {}
        if method == "GET" and path.startswith("/channels/") and path.count("/") == 2:
            return 200, self.channel_payload(int(path.split("/")[2])), {}
        if method == "POST" and path.startswith("/channels/") and path.endswith("/messages"):
            return self._create_message(int(path.split("/")[2]), body or {})
        if method == "POST" and path.startswith("/interactions/"):
            return self._interaction_callback(path, body or {})
        if path.startswith(f"/webhooks/{APP_ID}/"):
            return self._webhook(method, path, body or {})
        return 404, {"message": "404: Not Found", "code": 0}, {}

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(APP_ID), "name": "Tess", "icon": None, "description": "", "summary": "",
            "bot_public": True, "bot_require_code_grant": False, "verify_key": "00",
            "owner": ANN.payload(), "flags": 1 << 19, "team": None, "rpc_origins": [],
            "terms_of_service_url": None, "privacy_policy_url": None,
        }  # fmt: skip

    def _message_payload(
        self, channel: int, body: dict[str, Any], *, webhook: bool = False
    ) -> dict[str, Any]:
        snowflake = next(self._ids)
        data: dict[str, Any] = {
            "id": str(snowflake), "channel_id": str(channel), "author": BOT.payload(),
            "content": body.get("content", ""), "timestamp": _iso(snowflake),
            "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
            "type": 0, "flags": body.get("flags", 0),
        }  # fmt: skip
        if webhook:
            data["webhook_id"] = str(APP_ID)
        elif channel not in self._dm_channels:
            data["guild_id"] = str(GUILD)
        return data

    def _over_global_limit(self, path: str) -> tuple[int, Any, dict[str, str]] | None:
        now = time.monotonic()
        second, count = self._global_window
        if now - second >= 1.0:
            second, count = now, 0
        if count >= self.global_per_second:
            retry = round(max(second + 1.0 - now, 0.001), 3)
            self.rate_limited.append(("global", path))
            return _too_many(retry, scope="global")
        self._global_window = (second, count + 1)
        return None

    def _over_channel_limit(self, channel: int, path: str) -> tuple[int, Any, dict[str, str]]:
        """(0, None, headers) while the channel's bucket has room, else a 429."""
        now = time.monotonic()
        sends = self._channel_sends.setdefault(channel, deque())
        if sends and now - sends[0] >= CHANNEL_WINDOW_S:
            sends.clear()  # a fixed window, as Discord's buckets: it resets whole
        reset_after = CHANNEL_WINDOW_S - (now - sends[0]) if sends else CHANNEL_WINDOW_S
        if len(sends) >= CHANNEL_LIMIT:
            self.rate_limited.append(("channel", path))
            return _too_many(round(max(reset_after, 0.001), 3), scope="user")
        sends.append(now)
        return 0, None, {
            "X-RateLimit-Limit": str(CHANNEL_LIMIT),
            "X-RateLimit-Remaining": str(CHANNEL_LIMIT - len(sends)),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "msg",
        }  # fmt: skip

    def _history(self, channel: int, query: Any) -> tuple[int, Any, dict[str, str]]:
        known = channel in self._dm_channels or channel in _GUILD_CHANNELS
        if not known and channel not in self.history:
            return 404, {"message": "Unknown Channel", "code": 10003}, {}
        try:
            limit = max(1, min(100, int(query.get("limit", 50))))
            before = int(query["before"]) if "before" in query else None
            after = int(query["after"]) if "after" in query else None
        except ValueError:
            return 400, {"message": "Invalid Form Body", "code": 50035}, {}
        found = self.history.get(channel, [])
        if before is not None:
            found = [m for m in found if int(m["id"]) < before][-limit:]
        elif after is not None:
            found = [m for m in found if int(m["id"]) > after][:limit]
        else:
            found = found[-limit:]
        # Discord answers newest first, whichever way it paged.
        return 200, [self.history_payload(m) for m in reversed(found)], {}

    def _create_message(
        self, channel: int, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        if self.limits:
            status, limited, bucket = self._over_channel_limit(
                channel, f"/channels/{channel}/messages"
            )
            if status:
                return status, limited, bucket
        else:
            bucket = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4",
                      "X-RateLimit-Reset-After": "5", "X-RateLimit-Bucket": "msg"}  # fmt: skip
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            seen = self._nonces.get(str(nonce))
            if seen is not None and time.monotonic() - seen[0] < self.nonce_window_s:
                self.nonce_hits += 1
                return 200, seen[1], bucket  # the original message, nothing new
        content = body.get("content") or ""
        if len(content) > 2000:
            return 400, {
                "code": 50035, "message": "Invalid Form Body",
                "errors": {"content": {"_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]}},
            }, {}  # fmt: skip
        if not content.strip() and not body.get("embeds") and not body.get("sticker_ids"):
            return 400, {"code": 50006, "message": "Cannot send an empty message"}, {}
        recipient = self._dm_channels.get(channel)
        if recipient is not None and recipient in self.closed_users:
            return 403, {"code": 50007, "message": "Cannot send messages to this user"}, {}
        payload = self._message_payload(channel, body)
        if nonce is not None:
            payload["nonce"] = nonce
            if body.get("enforce_nonce"):
                self._nonces[str(nonce)] = (time.monotonic(), payload)
        if self.record:
            self.created.append(payload)
        if self.on_created is not None:
            self.on_created(channel, payload)
        self._echo(channel, payload)
        # Discord tells the client how much of the bucket is left; discord.py reads it.
        return 200, payload, bucket

    def _echo(self, channel: int, payload: dict[str, Any]) -> None:
        """Like Discord: the bot's own message joins the history and comes back to it
        as MESSAGE_CREATE."""
        self.history.setdefault(channel, []).append(payload)
        if not self.connected():
            return
        echo = dict(payload)
        if "guild_id" in echo:
            echo["member"] = {k: v for k, v in self.member_payload(BOT).items() if k != "user"}
        task = asyncio.get_running_loop().create_task(self.dispatch("MESSAGE_CREATE", echo))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    def _interaction_callback(
        self, path: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        interaction_id, token = path.split("/")[2:4]
        issued = self._issued.get(token)
        if issued is None or issued[0] != interaction_id:
            return 404, {"message": "Unknown interaction", "code": 10062}, {}
        if time.monotonic() - issued[1] > self.interaction_window_s:
            return 404, {"message": "Unknown interaction", "code": 10062}, {}
        if token in self._acknowledged:
            return 400, {
                "message": "Interaction has already been acknowledged.", "code": 40060,
            }, {}  # fmt: skip
        self._acknowledged.add(token)
        flags = (body.get("data") or {}).get("flags", 0)
        return 200, {
            "interaction": {"id": interaction_id, "type": 2,
                            "response_message_id": str(next(self._ids)),
                            "response_message_loading": body.get("type") == 5,
                            "response_message_ephemeral": bool(flags & 64)},
        }, {}  # fmt: skip

    def _webhook(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """An interaction token's webhook: follow-ups (POST) and `@original` edits."""
        parts = path.split("/")  # "", "webhooks", app, token, ...
        token = parts[3] if len(parts) > 3 else ""
        issued = self._issued.get(token)
        if issued is None or token not in self._acknowledged:
            return 404, {"message": "Unknown Webhook", "code": 10015}, {}
        if time.monotonic() - issued[1] > self.token_lifetime_s:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}, {}
        if method == "POST" and len(parts) == 4:
            return 200, self._message_payload(0, body, webhook=True), {}
        if method == "PATCH" and parts[4:] == ["messages", "@original"]:
            return 200, self._message_payload(0, body, webhook=True), {}
        return 404, {"message": "404: Not Found", "code": 0}, {}


_USERS = {u.id: u for u in (BOT, ANN, BOB, OTHER_BOT, CLOSED)}
_GUILD_CHANNELS = frozenset({GENERAL, ALWAYS_ON, OTHER, THREAD, KEYWORDS})


def _too_many(retry_after: float, *, scope: str) -> tuple[int, Any, dict[str, str]]:
    """A 429 as Discord sends it (the Via header makes discord.py trust and retry it)."""
    headers = {"Retry-After": f"{retry_after:g}", "X-RateLimit-Scope": scope,
               "Via": "1.1 google"}  # fmt: skip
    if scope == "global":
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after,
            "global": scope == "global"}  # fmt: skip
    return 429, body, headers
