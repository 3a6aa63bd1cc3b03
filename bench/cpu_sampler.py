"""Where a process's CPU goes, by sampling every thread that is on a CPU.

cProfile sees only the thread that enabled it and counts wall time: a call that
releases the GIL (a socket send, a regex search) is charged for the time it then
waits to get the GIL back from another thread. This sampler instead reads every
`interval_s` each thread's own CPU clock (`pthread_getcpuclockid`) and charges the
CPU it used since the last look to the Python stack it is in now: whichever thread
spent it, C code under a Python frame included, and time spent waiting (for the
server, for the GIL, for a core) not at all.

`CpuSampler.start()` / `stop()` around the work, then `report()`: the share of
CPU per thread group, per category (`CATEGORIES`, the first frame of a stack that
matches wins, from the leaf up) and the top functions by self and inclusive CPU.
The sampler's own thread is left out (a few percent of a core at the default
4 ms). Linux (per-thread CPU clocks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "CpuSampler", "collect", "mark", "serve"]

#: (category, path fragment, function name or "" for any), first match from the leaf up.
CATEGORIES: list[tuple[str, str, str]] = [
    ("db: pool checkout/return", "sqlalchemy/pool/", ""),
    ("db: psycopg (driver, libpq)", "/psycopg/", ""),
    ("db: sqlite3", "sqlalchemy/dialects/sqlite/", ""),
    ("db: SQL compile", "sqlalchemy/sql/compiler.py", ""),
    ("db: SQL compile", "sqlalchemy/sql/", ""),
    ("db: ORM/SQLModel", "sqlalchemy/orm/", ""),
    ("db: SQLAlchemy engine", "sqlalchemy/engine/", ""),
    ("db: SQLAlchemy other", "/sqlalchemy/", ""),
    ("db: bot.db", "/bot/db.py", ""),
    ("telegram library", "/telegram/", ""),
    ("http (aiohttp/httpx/httpcore)", "/aiohttp/", ""),
    ("http (aiohttp/httpx/httpcore)", "/httpx/", ""),
    ("http (aiohttp/httpx/httpcore)", "/httpcore/", ""),
    ("http (aiohttp/httpx/httpcore)", "/anyio/", ""),
    ("http (aiohttp/httpx/httpcore)", "/h11/", ""),
    ("logging", "/structlog/", ""),
    ("logging", "/logging/", ""),
    ("metrics", "/prometheus_client/", ""),
    ("bot: llm/prompt/tokens", "/bot/llm/", ""),
    ("bot: llm/prompt/tokens", "/bot/prompt.py", ""),
    ("bot: safety", "/bot/safety/", ""),
    ("bot: inbox", "/bot/inbox/", ""),
    ("bot: cluster", "/bot/cluster/", ""),
    ("bot: ledger", "/bot/memory/", ""),
    ("bot: engine", "/bot/engine", ""),  # bot/engine.py and its bot/engine_*.py parts
    ("bot: other", "/bot/", ""),
    ("adapters", "/adapters/", ""),
    ("asyncio loop", "/asyncio/", ""),
    ("threads (executor, queue)", "/concurrent/futures/", ""),
    ("threads (executor, queue)", "/threading.py", ""),
]


def _category(stack: tuple[tuple[str, str], ...]) -> str:
    for filename, func in reversed(stack):  # leaf last in `stack`
        for name, fragment, wanted in CATEGORIES:
            if fragment in filename and (not wanted or wanted == func):
                return name
    return "other"


def _running_tids() -> set[int]:
    running = set()
    for entry in Path("/proc/self/task").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "R":
            running.add(int(entry.name))
    return running


def _group(name: str) -> str:
    """A thread's group: its name up to a trailing number ("bot-db_3" -> "bot-db")."""
    return name.rstrip("0123456789").rstrip("_-") or name


