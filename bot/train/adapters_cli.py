"""`bot adapters deploy|list|promote|rollback|compare|reload`: serve LoRA adapters.

`deploy` checks an adapter (files, gate, base model, rank), loads it into a running
vLLM and registers it as the persona's canary; the running bot routes that share of
the persona's conversations to it within seconds (bot/train/canary.py). `promote`
makes a canary serve everyone; `rollback` takes the newest change back; `compare`
shows the canary's feedback against the current adapter's and, with `--apply`, rolls
back the canaries that are worse (the running bot does this on its own every
`finetune.adapter_check_s`). `reload` loads again what a restarted vLLM lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bot.config import Settings, load_settings, merge_overrides
from bot.errors import UsageError

__all__ = ["adapters_app"]

T = TypeVar("T")

adapters_app = typer.Typer(
    no_args_is_help=True, help="Serve LoRA adapters: deploy as canary, promote, roll back."
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
]
DbOption = Annotated[Path | None, typer.Option(help="SQLite file (default from config).")]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="vLLM's OpenAI URL (default llm.base_url).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines instead of text.")]


def _settings(config: Path | None, db: Path | None) -> Settings:
    if db is not None and any(c in str(db) for c in "?#"):
        raise UsageError(f"--db {str(db)!r}: a file name with '?' or '#' is not supported")
    url = f"sqlite:///{db}" if db is not None else None
    return load_settings(config, merge_overrides({"database": {"url": url}}))


def _with_registry(
    settings: Settings,
    action: Callable[[Any], Awaitable[T]],
    *,
    must_exist: bool = True,
) -> T:
    from bot.db import Database
    from bot.logs import configure_logging
    from bot.train.registry import AdapterRegistry

    configure_logging(level="WARNING", fmt=settings.logging.format)  # stdout is the answer

    async def main() -> T:
        db = await asyncio.to_thread(
            Database.open,
            settings.database.url,
            busy_timeout_ms=settings.database.busy_timeout_ms,
            migrate=settings.database.migrate_on_start,
            must_exist=must_exist,
            pool=settings.database.pool(),
        )
        try:
            return await action(AdapterRegistry(db))
        finally:
            await db.aclose()

    return asyncio.run(main())


def _admin(settings: Settings, base_url: str | None) -> Any:
    from bot.train.deploy import VLLMAdmin

    key = settings.llm.resolved_api_key()
    return VLLMAdmin(
        base_url or settings.llm.base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.llm.timeout_s,
    )


def _row(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "persona": record.persona_id,
        "status": record.status.value,
        "canary_share": record.canary_share,
        "sha256": record.sha256,
        "base_model": record.base_model,
        "rank": record.rank,
        "path": record.path,
        "forced": record.forced,
        "reason": record.reason,
        "created_at": record.created_at.isoformat(),
        "promoted_at": record.promoted_at.isoformat() if record.promoted_at else None,
        "retired_at": record.retired_at.isoformat() if record.retired_at else None,
        "gate_passed": (record.report.get("gate") or {}).get("passed")
        if isinstance(record.report.get("gate"), dict)
        else None,
    }


def _echo(text: str) -> None:
    from bot.cli_errors import printable

    typer.echo(printable(text))


@adapters_app.command("deploy")
def adapters_deploy(
    persona: Annotated[str, typer.Option(help="The persona the adapter voices.")],
    adapter: Annotated[Path, typer.Option(help="The adapter directory (from `bot train`).")],
    base_url: BaseUrlOption = None,
    canary: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of conversations (finetune.canary_share)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Served name (default PERSONA-HASH8).")] = None,
    model: Annotated[
        str | None, typer.Option(help="The served base model, when vLLM serves several.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Deploy past a failed or missing gate (recorded).")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Load the adapter into vLLM and send a share of the persona's conversations to it."""
    from bot.train.deploy import deploy

    settings = _settings(config, db)
    share = settings.finetune.canary_share if canary is None else canary

    async def action(registry: Any) -> Any:
        async with _admin(settings, base_url) as admin:
            return await deploy(
                registry,
                admin,
                persona_id=persona,
                adapter_dir=adapter,
                canary_share=share,
                name=name,
                model=model,
                max_rank=settings.finetune.max_lora_rank,
                force=force,
            )

    done = _with_registry(settings, action)
    record = done.record
    _echo(
        f"deployed {record.name} for {record.persona_id} on {done.served_base}: "
        f"{record.status.value}, {record.canary_share:.0%} of conversations "
        f"(sha256 {record.sha256[:12]}, rank {record.rank})"
    )
    if done.gate is not None:
        _echo(f"warning: forced past the gate: {done.gate} (recorded on the adapter)")


