"""What `bot chat` and `bot run` do once their settings are built: open the app,
get the model ready before the first prompt (saying so on stderr), run the
adapters until they stop or a signal comes, and turn what went wrong into the
project's errors (bot/cli_errors.py makes those exit codes).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.errors import AdapterError, BackendError, ConfigError, StorageError

if TYPE_CHECKING:
    from adapters.base import Adapter, AdapterServices
    from bot.app import App
    from bot.cluster import Leadership

__all__ = ["chat_session", "progress", "run_bot"]


def progress(text: str) -> None:
    """A short line about what the command is doing, on stderr (stdout is the chat)."""
    print(f"[{text}]", file=sys.stderr, flush=True)


async def chat_session(settings: Settings, persona: str, output: str) -> None:
    """Chat with `persona` on this terminal; `BackendError` when a message went unanswered."""
    from adapters.console import ConsoleAdapter
    from bot.app import open_app

    async with open_app(settings) as bot:
        loaded = bot.personas.get(persona)  # unknown persona: fail before reading input
        await _ready_backend(bot, settings, loaded)
        console = ConsoleAdapter(
            bot.services,
            persona=persona,
            user_id=settings.console.user_id,
            display_name=settings.console.display_name,
            output_format="jsonl" if output == "jsonl" else "text",
        )
        if bot.safety is not None:  # crisis alerts configured for the console go here
            bot.safety.alerts.attach(console)
        stop = asyncio.Event()
        _on_signals(stop)
        await console.run(stop)
    if console.unanswered:
        raise BackendError(
            f"{console.unanswered} of {console.turns} message(s) got the apology instead "
            "of a reply: the backend failed (the failures table and the log say why)"
        )


async def _ready_backend(bot: App, settings: Settings, loaded: Any) -> None:
    """Reach (or load) the persona's model before the first prompt, saying so."""
    from bot.preflight import is_cached, prepare_hub_model, probe_openai_server

    kind, model = bot.backends.choice(loaded)
    if kind == "openai":
        tokenizer = settings.llm.tokenizer
        if tokenizer:  # loaded from the hub for exact counts: offline, say so at once
            try:
                await asyncio.to_thread(prepare_hub_model, tokenizer)
            except BackendError as exc:
                progress(f"warning: token counts are estimated: {exc}")
        key = settings.llm.resolved_api_key()
        warning = await probe_openai_server(
            settings.llm.base_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=model,
            timeout_s=settings.llm.connect_timeout_s,
        )
        if warning is not None:
            progress(f"warning: {warning}")
    elif kind == "transformers":
        found = await asyncio.to_thread(prepare_hub_model, model)
        download = found == "hub" and not await asyncio.to_thread(is_cached, model)
        progress(f"loading {model}" + (" (downloading it first)" if download else ""))
    await bot.backends.for_persona(loaded)
    progress(f"ready: {loaded.persona.name} ({loaded.persona.id})")


async def run_bot(settings: Settings) -> None:
    """Every enabled adapter and the scheduler, until a signal or all adapters stop.

    On a SQLite file this is the only `bot run` (a second is refused:
    `bot.cluster.SingleProcessLock`). On PostgreSQL it is one worker of however many
    run on the database (`bot.cluster`): it joins, shares the chats, and leads
    (polls Telegram, runs the scheduler) when it holds the leader lock.
    """
    from bot.cluster import SingleProcessLock
    from bot.db import sqlite_path

    path = sqlite_path(settings.database.url)
    single = SingleProcessLock(path) if path is not None else None
    if single is not None:
        single.acquire()  # before anything is opened, recovered or sent
    try:
        await _run_bot(settings)
    finally:
        if single is not None:
            single.release()


async def _run_bot(settings: Settings) -> None:
    import dataclasses

    import structlog

    from bot.app import open_app
    from bot.cluster import ClusterNode, Leadership

    log = structlog.get_logger("bot.run")
    async with open_app(settings) as bot:
        node: ClusterNode | None = None
        if bot.db.engine.dialect.name == "postgresql":
            node = ClusterNode(settings.database.url)
            await node.join()
        leadership = Leadership(node) if node is not None else Leadership.solo()
        services = dataclasses.replace(bot.services, cluster=node, leadership=leadership)
        try:
            await _serve(bot, settings, services, leadership, log)
        finally:
            if node is not None:
                await node.leave()
        if node is not None and node.failed.is_set():
            raise StorageError(
                f"this worker lost its database connection ({node.failure}); it stopped "
                "so that no two workers handle one chat: start it again"
            )


