"""The durable queues' depth and age, read from the database at scrape time.

Three grouped counts on the status indexes, the same SQL on SQLite and PostgreSQL:
inbox events not handled, replies not delivered, turns not answered.
`QueueCollector` serves the last `QueueSnapshot`; `Metrics.refresh` renews it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select
from sqlmodel import SQLModel

from bot.models import Conversation, InboxRow, InboxStatus, Message, MessageStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["QueueCollector", "QueueSnapshot", "read_queues"]

PREFIX = "personabot"


@dataclass(frozen=True)
class QueueSnapshot:
    """Depth and oldest age of the durable queues, as read at one moment.

    Each map is keyed by (platform, status); the age is of the oldest row in seconds.
    """

    at: float
    inbox: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    outbox: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    turns: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    error: str | None = None
    took_s: float = 0.0


_Rows = dict[tuple[str, str], tuple[int, float]]

_inbox: Table = SQLModel.metadata.tables[InboxRow.__tablename__]
_messages: Table = SQLModel.metadata.tables[Message.__tablename__]
_conversations: Table = SQLModel.metadata.tables[Conversation.__tablename__]

_INBOX_STATES = (InboxStatus.PENDING.value, InboxStatus.FAILED.value)
_OUTBOX_STATES = (MessageStatus.GENERATED.value, MessageStatus.SENDING.value)
_TURN_STATES = (MessageStatus.RECEIVED.value, MessageStatus.ANSWERING.value)


def _age(now: datetime, oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (now - oldest).total_seconds())


def read_queues(conn: Connection, now: datetime) -> QueueSnapshot:
    """Query the inbox, the outbox and unanswered turns (three grouped counts that
    use the status indexes); the same SQL on SQLite and PostgreSQL."""
    started = time.perf_counter()
    inbox = {
        (str(platform), str(status)): (int(count), _age(now, oldest))
        for platform, status, count, oldest in conn.execute(
            select(
                _inbox.c.platform,
                _inbox.c.status,
                func.count(),
                func.min(_inbox.c.received_at),
            )
            .where(_inbox.c.status.in_(_INBOX_STATES))
            .group_by(_inbox.c.platform, _inbox.c.status)
        )
    }

    def by_status(states: Sequence[str], direction: str) -> _Rows:
        # One join per waiting message. Counting per conversation first and joining
        # those rows ran 4-6x slower on SQLite and no faster on an analyzed
        # PostgreSQL (measured with bench/ops_scrape.py's data).
        rows = conn.execute(
            select(
                _conversations.c.platform,
                _messages.c.status,
                func.count(),
                func.min(_messages.c.created_at),
            )
            .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
            .where(_messages.c.status.in_(states), _messages.c.direction == direction)
            .group_by(_conversations.c.platform, _messages.c.status)
        )
        return {
            (str(platform), str(status)): (int(count), _age(now, oldest))
            for platform, status, count, oldest in rows
        }

    return QueueSnapshot(
        at=time.monotonic(),
        inbox=inbox,
        outbox=by_status(_OUTBOX_STATES, "out"),
        turns=by_status(_TURN_STATES, "in"),
        took_s=time.perf_counter() - started,
    )


class QueueCollector(Collector):
    """Reads the last `QueueSnapshot`; `Metrics.refresh` renews it before a scrape."""

    def __init__(self) -> None:
        self.snapshot: QueueSnapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        snap = self.snapshot
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Rows waiting in a durable queue: inbox events (pending, failed), replies "
            "not yet delivered (generated, sending), turns not yet answered "
            "(received, answering).",
            labels=["queue", "platform", "status"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds",
            "Age of the oldest row of each queue, platform and status.",
            labels=["queue", "platform", "status"],
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_queue_scrape_ok",
            "1 when the last read of the queues succeeded, 0 when the database failed it.",
        )
        took = GaugeMetricFamily(
            f"{PREFIX}_queue_scrape_seconds", "How long the last read of the queues took."
        )
        if snap is not None:
            queues = (("inbox", snap.inbox), ("outbox", snap.outbox), ("turns", snap.turns))
            for queue, rows in queues:
                for (platform, status), (count, oldest) in sorted(rows.items()):
                    depth.add_metric([queue, platform, status], count)
                    age.add_metric([queue, platform, status], oldest)
            up.add_metric([], 0.0 if snap.error else 1.0)
            took.add_metric([], snap.took_s)
        yield depth
        yield age
        yield up
        yield took


