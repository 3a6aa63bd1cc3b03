"""Every Prometheus metric of one bot process, each named once, in a registry of its own.

`Metrics` holds the counters, histograms and gauges that call sites move with one
line (`metrics.turn(...)`, `metrics.generation.labels(platform).observe(s)`), and
two collectors read at scrape time instead of being pushed to:

- `watch_database(db)`: inbox, outbox and unanswered-turn depth and oldest age,
  queried from the database (SQLite or PostgreSQL) when `/metrics` is scraped and
  cached for `ttl_s`, so a scrape every second costs at most one set of queries per
  `ttl_s` (`refresh()` runs them on the database's threads, off the event loop);
- `watch_delivery(adapters)`: each adapter's `DeliveryStats` (sends, 429s,
  failures, typing), which the pacer and the adapter's send already count.

Nothing here is module-global: a process (or a test) makes as many `Metrics` as it
likes, each with its own `CollectorRegistry`, so two bots never share a counter.
`metric_names()` lists every name, for dashboards and alerts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select
from sqlmodel import SQLModel

from bot.models import Conversation, InboxRow, InboxStatus, Message, MessageStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from bot.db import Database

__all__ = [
    "DeliverySource",
    "Metrics",
    "QueueSnapshot",
    "metric_names",
    "read_queues",
    "skip_reason",
    "worker_id",
]

PREFIX = "personabot"

_OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
_GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: Turn outcomes, the values of `personabot_turns_total{outcome}`.
TURN_OUTCOMES = (
    "answered",  # the model's reply was stored
    "fixed",  # the safety stage answered (crisis, disclosure, limits): no model call
    "failed",  # something failed; the person got the apology
    "expired",  # too old when the bot got to it
    "coalesced",  # a burst: a newer message of the same person answered it
    "duplicate",  # the platform delivered it again
    "ignored",  # not addressed to the bot (stored only)
)

# Proactive skip reasons (bot/scheduler/policy.py's texts carry dates and numbers):
# the label is the first of these whose key starts the text, so its values stay few.
_SKIP_REASONS = (
    ("never wrote", "never_wrote"),
    ("opted out", "opted_out"),
    ("unreachable", "unreachable"),
    ("paused after a crisis", "crisis_pause"),
    ("quiet hours", "quiet_hours"),
    ("daily cap", "daily_cap"),
    ("not a direct conversation", "not_direct"),
    ("no sender", "no_sender"),
)


def skip_reason(reason: str) -> str:
    """A proactive skip's reason as a label with few values ("quiet_hours", ...)."""
    text = reason.strip().lower()
    for key, label in _SKIP_REASONS:
        if text.startswith(key):
            return label
    if "unanswered" in text:
        return "unanswered"
    return "other"


