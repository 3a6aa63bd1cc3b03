"""Load through a platform adapter end to end: simulated people, a fake platform
server, the real client library, the real adapter and engine, an instant backend.

Telegram (`--platform telegram`): `--people` (1,000) simulated people each send
`--messages` (10) messages in their own private chat, one after the other: a person
waits for the reply, reads it for `--think` seconds (1 s, which is also Telegram's
pacing of about one message per second in a chat) and writes the next one. Starts
are spread over the first second. Updates are injected into the fake Bot API
(tests/fakes/telegram_api.py, in a child process with the simulated people, so
the bot process is measured alone), python-telegram-bot long-polls them over sockets,
the adapter runs each turn (SQLite ledger, `MockBackend`, typing action, pacing,
delivery) and the reply arrives at the fake as a `sendMessage`.

Telegram's overall limit of about 30 messages/s for one bot is raised for the run
(the fake does not enforce it): with it, no bot could exceed 30 replies/s, and the
point is to measure what the framework sustains. The per-chat pacing of 1 s stays.

Measured: messages/s (replies delivered over the wall time from the first message
to the last reply), latency p50/p99 from the update being injected to its reply
arriving at the fake, and that nothing was lost: every message sent was stored and
either answered with a delivered reply or has a recorded failure.

Telegram under its real limits (bench/telegram_load.py): `--burst` sends every
message at once, not paced by people, through a fake that adds `--latency-ms` (50)
to every call and answers `--share-429` (2 %) of sends 429; `--kill` does the same
with `bot run` as a child process, killed with SIGKILL at a seeded random moment
and restarted on the same database. Both report replies/s, the most sends in any
one second, latency p50/p99, lost and duplicated.

Prints, and writes to bench/results/platform_load.json.

    python bench/platform_load.py [--platform telegram|discord|all]
                                  [--people 1000] [--messages 10] [--think 1.0]
    python bench/platform_load.py --burst --people 300 --messages 5
    python bench/platform_load.py --burst --rate 20 --people 300 --messages 2
    python bench/platform_load.py --kill --people 300 --messages 5 [--seed 7]
    python bench/platform_load.py --workers 1,2,4 [--database-url postgresql+psycopg://…]
                                  --people 200 --messages 3 [--rate 30]
    python bench/platform_load.py --workers 1 --database-url sqlite:///tmp/w.db

`--workers` runs several worker processes on one database (bench/cluster_load.py):
a burst of `--people` chats × `--messages` at once (turns/s), then `--rate`
messages/s for 5 s (p50/p99), CPU per message split between the workers, the
PostgreSQL server and the fake platform, and PostgreSQL's transactions and rows
written per message. `--sample` adds, per phase, where the workers' CPU went
(`where`: ms per message by part, database calls and statements per message by
the step that made them, group commit's counters; bench/cpu_sampler.py), at the
cost of a few percent more CPU.

Targets on the 2-core reference machine: paced, >= 200 messages/s, zero lost;
burst, >= 28 replies/s sustained and never more than 30 sends in one second;
kill, 0 lost and duplicates no more than the sends in flight at the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform as platform_module
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))  # tests.fakes lives beside the package, not inside it
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from bench._platform_common import ledger_lost, percentile  # noqa: E402
from bench.platform_discord import run_discord  # noqa: E402


def _telegram_people(
    conn: Connection, people: int, messages: int, think_s: float, first_user: int
) -> None:
    """The child process: the fake Bot API and the simulated people.

    Sends its port, waits for "go", then runs the people; sends back the latencies
    and how many messages went in once every reply arrived (or on "stop").
    """
    from tests.fakes.telegram_api import FakeTelegramAPI, SentMessage

    async def main() -> None:
        loop = asyncio.get_running_loop()
        injected: dict[int, list[float]] = {}
        replies: dict[int, int] = {}
        latencies: list[float] = []
        total = people * messages
        done = asyncio.Event()
        async with FakeTelegramAPI() as api:
            api.record_calls = False

            def inject(user: int) -> None:
                count = len(injected.setdefault(user, []))
                injected[user].append(time.monotonic())
                api.private_message(user, f"message {count + 1} from person {user}")

            def on_sent(sent: SentMessage) -> None:
                user = sent.chat_id
                index = replies.get(user, 0)
                times = injected.get(user, [])
                if index < len(times):
                    latencies.append(sent.at - times[index])
                replies[user] = index + 1
                if len(latencies) >= total:
                    done.set()
                elif replies[user] < messages:
                    loop.call_later(think_s, inject, user)

            api.on_sent = on_sent
            conn.send({"token": api.token, "base_url": api.base_url})
            await loop.run_in_executor(None, conn.recv)  # "go"
            started = time.monotonic()
            rng = random.Random(7)
            for i in range(people):
                loop.call_later(rng.random(), inject, first_user + i)
            stop = loop.run_in_executor(None, conn.poll, messages * (think_s + 5) + 120)
            finished: asyncio.Future[Any] = asyncio.ensure_future(done.wait())
            waiting: list[asyncio.Future[Any]] = [finished, stop]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            conn.send(
                {
                    "elapsed": time.monotonic() - started,
                    "latencies": latencies,
                    "sent": sum(len(v) for v in injected.values()),
                    "typing_actions": len(api.actions),
                    "cpu_s": time.process_time(),
                }
            )
            await loop.run_in_executor(None, conn.recv)  # "stop": the adapter has shut down

    asyncio.run(main())


async def run_telegram(people: int, messages: int, think_s: float) -> dict[str, Any]:
    """The Telegram run; returns its numbers. The fake server and the people run in
    a child process, so the bot process measured is the bot alone."""
    from adapters.base import PacingPolicy
    from adapters.telegram import TELEGRAM_PACING, TelegramAdapter
    from bot.app import open_app
    from bot.config import TelegramSettings, load_settings
    from bot.llm.mock import MockBackend
    from bot.logs import configure_logging

    configure_logging(level="WARNING", fmt="console", secrets=[])
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=_telegram_people, args=(child, people, messages, think_s, 10_000), daemon=True
    )
    process.start()
    loop = asyncio.get_running_loop()
    fake = await loop.run_in_executor(None, parent.recv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp}/load.db"},
                "personas": {"dirs": [str(REPO / "personas")], "watch": False},
                "llm": {"max_concurrency": 1000},
                "memory": {"enabled": False},  # the platform layer is measured, not memory
                "logging": {"level": "WARNING"},
            },
        )
        telegram = TelegramSettings.model_validate(
            {**settings.telegram.model_dump(), "token": fake["token"], "base_url": fake["base_url"]}
        )
        async with open_app(settings, backend=MockBackend(), watch=False) as app:
            # Telegram's overall 30/s is lifted (see the module docstring); per chat stays.
            pacing = PacingPolicy(
                per_chat_interval_s=TELEGRAM_PACING.per_chat_interval_s,
                group_per_minute=TELEGRAM_PACING.group_per_minute,
                global_per_second=1_000_000,
            )
            services = app.services
            if services.inbox is None:
                from dataclasses import replace

                from bot.inbox import Inbox

                services = replace(services, inbox=Inbox(app.db))
            adapter = TelegramAdapter(services, telegram, default_persona="samantha", pacing=pacing)
            stop = asyncio.Event()
            runner = asyncio.create_task(adapter.run(stop))
            await asyncio.wait_for(adapter.ready.wait(), 30)
            cpu0 = time.process_time()
            parent.send("go")
            report = await loop.run_in_executor(None, parent.recv)
            cpu = time.process_time() - cpu0
            stop.set()
            await runner
            parent.send("stop")
            sent = report["sent"]
            lost = await ledger_lost(app, sent)
    process.join(10)
    latencies: list[float] = report["latencies"]
    elapsed: float = report["elapsed"]
    return {
        "platform": "telegram",
        "people": people,
        "messages_per_person": messages,
        "think_s": think_s,
        "messages_sent": sent,
        "replies_delivered": len(latencies),
        "elapsed_s": round(elapsed, 2),
        "messages_per_s": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "latency_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "typing_actions": report["typing_actions"],
        "bot_cpu_s": round(cpu, 2),
        "bot_cpu_per_message_ms": round(cpu / max(1, len(latencies)) * 1000, 2),
        "fake_and_people_cpu_s": round(report["cpu_s"], 2),
        **lost,
    }


RUNS: dict[str, Callable[[int, int, float], Coroutine[Any, Any, dict[str, Any]]]] = {
    "telegram": run_telegram,
    "discord": run_discord,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=["telegram", "discord", "all"], default="telegram")
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--think", type=float, default=1.0, help="seconds between reply and next")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", action="store_true", help="Telegram: every message at once")
    mode.add_argument("--kill", action="store_true", help="Telegram: kill -9 and restart mid-run")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="--burst/--kill: per call")
    parser.add_argument("--share-429", type=float, default=0.02, help="--burst/--kill: 429 share")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=None, help="--burst: messages/s instead of all at once"
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="worker processes on one database, e.g. 1,2,4 (bench/cluster_load.py)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="--workers: the database (default: a private PostgreSQL; sqlite:///… runs 1)",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="--workers: also sample where each worker's CPU goes (bench/cpu_sampler.py)",
    )
    args = parser.parse_args()
    names = list(RUNS) if args.platform == "all" else [args.platform]
    runs = {name: _plain(RUNS[name], args) for name in names}
    if args.workers is not None:
        runs = _worker_runs(args)
    if args.burst or args.kill:
        from bench.telegram_load import run_burst, run_kill

        chosen = run_burst if args.burst else run_kill
        name = "telegram_burst" if args.burst else "telegram_kill"
        options: dict[str, Any] = {
            "seed": args.seed,
            "latency_ms": args.latency_ms,
            "share_429": args.share_429,
        }
        if args.burst and args.rate is not None:
            options["rate"] = args.rate
            name = "telegram_steady"
        runs = {name: lambda: chosen(args.people, args.messages, **options)}
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": f"{platform_module.machine()}, {os.cpu_count()} CPUs",
        "runs": {},
    }
    for name, run in runs.items():
        try:
            result = asyncio.run(run())
        except NotImplementedError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        results["runs"][name] = result
        print(f"\n{name}:")
        for key, value in result.items():
            print(f"  {key:>22}: {value}")
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "platform_load.json"
    previous: dict[str, Any] = {}
    if out.exists():  # keep other platforms' last runs when only one is run now
        try:
            previous = json.loads(out.read_text(encoding="utf-8")).get("runs", {})
        except (OSError, ValueError):
            previous = {}
    results["runs"] = {**previous, **results["runs"]}
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


def _worker_runs(args: Any) -> dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]:
    """One run per worker count: `--people` chats × `--messages` at once, then a
    steady `--rate` (default 30/s) for 5 s."""
    from bench.cluster_load import run_workers

    url = args.database_url
    kind = "sqlite" if url is not None and url.startswith("sqlite") else "pg"
    if args.sample:  # the workers inherit it; each phase's breakdown lands in "where"
        os.environ["BENCH_SAMPLE"] = tempfile.mkdtemp(prefix="bench-sample-")
    runs: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {}
    for count in (int(n) for n in str(args.workers).split(",")):

        def run(count: int = count) -> Coroutine[Any, Any, dict[str, Any]]:
            return run_workers(
                count,
                database_url=url,
                chats=args.people,
                messages=args.messages,
                rate=args.rate or 30.0,
            )

        runs[f"workers_{kind}_{count}"] = run
    return runs


def _plain(
    run: Callable[[int, int, float], Coroutine[Any, Any, dict[str, Any]]], args: Any
) -> Callable[[], Coroutine[Any, Any, dict[str, Any]]]:
    return lambda: run(args.people, args.messages, args.think)


if __name__ == "__main__":
    main()