class CpuSampler:
    """Samples the Python stacks of this process's running threads (see the module)."""

    def __init__(self, interval_s: float = 0.004) -> None:
        self.interval_s = interval_s
        self.samples = 0
        #: CPU seconds per (thread group, stack).
        self._stacks: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sampling on a thread of its own."""
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (what was sampled stays for `report`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def reset(self) -> None:
        """Forget what was sampled so far (the start of a measured phase)."""
        self._stacks = Counter()
        self.samples = 0

    def _loop(self) -> None:
        me = threading.get_ident()
        last: dict[int, float] = {}
        while not self._stop.wait(self.interval_s):
            frames = sys._current_frames()
            for thread in threading.enumerate():
                ident = thread.ident
                if ident is None or ident == me or ident not in frames:
                    continue
                try:
                    used = time.clock_gettime(time.pthread_getcpuclockid(ident))
                except (OSError, ProcessLookupError):  # it just ended
                    continue
                spent = used - last.get(ident, used)
                last[ident] = used
                if spent <= 0:
                    continue
                stack = []
                frame: Any = frames[ident]
                while frame is not None:
                    code = frame.f_code
                    stack.append((code.co_filename, code.co_name))
                    frame = frame.f_back
                stack.reverse()
                stacks = self._stacks  # `reset` may swap it between two samples
                stacks[(_group(thread.name), tuple(stack))] += spent
                self.samples += 1

    def report(self, top: int = 25) -> dict[str, Any]:
        """Shares (percent of all samples) per thread group and category, and the
        `top` functions by self and by inclusive samples."""
        stacks = dict(self._stacks)  # a copy in one step: the sampler thread goes on adding
        total = sum(stacks.values()) or 1.0
        threads: Counter[str] = Counter()
        categories: Counter[str] = Counter()
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()  # Counter[str] of float seconds
        for (group, stack), n in stacks.items():
            threads[group] += n
            categories[_category(stack)] += n
            if stack:
                own[_short(stack[-1])] += n
            for name in {_short(f) for f in stack}:
                inclusive[name] += n

        def shares(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
            return {k: round(100 * v / total, 1) for k, v in counter.most_common(limit)}

        return {
            "samples": self.samples,
            "interval_ms": self.interval_s * 1000,
            "cpu_ms": round(total * 1000, 1),
            "categories_ms": {k: round(v * 1000, 1) for k, v in categories.most_common()},
            "threads_pct": shares(threads),
            "categories_pct": shares(categories),
            "self_pct": shares(own, top),
            "inclusive_pct": shares(inclusive, top),
        }


def _short(frame: tuple[str, str]) -> str:
    filename, func = frame
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("site-packages", "main", "python3.11"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{'/'.join(parts[-3:])}:{func}"


def _count_calls(calls: Counter[str], statements: Counter[str], dbs: list[Any]) -> None:
    """Count `Database.run`/`read` calls, and the statements each sends, by the
    work's qualified name (a bench-only wrapper around the class's methods and a
    listener on every engine: which steps make a turn's round trips)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from bot.db import Database

    current = threading.local()

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        name = getattr(current, "name", None)
        if name is None:
            # Not through `Database`: the cluster's lock connection, the scheduler's
            # store. Named by thread and the statement's first words, to tell apart.
            thread = threading.current_thread().name.rsplit("_", 1)[0]
            name = f"(outside a work) {thread}: {' '.join(statement.split()[:4])[:60]}"
        statements[name] += 1

    event.listen(Engine, "before_cursor_execute", on_statement)
    for method in ("run", "read"):
        original = getattr(Database, method)

        def counted(
            self: Any, work: Any, *args: Any, _m: str = method, _o: Any = original, **kw: Any
        ) -> Any:
            name = f"{_m} {getattr(work, '__qualname__', repr(work))}"
            calls[name] += 1
            if not any(db is self for db in dbs):
                dbs.append(self)

            def named(conn: Any) -> Any:
                current.name = name
                try:
                    return work(conn)
                finally:
                    current.name = None

            named.__wrapped__ = work  # type: ignore[attr-defined]  # what db_group keys on
            return _o(self, named, *args, **kw)

        setattr(Database, method, counted)


def serve(folder: Path, name: str) -> CpuSampler:
    """In a worker process: sample from now on; SIGUSR1 starts a phase afresh, SIGUSR2
    writes its report to `folder/name.json` (call on the running loop)."""
    sampler = CpuSampler()
    sampler.start()
    loop = asyncio.get_running_loop()
    calls: Counter[str] = Counter()
    statements: Counter[str] = Counter()
    dbs: list[Any] = []
    _count_calls(calls, statements, dbs)

    def group_stats() -> dict[str, int]:
        """Group commit's counters (runs and reads together) of every Database seen."""
        total: Counter[str] = Counter()
        for db in dbs:
            for stats in (db.group_stats, db.read_group_stats):
                if stats is not None:
                    total.update(dataclasses.asdict(stats))
        return dict(total)

    start = group_stats()

    def dump() -> None:
        out = folder / f"{name}.json"
        tmp = out.with_suffix(".tmp")
        report = sampler.report()
        report["db_calls"] = dict(calls.most_common())
        report["db_statements"] = dict(statements.most_common())
        now = group_stats()
        report["group_commit"] = {k: v - start.get(k, 0) for k, v in now.items()}
        tmp.write_text(json.dumps(report), encoding="utf-8")
        tmp.replace(out)  # whole or not at all: the parent polls for it

    def reset() -> None:
        nonlocal start
        sampler.reset()
        calls.clear()
        statements.clear()
        start = group_stats()

    loop.add_signal_handler(signal.SIGUSR1, reset)
    loop.add_signal_handler(signal.SIGUSR2, dump)
    return sampler


def mark(pids: list[int], folder: Path) -> None:
    """In the parent: a phase begins in every worker of `pids` (see `serve`)."""
    for old in folder.glob("*.json"):
        old.unlink()
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)


async def collect(pids: list[int], folder: Path, messages: int) -> dict[str, Any]:
    """In the parent: the phase's samples of every worker, merged: CPU ms per message
    by category, and the first worker's top functions' shares."""
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)

    def written() -> list[Path]:
        return sorted(folder.glob("*.json"))

    deadline = time.monotonic() + 10
    while len(await asyncio.to_thread(written)) < len(pids):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in await asyncio.to_thread(written)]
    per = max(1, messages)
    ms: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    statements: Counter[str] = Counter()
    group: Counter[str] = Counter()
    for report in reports:
        for k, v in report["categories_ms"].items():
            ms[k] += v
        calls.update(report.get("db_calls", {}))
        statements.update(report.get("db_statements", {}))
        group.update(report.get("group_commit", {}))
    return {
        "sampled_ms_per_message": {k: round(v / per, 2) for k, v in ms.most_common()},
        "sampled_total_ms_per_message": round(sum(ms.values()) / per, 2),
        "db_calls_per_message": {k: round(v / per, 2) for k, v in calls.most_common()},
        "group_commit_per_message": {k: round(v / per, 2) for k, v in group.items()},
        "db_statements_per_message": {k: round(v / per, 2) for k, v in statements.most_common()},
        "first_worker_self_pct": reports[0]["self_pct"] if reports else {},
        "first_worker_inclusive_pct": reports[0]["inclusive_pct"] if reports else {},
        "first_worker_threads_pct": reports[0]["threads_pct"] if reports else {},
    }


if __name__ == "__main__":  # a self-check: a busy thread shows up
    sampler = CpuSampler()
    sampler.start()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        sum(range(1000))
    sampler.stop()
    print(sampler.report(5))
