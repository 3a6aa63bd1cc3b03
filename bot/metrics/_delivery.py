"""Each adapter's delivery counts (`DeliveryStats`: sends, 429s, failures, typing),
read at scrape time: the pacer and the adapter's send already count them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["DeliveryCollector", "DeliverySource"]

PREFIX = "personabot"


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


class DeliveryCollector(Collector):
    """Each watched adapter's `DeliveryStats`, as counters by platform."""

    def __init__(self) -> None:
        self.sources: list[DeliverySource] = []

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
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


