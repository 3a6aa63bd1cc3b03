"""What the operations and people pages do beyond plain queries, without HTTP:
exports and training runs on disk, adapters (bot/train/registry.py), the numbers
/metrics serves, and forgetting through `Memory.forget`.

Files on disk are read bounded: at most `MAX_LISTED` directories, manifests and
reports of at most `MAX_JSON_BYTES` each; a file that is missing, too large or not
JSON is shown as such, never raised.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import QueueSnapshot, read_queues
from bot.web.dashboard.store import Moderator, audit

if TYPE_CHECKING:
    from bot.app import App
    from bot.memory.store import SQLiteMemory

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_LISTED",
    "ExportEntry",
    "MetricsHistory",
    "RunEntry",
    "forget_memory",
    "list_exports",
    "list_runs",
    "read_json",
    "snapshot",
]

MAX_LISTED = 50
MAX_JSON_BYTES = 2 * 1024 * 1024


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object, None) or (None, why not)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None, "missing"
    if size > MAX_JSON_BYTES:
        return None, f"larger than {MAX_JSON_BYTES // 1024} KiB, not read"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return None, f"not readable JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def _newest_dirs(root: Path) -> list[Path]:
    try:
        entries = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    entries.sort(key=lambda e: e.name, reverse=True)
    return [Path(e.path) for e in entries[: MAX_LISTED * 4]]


@dataclass(frozen=True, slots=True)
class ExportEntry:
    name: str
    path: str
    created_at: str | None
    records: dict[str, int]
    filters: dict[str, int]
    dpo_pairs: dict[str, int]
    problem: str | None
    manifest: dict[str, Any] | None


def list_exports(root: Path) -> list[ExportEntry]:
    """The finished exports under `root` (those with a manifest.json), newest first."""
    found: list[ExportEntry] = []
    for directory in _newest_dirs(root):
        if directory.name.startswith("."):  # an export being written
            continue
        manifest, problem = read_json(directory / "manifest.json")
        if manifest is None and problem == "missing":
            continue
        records: dict[str, int] = {}
        dpo: dict[str, int] = {}
        filters: dict[str, int] = {}
        if manifest is not None:
            for rel, stats in (manifest.get("files") or {}).items():
                if isinstance(stats, dict):
                    records[str(rel)] = int(stats.get("records", 0) or 0)
            filters = {
                str(k): int(v) for k, v in (manifest.get("filters") or {}).items()
                if isinstance(v, int) and v
            }  # fmt: skip
            for persona in (manifest.get("personas") or {}).values():
                if isinstance(persona, dict):
                    for source, n in (persona.get("dpo_pairs") or {}).items():
                        if isinstance(n, int):
                            dpo[str(source)] = dpo.get(str(source), 0) + n
        found.append(
            ExportEntry(
                name=directory.name,
                path=str(directory),
                created_at=str(manifest.get("created_at")) if manifest else None,
                records=records,
                filters=filters,
                dpo_pairs=dpo,
                problem=problem,
                manifest=manifest,
            )
        )
        if len(found) >= MAX_LISTED:
            break
    return found


@dataclass(frozen=True, slots=True)
class RunEntry:
    name: str
    path: str
    report: dict[str, Any] | None
    problem: str | None


def list_runs(root: Path) -> list[RunEntry]:
    """Training runs: adapter directories under `root` with a train_report.json
    (persona subdirectories are looked into one level down), newest first."""
    runs: list[RunEntry] = []
    for directory in _newest_dirs(root):
        candidates = [directory]
        if not (directory / "train_report.json").exists():
            candidates = _newest_dirs(directory)[:MAX_LISTED]
        for candidate in candidates:
            report, problem = read_json(candidate / "train_report.json")
            if report is None and problem == "missing":
                continue
            runs.append(RunEntry(str(candidate.relative_to(root)), str(candidate), report, problem))
            if len(runs) >= MAX_LISTED:
                return runs
    return runs


# -- live numbers -----------------------------------------------------------------------


def _sums(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith("_created"):
                continue
            sums[name] = sums.get(name, 0.0) + float(sample.value)
    return sums


async def snapshot(bot: App, now: datetime) -> dict[str, Any]:
    """The numbers of this moment: the process's metrics registry (as /metrics
    renders it) summed per series, and the inbox and outbox depth queried from the
    database (`bot.metrics.read_queues`, the same queries /metrics runs)."""
    metrics = bot.metrics
    await metrics.refresh(now=now)  # never raises: a failed read keeps the last counts
    sums = _sums(generate_latest(metrics.registry).decode())
    # The snapshot /metrics serves (cached for its ttl), or the same queries when this
    # process's metrics do not watch the database.
    queues: QueueSnapshot | None = metrics.queues
    if queues is None:
        queues = await bot.db.read(lambda conn: read_queues(conn, now))

    def flat(rows: dict[tuple[str, str], tuple[int, float]]) -> list[dict[str, Any]]:
        return [
            {"platform": p, "status": s, "count": n, "oldest_s": round(age, 1)}
            for (p, s), (n, age) in sorted(rows.items())
        ]

    return {
        "at": now.astimezone(UTC).isoformat(),
        "t": time.time(),
        "series": {k: v for k, v in sums.items() if k.startswith("personabot_")},
        "inbox": flat(queues.inbox),
        "outbox": flat(queues.outbox),
        "turns": flat(queues.turns),
        "inbox_depth": sum(n for n, _ in queues.inbox.values()),
        "outbox_depth": sum(n for n, _ in queues.outbox.values()),
        "turns_waiting": sum(n for n, _ in queues.turns.values()),
    }


class MetricsHistory:
    """The last `size` snapshots of the chart numbers, kept by the dashboard process
    so a page opened now shows the last minutes at once."""

    def __init__(self, size: int = 120) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, snap: dict[str, Any]) -> dict[str, Any]:
        series = snap["series"]
        point = {
            "t": snap["t"],
            "turns": series.get("personabot_turns_total", 0.0),
            "failures": series.get("personabot_failures_total", 0.0),
            "tokens": series.get("personabot_tokens_total", 0.0),
            "inbox": snap["inbox_depth"],
            "outbox": snap["outbox_depth"],
            "waiting": snap["turns_waiting"],
        }
        self.points.append(point)
        return point


# -- forgetting -------------------------------------------------------------------------

#: Memories built for bots without one, by the bot (held weakly: a bot closed and a
#: new one at the same address never share one).
_fallback_memory: dict[int, tuple[weakref.ref[App], SQLiteMemory]] = {}


def _memory(bot: App) -> SQLiteMemory:
    """The bot's memory, or (a dashboard over a bot run without long-term memory)
    one built over the same database: the forget path is the memory's either way."""
    if bot.memory is not None:
        return bot.memory
    entry = _fallback_memory.get(id(bot))
    if entry is not None and entry[0]() is bot:
        return entry[1]
    from bot.app import build_memory

    for key, (ref, _) in list(_fallback_memory.items()):
        if ref() is None:
            del _fallback_memory[key]
    memory = build_memory(bot.db, bot.settings.memory)
    _fallback_memory[id(bot)] = (weakref.ref(bot), memory)
    return memory


async def forget_memory(
    bot: App,
    who: Moderator,
    user_id: int,
    target: str,
    *,
    persona_id: str | None,
    now: datetime,
) -> dict[str, int]:
    """Forget `target` (`f12`, `s3`, `m45` or `all`, of `persona_id` or every persona)
    of person `user_id` through `Memory.forget`, the path `/forget` and
    `bot memory forget` take (no byte left: see bot/memory/forget.py), then audit it.
    The audit names the memory and the counts, never its text."""
    counts = await _memory(bot).forget(user_id, target, persona_id=persona_id)
    await bot.db.run(
        lambda conn: audit(
            conn,
            who,
            "memory.forget",
            f"person:{user_id}",
            {"memory": target, "persona": persona_id},
            {"deleted": {k: int(v) for k, v in counts.items() if v}},
            now=now,
        )
    )
    return counts