def worker_id() -> str:
    """This process's name in the metrics: `$BOT_WORKER_ID`, else host:pid."""
    return os.environ.get("BOT_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


class _PacerStats(Protocol):
    sent: int
    rate_limited: int
    failed: int
    typing_sent: int
    typing_skipped: int


class _Paced(Protocol):
    @property
    def stats(self) -> _PacerStats: ...


class DeliverySource(Protocol):
    """An adapter as the delivery collector sees it: its platform and its pacer."""

    platform: str

    @property
    def pacer(self) -> _Paced: ...


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


class _QueueCollector(Collector):
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


class _DeliveryCollector(Collector):
    """Each watched adapter's `DeliveryStats`, as counters by platform."""

    def __init__(self) -> None:
        self.sources: list[DeliverySource] = []

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        families = {
            "sent": CounterMetricFamily(
                f"{PREFIX}_delivery_parts_sent",
                "Message parts the platform accepted.",
                labels=["platform"],
            ),
            "rate_limited": CounterMetricFamily(
                f"{PREFIX}_rate_limited",
                "429 answers from the platform (each pauses the chat, or everything).",
                labels=["platform"],
            ),
            "failed": CounterMetricFamily(
                f"{PREFIX}_delivery_failed",
                "Replies that could not be delivered (recorded undeliverable).",
                labels=["platform"],
            ),
            "typing_sent": CounterMetricFamily(
                f"{PREFIX}_typing_sent", "Typing indicators sent.", labels=["platform"]
            ),
            "typing_skipped": CounterMetricFamily(
                f"{PREFIX}_typing_skipped",
                "Typing indicators skipped to leave the send budget to replies.",
                labels=["platform"],
            ),
        }
        totals: dict[str, dict[str, int]] = {}
        for source in self.sources:
            stats = source.pacer.stats
            per = totals.setdefault(source.platform, dict.fromkeys(families, 0))
            for name in families:
                per[name] += int(getattr(stats, name))
        for platform, per in sorted(totals.items()):
            for name, family in families.items():
                family.add_metric([platform], per[name])
        yield from families.values()


class Metrics:
    """The metrics of one bot process (see the module docstring)."""

    def __init__(self, *, worker: str | None = None, ttl_s: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.worker = worker or worker_id()
        #: How long a read of the queues is reused before the next scrape reads again.
        self.ttl_s = ttl_s
        r = self.registry
        self.turns = Counter(
            f"{PREFIX}_turns",
            "Turns by platform and outcome (answered, fixed, failed, expired, coalesced, "
            "duplicate, ignored).",
            ["platform", "outcome"],
            registry=r,
        )
        self.overhead = Histogram(
            f"{PREFIX}_turn_overhead_seconds",
            "The framework's own time in a turn: everything but generation.",
            ["platform"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From a streamed turn's start to its first visible text.",
            ["platform"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.generation = Histogram(
            f"{PREFIX}_generation_seconds",
            "The model's time for a reply, moderation of the output included.",
            ["platform"],
            buckets=_GENERATION_BUCKETS,
            registry=r,
        )
        self.delivery = Histogram(
            f"{PREFIX}_delivery_seconds",
            "From handing a reply to its adapter to the platform confirming its last "
            "part (pacing and 429 waits included).",
            ["platform"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens the model read (prompt) and wrote (completion).",
            ["platform", "kind"],
            registry=r,
        )
        self.failures = Counter(
            f"{PREFIX}_failures",
            "Failures recorded, by stage (persona, backend, generate, recall, observe, "
            "proactive, deliver).",
            ["stage"],
            registry=r,
        )
        self.memory_recall = Histogram(
            f"{PREFIX}_memory_recall_seconds",
            "A turn's whole memory recall: search, ranking and packing into the budget.",
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.memory_search = Histogram(
            f"{PREFIX}_memory_search_seconds",
            "One memory search, by backend (sqlite, postgresql).",
            ["backend"],
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.proactive = Counter(
            f"{PREFIX}_proactive",
            "Proactive messages: sent, skipped or failed, with a short reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this worker leads a role (telegram polling, scheduler), else 0.",
            ["worker", "role"],
            registry=r,
        )
        self.worker_info = Gauge(
            f"{PREFIX}_worker_info",
            "Always 1; its label names this worker (BOT_WORKER_ID or host:pid).",
            ["worker"],
            registry=r,
        )
        self.worker_info.labels(self.worker).set(1)
        self._queues = _QueueCollector()
        self._delivery = _DeliveryCollector()
        self._db: Database | None = None
        self._reading: asyncio.Future[QueueSnapshot] | None = None
        #: How long a scrape waits for the database's queue counts.
        self.read_timeout_s = 2.0
        r.register(self._queues)
        r.register(self._delivery)

    # -- one-liners for call sites ------------------------------------------------------

    def turn(self, platform: str, outcome: str) -> None:
        """Count a finished turn."""
        self.turns.labels(platform, outcome).inc()

    def failure(self, stage: str) -> None:
        """Count a failure recorded at `stage`."""
        self.failures.labels(stage).inc()

    def used_tokens(self, platform: str, prompt: int | None, completion: int | None) -> None:
        """Count what the model read and wrote for one reply (unknown counts: none)."""
        if prompt:
            self.tokens.labels(platform, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(platform, "completion").inc(completion)

    def proactive_sent(self) -> None:
        """Count a proactive message delivered."""
        self.proactive.labels("sent", "ok").inc()

    def proactive_skipped(self, reason: str) -> None:
        """Count a proactive message the policy held back (`reason`: its text)."""
        self.proactive.labels("skipped", skip_reason(reason)).inc()

    def proactive_failed(self, reason: str) -> None:
        """Count a proactive message that was due but not delivered."""
        self.proactive.labels("failed", reason).inc()

    def set_leader(self, role: str, leading: bool) -> None:
        """Say whether this worker leads `role` now ("telegram", "scheduler")."""
        self.leader.labels(self.worker, role).set(1 if leading else 0)

    @contextmanager
    def timed_search(self, backend: str) -> Iterator[None]:
        """Time one memory search: `with metrics.timed_search("postgresql"): ...`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.memory_search.labels(backend).observe(time.perf_counter() - started)

    # -- scrape-time collectors -----------------------------------------------------------

    def watch_database(self, db: Database) -> None:
        """Report the depth and age of `db`'s inbox and outbox at each scrape."""
        self._db = db

    def watch_delivery(self, adapters: Iterable[DeliverySource]) -> None:
        """Report these adapters' delivery counts (sends, 429s, failures) at each scrape."""
        self._delivery.sources.extend(adapters)

    @property
    def queues(self) -> QueueSnapshot | None:
        """The last read of the queues (None before the first)."""
        return self._queues.snapshot

    async def refresh(self, *, now: datetime | None = None, force: bool = False) -> None:
        """Read the queues again if the last read is older than `ttl_s` (or `force`).

        Concurrent scrapes share one read, and a read the database has not answered
        within `read_timeout_s` is waited for by the next scrape instead of another
        being started (a hung server holds one database thread, not one per scrape).
        A failing or silent database leaves the last counts and sets
        `personabot_queue_scrape_ok` to 0; it never fails the scrape.
        """
        db = self._db
        if db is None:
            return
        snap = self._queues.snapshot
        if not force and snap is not None and time.monotonic() - snap.at < self.ttl_s:
            return
        reading = self._reading
        if reading is None or reading.done():
            at = now or datetime.now(UTC)
            reading = self._reading = asyncio.ensure_future(
                db.read(lambda conn: read_queues(conn, at))
            )
        try:
            fresh = await asyncio.wait_for(asyncio.shield(reading), self.read_timeout_s)
        except Exception as exc:  # the scrape still answers; readyz says why
            if isinstance(exc, TimeoutError):
                error = f"no answer from the database within {self.read_timeout_s:g} s"
            else:
                error = str(exc) or type(exc).__name__
            old = snap or QueueSnapshot(at=0.0)
            fresh = QueueSnapshot(
                at=time.monotonic(),
                inbox=old.inbox,
                outbox=old.outbox,
                turns=old.turns,
                error=error,
            )
        self._queues.snapshot = fresh


def metric_names() -> frozenset[str]:
    """Every family and sample name a `Metrics` exports, labelled ones with no samples
    yet included (for dashboards, alerts and the test that checks them)."""
    names: set[str] = set()
    for family in Metrics(worker="names").registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created"))
        elif family.type == "gauge":
            names.add(family.name)
    return frozenset(names)
