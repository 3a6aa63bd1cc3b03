"""A fake Discord: REST API and gateway on 127.0.0.1, for discord.py to talk to.

It follows ../shared/recipes/platform-fakes.md: discord.py is pointed at it through
`discord.http.Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` (see `patch_targets`),
answers with `Content-Type: application/json` exactly, sends plain-text gateway frames
and sets READY's `resume_gateway_url` to itself. It runs on the event loop of the test
that starts it:

    async with FakeDiscord() as fake:
        for target, name, value in fake.patch_targets():
            monkeypatch.setattr(target, name, value)
        ... start the adapter, await fake.identified.wait() ...
        await fake.dispatch("MESSAGE_CREATE", fake.message(GENERAL, ANN, "hi <@BOT>"))
        assert fake.sent_messages()[-1]["content"] == ...

Platform rules it enforces, so that the adapter's behaviour is tested and not assumed:
2,000 characters per message (400, code 50035), empty messages (400, code 50006),
scripted 429s with `retry_after` and a `Via` header, 50007 for DMs to people whose DMs
are closed, empty `content` for guild messages that do not mention the bot when the
MESSAGE_CONTENT intent was not requested, close code 4014 when the intent is requested
but not enabled "in the portal" (`portal_message_content=False`), 401 for a wrong token.
Every REST call is recorded (`calls`), typing posts included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    ) -> None:
        self.token = token
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
        self._ids = itertools.count(700_000_000_000_000_000)
        self._dm_channels: dict[int, int] = {}  # channel id -> recipient user id
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

    def patch_targets(self) -> Iterator[tuple[Any, str, Any]]:
        """(object, attribute, value) triples that point discord.py at this fake."""
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
                   via: bool = True, times: int = 1) -> None:  # fmt: skip
        """The next `times` requests whose path starts with `path_prefix` get a 429."""
        headers = {"Retry-After": str(retry_after), "X-RateLimit-Scope": "user"}
        if via:
            headers["Via"] = "1.1 google"
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": False}  # fmt: skip
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
        """The callback and follow-up bodies for one interaction, in order: each a dict
        with `content` and `flags` (64 = ephemeral)."""
        answers = []
        for c in self.calls:
            if c.path == f"/interactions/{interaction['id']}/{interaction['token']}/callback":
                data = (c.json or {}).get("data") or {}
                if c.json.get("type") == 4:
                    answers.append(data)
            elif c.path == f"/webhooks/{APP_ID}/{interaction['token']}" and c.method == "POST":
                answers.append(c.json or {})
        return answers

    # -- payloads ------------------------------------------------------------------------

    def channel_payload(self, channel: int) -> dict[str, Any]:
        if channel in self._dm_channels:
            user = _USERS[self._dm_channels[channel]]
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
            "guild_id": str(GUILD), "position": 0, "permission_overwrites": [], "nsfw": False,
            "topic": None, "last_message_id": None, "parent_id": None, "rate_limit_per_user": 0,
        }  # fmt: skip

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
        data: dict[str, Any] = {
            "id": str(message_id or next(self._ids)), "channel_id": str(channel),
            "author": author.payload(), "content": content, "timestamp": _TIMESTAMP,
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
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for the slash command `/name`."""
        guild = channel not in self._dm_channels
        option_list = []
        resolved: dict[str, Any] = {}
        for key, value in (options or {}).items():
            option_list.append({"name": key, "type": 3, "value": value})
        if attachment is not None:
            option_list.append({"name": "upload", "type": 11, "value": attachment["id"]})
            resolved["attachments"] = {attachment["id"]: attachment}
        command = next((c for c in self.commands if c["name"] == name), None)
        data: dict[str, Any] = {
            "id": str(next(self._ids)), "application_id": str(APP_ID), "type": 2,
            "token": f"itoken{next(self._ids)}", "version": 1, "locale": "en-US",
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

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) to the shard that owns the event's guild."""
        guild = data.get("guild_id")
        shard = (int(guild) >> 22) % self._shard_count if guild else 0
        ws = self._sockets.get(shard) or next(iter(self._sockets.values()))
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

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
                self._seq += 1
                await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        return ws

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
        mine = (GUILD >> 22) % shard_count == shard_id
        ready = {
            "v": 10, "user": BOT.payload(), "session_id": f"session-{shard_id}",
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
        """Dispatch MESSAGE_CREATE (with the intent rule applied); returns `data`."""
        await self.dispatch("MESSAGE_CREATE", self.visible(data))
        return data

    # -- REST ----------------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        data = self.attachments.get(request.match_info["name"])
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
        if method == "POST" and path.startswith(f"/webhooks/{APP_ID}/"):
            return 200, self._message_payload(0, body or {}, webhook=True), {}
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
        data: dict[str, Any] = {
            "id": str(next(self._ids)), "channel_id": str(channel), "author": BOT.payload(),
            "content": body.get("content", ""), "timestamp": _TIMESTAMP,
            "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
            "type": 0, "flags": body.get("flags", 0),
        }  # fmt: skip
        if webhook:
            data["webhook_id"] = str(APP_ID)
        elif channel not in self._dm_channels:
            data["guild_id"] = str(GUILD)
        return data

    def _create_message(
        self, channel: int, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
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
        if self.record:
            self.created.append(payload)
        if self.on_created is not None:
            self.on_created(channel, payload)
        # Discord tells the client how much of the bucket is left; discord.py reads it.
        bucket = {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset-After": "5",
            "X-RateLimit-Bucket": "msg",
        }
        return 200, payload, bucket

    def _interaction_callback(
        self, path: str, body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        interaction_id = path.split("/")[2]
        flags = (body.get("data") or {}).get("flags", 0)
        return 200, {
            "interaction": {"id": interaction_id, "type": 2,
                            "response_message_id": str(next(self._ids)),
                            "response_message_loading": body.get("type") == 5,
                            "response_message_ephemeral": bool(flags & 64)},
        }, {}  # fmt: skip


_USERS = {u.id: u for u in (BOT, ANN, BOB, OTHER_BOT, CLOSED)}