async def _serve(
    bot: App, settings: Settings, services: AdapterServices, leadership: Leadership, log: Any
) -> None:
    """The adapters, the scheduler and the leader campaign, until a stop."""
    adapters: list[Adapter] = []
    if settings.console.enabled:
        from adapters.console import ConsoleAdapter

        adapters.append(
            ConsoleAdapter(
                services,
                persona=settings.personas.default,
                user_id=settings.console.user_id,
                display_name=settings.console.display_name,
            )
        )
    if settings.discord.token is not None:
        from adapters.discord import DiscordAdapter

        adapters.append(
            DiscordAdapter(
                services, settings.discord, default_persona=settings.personas.default
            )
        )
    if settings.telegram.token is not None:
        from adapters.telegram import TelegramAdapter

        adapters.append(
            TelegramAdapter(
                services, settings.telegram, default_persona=settings.personas.default
            )
        )
    if not adapters:
        raise ConfigError(
            "no adapter is enabled: set DISCORD_TOKEN or TELEGRAM_TOKEN in the environment, "
            "or console.enabled = true"
        )
    if bot.safety is not None:  # crisis alerts go out through the running adapters
        bot.safety.alerts.attach(*adapters)
    stop = asyncio.Event()
    _on_signals(stop)
    from bot.web import start_ops  # /metrics, /healthz, /readyz when ops.port is set

    ops = await start_ops(settings.ops, bot, adapters)
    dashboard = None
    if settings.dashboard.enabled:  # the moderators' dashboard (bot/web/dashboard)
        from bot.web.dashboard import start_dashboard

        dashboard = await start_dashboard(bot, settings)
    scheduler = await _start_scheduler(bot, settings, adapters, leadership)
    node = services.cluster
    if node is not None:  # a lost cluster connection stops this worker
        watchdog = asyncio.create_task(_stop_on(node.failed, stop), name="cluster-watch")
    polls = settings.telegram.token is not None and settings.telegram.mode == "polling"
    bot.metrics.set_leader("telegram", polls and leadership.is_leader)

    async def lead() -> None:
        bot.metrics.set_leader("telegram", polls)

    leadership.on_elected.append(lead)
    campaign = asyncio.create_task(leadership.run(stop), name="cluster-campaign")
    tasks: dict[asyncio.Future[Any], Adapter] = {
        asyncio.create_task(a.run(stop), name=f"adapter-{a.platform}"): a for a in adapters
    }
    log.info("bot.started", adapters=[a.platform for a in adapters])
    waiter: asyncio.Future[Any] = asyncio.create_task(stop.wait())
    running: set[asyncio.Future[Any]] = set(tasks)
    while running and not stop.is_set():
        done, running = await asyncio.wait(
            running | {waiter}, return_when=asyncio.FIRST_COMPLETED
        )
        running.discard(waiter)
        for task in done - {waiter}:
            # One adapter failing (a bad token, say) must not take the others down.
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("adapter.stopped", adapter=tasks[task].platform, error=str(error))
    log.info("bot.stopping")
    stop.set()  # adapters stop taking messages and finish the replies in hand
    if running:
        _, stuck = await asyncio.wait(running, timeout=settings.engine.reply_timeout_s)
        for task in stuck:
            task.cancel()
    waiter.cancel()
    campaign.cancel()
    if node is not None:
        watchdog.cancel()
    if scheduler is not None:
        await scheduler.stop()
    if ops is not None:
        await ops.stop()
    if dashboard is not None:
        await dashboard.stop()
    if all(not t.cancelled() and t.exception() is not None for t in tasks):
        raise AdapterError("every adapter stopped with an error; see the log above")


async def _stop_on(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    stop.set()


async def _start_scheduler(
    bot: App, settings: Settings, adapters: list[Adapter], leadership: Leadership
) -> Any:
    """Proactive messages and upkeep, sending through the running adapters.

    With several workers every one starts it paused, so follow-ups found in its
    turns are stored as jobs; only the leader resumes it and runs them.
    """
    if not settings.scheduler.enabled:
        return None
    from bot.scheduler.followups import FollowUpExtractor
    from bot.scheduler.service import Scheduler

    scheduler = Scheduler(
        db=bot.db,
        engine=bot.engine,
        personas=bot.personas,
        settings=settings.scheduler,
        default_zone=settings.engine.timezone,
        senders={adapter.platform: adapter for adapter in adapters},
        upkeep=bot.upkeep,
    )
    bot.engine.observers.append(
        FollowUpExtractor(
            db=bot.db,
            personas=bot.personas,
            backends=bot.backends,
            default_zone=settings.engine.timezone,
            horizon_days=settings.scheduler.followup_horizon_days,
            on_created=scheduler.schedule_followup,
        )
    )
    bot.metrics.set_leader("scheduler", leadership.is_leader)
    if leadership.is_leader:
        await scheduler.start()
        return scheduler
    await scheduler.start(paused=True)

    async def lead() -> None:
        from datetime import UTC, datetime

        scheduler.aps.resume()
        await scheduler.sync(datetime.now(UTC))
        bot.metrics.set_leader("scheduler", True)

    leadership.on_elected.append(lead)
    return scheduler


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
