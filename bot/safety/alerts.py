"""Moderators hear of a crisis: a message to a configured channel or DM, through the
running adapter of that platform, after the crisis row (the queue entry) is
committed.

Delivery runs in the background so the crisis reply is not held up; its outcome is
written on the row (`alert_status`: sent, failed with the reason, queued when no
channel is configured). An alert raised before its platform's adapter is attached
stays `pending` and goes out when it is (`attach`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from bot.messages import Outgoing, Scope
from bot.safety.stage import SafetyEvent
from bot.safety.store import SafetyStore

__all__ = ["AlertSender", "Alerter", "alert_text"]

log = structlog.get_logger("bot.safety.alerts")


class AlertSender(Protocol):
    """What delivers an alert: an adapter (`Adapter.send`)."""

    platform: str

    async def send(self, outgoing: Outgoing, *, first_part: int = 0) -> list[str | None]:
        """Deliver `outgoing`; raises on failure."""
        ...


def alert_text(event_id: int, platform: str, user: str, persona: str, reason: str) -> str:
    """The alert: who, where, why (the kind and the matched phrase), and where to
    find it; never the person's whole message."""
    return (
        f"[safety] Possible crisis: {platform} user {user} talking with {persona} "
        f"({reason}). The crisis reply with help resources was sent and proactive "
        f"messages to them are paused. Queue entry #{event_id}."
    )


class Alerter:
    """Sends crisis alerts to `channel` (or the DM of `user`) on `platform`."""

    def __init__(
        self,
        store: SafetyStore,
        *,
        platform: str | None = None,
        channel: str | None = None,
        user: str | None = None,
        space: str | None = None,
    ) -> None:
        self.store = store
        self.platform = platform
        self.channel = channel or user
        self.user = user or "moderators"
        self.space = space
        self.senders: dict[str, AlertSender] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def configured(self) -> bool:
        return bool(self.platform and self.channel)

    def attach(self, *senders: AlertSender) -> None:
        """Deliver through these adapters from now on; pending alerts go out."""
        for sender in senders:
            self.senders[sender.platform] = sender
        if self.configured and self.platform in self.senders:
            self._spawn(self.flush())

    async def on_crisis(self, event_id: int, event: SafetyEvent) -> None:
        """A committed crisis: alert in the background (the queue has it already)."""
        if not self.configured:
            await self.store.set_alert(event_id, "queued", "no alert channel configured")
            return
        text = alert_text(
            event_id, event.scope.platform, event.scope.user, event.scope.persona, event.reason
        )
        self._spawn(self._deliver(event_id, event.scope.persona, text))

    async def flush(self) -> int:
        """Send every pending alert; returns how many went out."""
        sent = 0
        for event_id, platform, user, persona, reason in await self.store.pending_alerts():
            text = alert_text(event_id, platform, user, persona, reason)
            sent += await self._deliver(event_id, persona, text) is True
        return sent

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for alerts in flight (shutdown, tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # recorded on the row where it could be
                log.error("safety.alert_failed", error=str(exc), error_type=type(exc).__name__)
            finally:
                self._tasks.discard(task)

        task = asyncio.create_task(run(), name="safety-alert")
        self._tasks.add(task)

    async def _deliver(self, event_id: int, persona: str, text: str) -> bool | None:
        assert self.platform is not None and self.channel is not None
        sender = self.senders.get(self.platform)
        if sender is None:
            return None  # stays pending until the adapter is attached
        scope = Scope(
            platform=self.platform,
            space=self.space,
            channel=self.channel,
            user=self.user,
            persona=persona,
        )
        try:
            await sender.send(Outgoing(scope=scope, text=text))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("safety.alert_undelivered", event_id=event_id, reason=reason)
            await self.store.set_alert(event_id, "failed", reason)
            return False
        await self.store.set_alert(event_id, "sent")
        log.info("safety.alert_sent", event_id=event_id, platform=self.platform)
        return True
