"""`Metrics`: the counters, histograms and gauges of one process, and its registry."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.aio import wait_for
from bot.metrics._delivery import DeliveryCollector, DeliverySource
from bot.metrics._queues import QueueCollector, QueueSnapshot, read_queues

if TYPE_CHECKING:
    from bot.db import Database

__all__ = ["PREFIX", "TURN_OUTCOMES", "Metrics", "metric_names", "skip_reason", "worker_id"]

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
        self._queues = QueueCollector()
        self._delivery = DeliveryCollector()
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
            fresh = await wait_for(asyncio.shield(reading), self.read_timeout_s)
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
