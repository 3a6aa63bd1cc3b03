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

from bot.metrics._delivery import DeliverySource
from bot.metrics._metrics import (
    PREFIX,
    TURN_OUTCOMES,
    Metrics,
    metric_names,
    skip_reason,
    worker_id,
)
from bot.metrics._queues import QueueSnapshot, read_queues

__all__ = [
    "PREFIX",
    "TURN_OUTCOMES",
    "DeliverySource",
    "Metrics",
    "QueueSnapshot",
    "metric_names",
    "read_queues",
    "skip_reason",
    "worker_id",
]