@adapters_app.command("list")
def adapters_list(
    persona: Annotated[str | None, typer.Option(help="Only this persona's adapters.")] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Every registered adapter, newest first, with its status and share."""
    settings = _settings(config, db)

    async def action(registry: Any) -> Any:
        return await registry.all(persona)

    records = _with_registry(settings, action)
    if as_json:
        for record in records:
            typer.echo(json.dumps(_row(record), ensure_ascii=False))
        return
    if not records:
        typer.echo("no adapters")
        return
    for r in records:
        share = f"{r.canary_share:>4.0%}" if r.status.value == "canary" else "    "
        line = (
            f"{r.name:<32} {r.persona_id:<16} {r.status.value:<11} {share} "
            f"{r.created_at:%Y-%m-%d %H:%M}  {r.sha256[:12]}"
        )
        if r.forced:
            line += "  FORCED"
        if r.reason:
            line += f"  {' '.join(r.reason.split())[:100]}"
        _echo(line)


@adapters_app.command("promote")
def adapters_promote(
    name: Annotated[str, typer.Argument(help="The canary to serve every conversation.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Make a canary the persona's serving adapter (the one before is retired)."""
    settings = _settings(config, db)

    async def action(registry: Any) -> Any:
        return await registry.promote(name)

    record = _with_registry(settings, action)
    _echo(f"{record.name} now serves every conversation of {record.persona_id}")


@adapters_app.command("rollback")
def adapters_rollback(
    persona: Annotated[str, typer.Option(help="The persona whose newest adapter goes.")],
    unload: Annotated[
        bool, typer.Option("--unload", help="Also unload it from vLLM (--base-url).")
    ] = False,
    base_url: BaseUrlOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Take back the persona's canary (or, with none, its serving adapter: the one
    before serves again); its conversations go back within seconds."""
    from bot.errors import BackendError
    from bot.train.registry import check_persona_id

    check_persona_id(persona)
    settings = _settings(config, db)

    async def action(registry: Any) -> Any:
        gone, now_serving = await registry.rollback(persona)
        warning = None
        if unload:
            try:
                async with _admin(settings, base_url) as admin:
                    await admin.unload(gone.name)
            except BackendError as exc:
                warning = f"warning: rolled back, but not unloaded: {exc}"
        return gone, now_serving, warning

    gone, now_serving, warning = _with_registry(settings, action)
    serving = now_serving.name if now_serving is not None else "the base model"
    _echo(f"rolled back {gone.name}; {persona} is answered by {serving}")
    if warning:
        _echo(warning)


@adapters_app.command("compare")
def adapters_compare(
    apply: Annotated[
        bool, typer.Option("--apply", help="Roll back every canary that is worse.")
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Each canary's feedback (👍, 👎, regenerations) against the current adapter's,
    with the interval for the difference in bad-feedback share."""
    from bot.train.canary import check_canaries, compare_canary

    settings = _settings(config, db)
    ft = settings.finetune

    async def action(registry: Any) -> Any:
        if apply:
            return await check_canaries(
                registry,
                margin=ft.rollback_margin,
                min_feedback=ft.min_feedback,
                confidence=ft.feedback_confidence,
            )
        return [
            await compare_canary(
                registry.db,
                pair.canary,
                margin=ft.rollback_margin,
                min_feedback=ft.min_feedback,
                confidence=ft.feedback_confidence,
            )
            for pair in (await registry.active()).values()
            if pair.canary is not None
        ]

    verdicts = _with_registry(settings, action)
    if as_json:
        for verdict in verdicts:
            typer.echo(json.dumps(verdict.as_dict(), ensure_ascii=False))
        return
    if not verdicts:
        typer.echo("no canaries")
    for v in verdicts:
        c, r = v.canary_counts, v.current_counts
        _echo(
            f"{v.canary} ({v.persona_id}): canary {c.replies} replies, {c.ups} 👍, "
            f"{c.downs} 👎, {c.regenerated} regenerated; current {r.replies} replies, "
            f"{r.ups} 👍, {r.downs} 👎, {r.regenerated} regenerated"
        )
        _echo(f"  {v.reason}" + (" (applied)" if v.rollback and apply else ""))


@adapters_app.command("reload")
def adapters_reload(
    base_url: BaseUrlOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Load again every canary and serving adapter that vLLM does not serve (after a
    restart of vLLM; the running bot does this on its own)."""
    from bot.train.deploy import ensure_loaded

    settings = _settings(config, db)

    async def action(registry: Any) -> Any:
        async with _admin(settings, base_url) as admin:
            return await ensure_loaded(registry, admin)

    result = _with_registry(settings, action)
    _echo(f"loaded again: {', '.join(result.loaded) or 'none needed'}")
    for name, why in result.failed.items():
        _echo(f"failed: {name}: {why}")
    if result.failed:
        raise typer.Exit(3)
