"""A scriptable fake of an OpenAI-compatible chat server (vLLM's dialect), for error cases.

It is a real HTTP server on 127.0.0.1 (a random free port), so the real `openai`
client talks to it. It runs its own event loop in a thread: any test, sync or async,
whatever its event loop scope, can use it while it serves.

    with FakeOpenAIServer() as server:          # or: async with FakeOpenAIServer() as server
        server.script(Reply.http_error(500), Reply.http_error(500), Reply(text="hi"))
        backend = OpenAIBackend(server.base_url, "tiny")
        ...
        assert server.requests[-1]["model"] == "tiny"

Each request to `/v1/chat/completions` takes the next scripted `Reply`; when the script
is used up, `server.default` answers. `server.requests` holds every request body
received (`request_headers` and `request_times` their headers and arrival times).

Runtime LoRA routes as vLLM has them (`POST /v1/load_lora_adapter` and
`/v1/unload_lora_adapter`): `server.adapters` maps each loaded adapter's name to its
path, `/v1/models` lists them (with `root` and `parent`, as vLLM does), and
`server.restart()` forgets them, as a restarted vLLM does. `server.script_admin(...)`
queues answers for those routes (an HTTP error instead of loading, or a delay);
`base_root` is the base model's `root`; `models_body` replaces `/v1/models`' answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["FakeOpenAIServer", "Moderation", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `status` other than 200 answers with an OpenAI-style error body and `headers`.
    `chunks` are the streamed deltas (default: `text` split after each space).
    `delay_s` waits before answering (to outlast a client timeout).
    `drop_after` (streaming) sends that many content chunks and then drops the
    connection without finishing the HTTP response; with `clean_eof` it instead ends
    the response properly, but without a finish reason or `[DONE]`.
    """

    text: str = "Hello there!"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: tuple[str, ...] | None = None
    finish_reason: str = "stop"
    delay_s: float = 0.0
    drop_after: int | None = None
    clean_eof: bool = False
    message: str = "scripted error"

    @classmethod
    def http_error(
        cls, status: int, *, retry_after: float | None = None, message: str = "scripted error"
    ) -> Reply:
        """An HTTP error, with a `Retry-After` header (seconds) when given."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return cls(status=status, headers=headers, message=message)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        """Answer nothing for `seconds` (ended early when the server stops)."""
        return cls(delay_s=seconds)

    @classmethod
    def broken_stream(
        cls, chunks: tuple[str, ...], *, after: int, clean_eof: bool = False
    ) -> Reply:
        """A stream that sends `after` of `chunks` and then breaks off."""
        return cls(text="".join(chunks), chunks=chunks, drop_after=after, clean_eof=clean_eof)

    def deltas(self) -> tuple[str, ...]:
        if self.chunks is not None:
            return self.chunks
        words = self.text.split(" ")
        return (*(w + " " for w in words[:-1]), words[-1])


@dataclass(frozen=True)
class Moderation:
    """One scripted /v1/moderations answer: `flagged` with `categories`, or `raw`
    bytes as the body (garbage), after `delay_s` (to outlast a timeout)."""

    flagged: bool = False
    categories: tuple[str, ...] = ()
    status: int = 200
    raw: bytes | None = None
    delay_s: float = 0.0


class FakeOpenAIServer:
    """The fake server; see the module docstring."""

    def __init__(
        self, *, models: tuple[str, ...] = ("tiny",), base_root: str | None = None
    ) -> None:
        self.models = models
        self.base_root = base_root
        self.adapters: dict[str, str] = {}
        #: When set, /v1/models answers these bytes as they are (garbage, a flood).
        self.models_body: bytes | None = None
        self.admin_requests: list[tuple[str, dict[str, Any]]] = []
        self._admin_script: deque[Reply] = deque()
        self.default = Reply()
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.request_times: list[float] = []
        self._script: deque[Reply] = deque()
        #: Bodies posted to /v1/moderations, and its scripted answers.
        self.moderation_requests: list[dict[str, Any]] = []
        self._moderation_script: deque[Moderation] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in `/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def script_admin(self, *replies: Reply) -> None:
        """Queue answers for the next load/unload requests (a 200 reply does the work)."""
        with self._lock:
            self._admin_script.extend(replies)

    def restart(self) -> None:
        """Forget the loaded adapters, as a restarted vLLM does."""
        with self._lock:
            self.adapters.clear()

    def script_moderation(self, *answers: Moderation) -> None:
        """Queue answers for the next /v1/moderations requests (then: not flagged)."""
        with self._lock:
            self._moderation_script.extend(answers)

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self.request_times.append(time.monotonic())
            return self._script.popleft() if self._script else self.default

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start in 10 s")
        if self._error is not None:
            raise RuntimeError("fake OpenAI server failed to start") from self._error

    def stop(self) -> None:
        """Stop serving, cutting short any reply still waiting."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora)
        app.router.add_post("/v1/unload_lora_adapter", self._unload_lora)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stopping.wait()
        await runner.cleanup()

    # -- handlers --------------------------------------------------------------------

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.moderation_requests.append(body)
            answer = self._moderation_script.popleft() if self._moderation_script else None
        answer = answer or Moderation()
        if answer.delay_s:
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), answer.delay_s)
        if answer.raw is not None:
            return web.Response(body=answer.raw, status=answer.status)
        result = {
            "flagged": answer.flagged,
            "categories": {c: True for c in answer.categories},
            "category_scores": {c: 0.99 for c in answer.categories},
        }
        return web.json_response(
            {"id": "modr-fake", "model": str(body.get("model", "")), "results": [result]},
            status=answer.status,
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _models(self, request: web.Request) -> web.Response:
        if self.models_body is not None:
            return web.Response(body=self.models_body, content_type="application/json")
        data: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake",
             "root": self.base_root or m, "parent": None}
            for m in self.models
        ]  # fmt: skip
        with self._lock:
            data += [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake",
                 "root": path, "parent": self.models[0] if self.models else None}
                for name, path in self.adapters.items()
            ]  # fmt: skip
        return web.json_response({"object": "list", "data": data})

    async def _admin_reply(self, route: str, body: dict[str, Any]) -> Reply | None:
        with self._lock:
            self.admin_requests.append((route, body))
            scripted = self._admin_script.popleft() if self._admin_script else None
        if scripted is not None and scripted.delay_s:
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), scripted.delay_s)
        return scripted

    @staticmethod
    def _admin_error(status: int, message: str) -> web.Response:
        error = {"object": "error", "message": message, "type": "BadRequestError", "code": status}
        return web.json_response(error, status=status)

    async def _load_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        scripted = await self._admin_reply("load", body)
        if scripted is not None and scripted.status != 200:
            return self._admin_error(scripted.status, scripted.message)
        name, path = str(body.get("lora_name", "")), str(body.get("lora_path", ""))
        with self._lock:
            if name in self.adapters:
                message = f"The lora adapter '{name}' has already been loaded."
                return self._admin_error(400, message)
            self.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        scripted = await self._admin_reply("unload", body)
        if scripted is not None and scripted.status != 200:
            return self._admin_error(scripted.status, scripted.message)
        name = str(body.get("lora_name", ""))
        with self._lock:
            if self.adapters.pop(name, None) is None:
                return self._admin_error(404, f"The lora adapter '{name}' cannot be found.")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = self._next_reply(body, {k.lower(): v for k, v in request.headers.items()})
        if reply.delay_s:
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), reply.delay_s)
        if reply.status != 200:
            error = {"error": {"message": reply.message, "type": "fake", "code": reply.status}}
            return web.json_response(error, status=reply.status, headers=reply.headers)
        model = str(body.get("model", ""))
        prompt_tokens = sum(
            len(str(m.get("content", "")).split()) for m in body.get("messages", [])
        )
        completion_tokens = len(reply.deltas())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if body.get("stream"):
            return await self._stream(request, body, reply, model, usage)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.text},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": usage,
            },
            headers=reply.headers,
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        model: str,
        usage: dict[str, int],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        await response.prepare(request)

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        for i, delta in enumerate(reply.deltas()):
            if reply.drop_after is not None and i >= reply.drop_after:
                if reply.clean_eof:
                    await response.write_eof()
                    return response
                # Like a crashed server: the socket closes in the middle of the response.
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(chunk({"content": delta}))
            await asyncio.sleep(0)
        await response.write(chunk({}, reply.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
