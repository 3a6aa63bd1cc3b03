"""The model-based checks: an OpenAI-compatible moderation endpoint and a guard model
such as Llama Guard, each bounded in time and size, failing open or closed as
configured (re-exported by bot/safety/moderation.py).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Literal

import httpx
import structlog

from bot.aio import wait_for
from bot.llm.base import ChatMessage, ChatRequest, LLMBackend, Sampling
from bot.safety.normalize import window
from bot.safety.stage import OutputContext

__all__ = ["FailMode", "GuardModelCheck", "ModerationEndpoint"]

log = structlog.get_logger("bot.safety")

FailMode = Literal["open", "closed"]


class _Verdicts:
    """The last verdicts by exact text: the stream guard screens growing prefixes
    and the final check repeats the last one."""

    def __init__(self, size: int = 128) -> None:
        self._items: OrderedDict[str, str | None] = OrderedDict()
        self._size = size

    def get(self, text: str) -> tuple[bool, str | None]:
        if text in self._items:
            self._items.move_to_end(text)
            return True, self._items[text]
        return False, None

    def put(self, text: str, verdict: str | None) -> None:
        self._items[text] = verdict
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class ModerationEndpoint:
    """An OpenAI-compatible moderation endpoint (`POST {base_url}/moderations`).

    Blocks when the result is `flagged` (or, with `categories`, when one of those is
    flagged). An answer that does not come within `timeout_s`, an HTTP error, or a
    body that is not a moderation result is a failure: with `fail="closed"` the reply
    is blocked ("moderation unavailable"), with `fail="open"` it passes and the
    failure is logged and counted in `failures`. At most `max_body` bytes are read.
    """

    name = "moderation"
    #: A network call per screened text (see the stream guard).
    expensive = True

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        fail: FailMode = "open",
        categories: Iterable[str] = (),
        max_chars: int = 8000,
        max_body: int = 256 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/moderations"
        self.model = model
        self.timeout_s = timeout_s
        self.fail = fail
        self.categories = frozenset(categories)
        self.max_chars = max_chars
        self.max_body = max_body
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owned = client is None
        self.client = client or httpx.AsyncClient(headers=headers)
        self.failures = 0
        self._verdicts = _Verdicts()

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        seen, verdict = self._verdicts.get(text)
        if seen:
            return verdict
        try:
            verdict = self.read(await self._ask(text))
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            self.failures += 1
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("safety.moderation_failed", error=why, fail=self.fail)
            # A failure is not remembered: the next text asks again.
            return f"moderation unavailable ({why})" if self.fail == "closed" else None
        self._verdicts.put(text, verdict)
        return verdict

    async def _ask(self, text: str) -> bytes:
        body: dict[str, object] = {"input": window(text, self.max_chars)}
        if self.model:
            body["model"] = self.model
        timeout = httpx.Timeout(self.timeout_s)
        async with self.client.stream("POST", self.url, json=body, timeout=timeout) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > self.max_body:
                    raise ValueError(f"answer longer than {self.max_body} bytes")
            return bytes(data)

    def read(self, raw: bytes) -> str | None:
        """The block reason in a moderation answer, or None; `ValueError` when it is
        not one."""
        try:
            data = json.loads(raw)
            result = data["results"][0]
            flagged = result["flagged"]
            categories = result.get("categories") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"not a moderation result: {raw[:80]!r}") from exc
        if not isinstance(flagged, bool) or not isinstance(categories, dict):
            raise ValueError(f"not a moderation result: {raw[:80]!r}")
        hit = sorted(str(k) for k, v in categories.items() if v is True)
        if self.categories:
            hit = [c for c in hit if c in self.categories]
            return f"moderation: {', '.join(hit)[:200]}" if hit else None
        if not flagged:
            return None
        return f"moderation: {', '.join(hit)[:200] or 'flagged'}"


_GUARD = re.compile(r"\s*(safe|unsafe)\b", re.IGNORECASE)
_GUARD_CATEGORY = re.compile(r"\bS(\d{1,2})\b")


class GuardModelCheck:
    """A safety model such as Llama Guard 3 on vLLM, asked about the exchange (the
    person's message and the reply): its chat template builds the moderation prompt
    and it answers "safe" or "unsafe" with categories ("S1,S10"). With `categories`,
    only those numbers block. Failures as for `ModerationEndpoint`."""

    name = "moderation"
    expensive = True

    def __init__(
        self,
        backend: LLMBackend,
        *,
        model: str | None = None,
        timeout_s: float = 5.0,
        fail: FailMode = "open",
        categories: Iterable[int] = (),
        max_chars: int = 4000,
        owned: bool = False,
    ) -> None:
        self.backend = backend
        self.owned = owned
        self.model = model
        self.timeout_s = timeout_s
        self.fail = fail
        self.categories = frozenset(categories)
        self.max_chars = max_chars
        self.failures = 0
        self._verdicts = _Verdicts()

    async def aclose(self) -> None:
        """Close the backend when this check made it (`owned`)."""
        if self.owned:
            await self.backend.aclose()

    async def check(self, ctx: OutputContext, text: str) -> str | None:

        key = f"{ctx.incoming_text or ''}\0{text}"
        seen, verdict = self._verdicts.get(key)
        if seen:
            return verdict
        messages = []
        if ctx.incoming_text:
            messages.append(ChatMessage("user", window(ctx.incoming_text, self.max_chars)))
        else:
            messages.append(ChatMessage("user", "(the assistant writes first)"))
        messages.append(ChatMessage("assistant", window(text, self.max_chars)))
        request = ChatRequest(
            messages=tuple(messages),
            sampling=Sampling(temperature=0.0, max_tokens=20),
            model=self.model,
        )
        try:
            completion = await wait_for(self.backend.complete(request), self.timeout_s)
            verdict = self.read(completion.text)
        except Exception as exc:  # a server error, a timeout or an unreadable answer
            self.failures += 1
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("safety.moderation_failed", error=why, fail=self.fail)
            return f"moderation unavailable ({why})" if self.fail == "closed" else None
        self._verdicts.put(key, verdict)
        return verdict

    def read(self, raw: str) -> str | None:
        """The block reason in a guard model's answer, or None; `ValueError` when it
        is not a verdict."""
        found = _GUARD.match(raw[:200])
        if found is None:
            raise ValueError(f"not a guard verdict: {raw[:80]!r}")
        if found.group(1).lower() == "safe":
            return None
        numbers = sorted({int(n) for n in _GUARD_CATEGORY.findall(raw[:200])})
        if self.categories and not set(numbers) & self.categories:
            return None
        return "moderation: unsafe " + ",".join(f"S{n}" for n in numbers)
