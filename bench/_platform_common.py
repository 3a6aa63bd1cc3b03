"""What the platform benchmarks share: percentiles, and the ledger's check that
nothing sent was lost."""

from __future__ import annotations

from typing import Any

__all__ = ["ledger_lost", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def ledger_lost(app: Any, sent: int | dict[Any, list[float]]) -> dict[str, Any]:
    """Every message sent must be stored and answered, or have a recorded failure."""

    def work(conn: Any) -> dict[str, int]:
        row = conn.exec_driver_sql(
            "select "
            " (select count(*) from messages where direction = 'in'),"
            " (select count(*) from messages where direction = 'in' and status = 'answered'),"
            " (select count(*) from messages where direction = 'out' and status = 'delivered'),"
            " (select count(distinct message_id) from failures where message_id is not null),"
            " (select count(*) from failures)"
        ).one()
        return {
            "stored": row[0],
            "answered": row[1],
            "delivered": row[2],
            "failed_messages": row[3],
            "failures": row[4],
        }

    counts: dict[str, int] = await app.db.run(work)
    if not isinstance(sent, int):  # person -> injection times
        sent = sum(len(times) for times in sent.values())
    accounted = min(counts["answered"], counts["delivered"]) + counts["failed_messages"]
    return {**counts, "lost": max(0, sent - accounted)}
