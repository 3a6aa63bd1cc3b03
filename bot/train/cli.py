"""`bot train`: wiring from command-line options to `train_adapter` and the gate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from bot.config import load_settings
from bot.errors import UsageError

__all__ = ["train_app"]

train_app = typer.Typer(help="Train a persona's LoRA adapter on its export, then gate it.")


@train_app.callback(invoke_without_command=True)
def train(
    persona: Annotated[str, typer.Option(help="The persona whose records are trained on.")],
    data: Annotated[Path, typer.Option(help="The export directory (`bot export --out`).")],
    base_model: Annotated[
        str, typer.Option("--base-model", help="Hub id or local directory of the base model.")
    ],
    out: Annotated[Path, typer.Option(help="Where the adapter and train_report.json go.")],
    method: Annotated[
        str | None, typer.Option(help="sft or dpo (default: finetune.method).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out.")
    ] = False,
    gate: Annotated[
        bool, typer.Option("--gate/--no-gate", help="Run the gate after training.")
    ] = True,
    current_adapter: Annotated[
        Path | None,
        typer.Option(help="The adapter serving now (the gate compares with it; default: base)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="BOT_CONFIG", help="TOML config file (default ./bot.toml)."
        ),
    ] = None,
) -> None:
    """Train a LoRA adapter (peft + TRL) on one persona's export; exit 1 when the gate fails."""
    from bot.logs import configure_logging
    from bot.train.train import TrainJob, train_adapter

    if method not in (None, "sft", "dpo"):
        raise UsageError(f"--method {method!r}: expected 'sft' or 'dpo'")
    settings = load_settings(config)
    configure_logging(level="WARNING", fmt=settings.logging.format)
    loaded = None
    if gate:  # the persona's file holds the regression set: find it before training
        from bot.personas import PersonaRegistry

        registry = PersonaRegistry(settings.personas.dirs)
        asyncio.run(registry.load_all())
        loaded = registry.get(persona)
    job = TrainJob(
        persona=persona,
        data=data,
        base_model=base_model,
        out=out,
        settings=settings.finetune,
        method="dpo" if method == "dpo" else "sft" if method == "sft" else None,
        resume=resume,
    )
    report = train_adapter(job)
    typer.echo(
        f"adapter in {out}: validation loss {report['eval_loss_before']:.4f} -> "
        f"{report['eval_loss_after']:.4f}, {report['steps']} step(s) in {report['time_s']} s "
        f"({report['tokens_per_s']} tokens/s on {report['device']})"
    )
    if loaded is None:
        typer.echo("gate not run (--no-gate): the adapter cannot be deployed until it is")
        return
    from bot.train.pipeline import gate_adapter

    result = asyncio.run(
        gate_adapter(
            out,
            loaded.persona,
            base_model=base_model,
            settings=settings,
            current_adapter=current_adapter,
        )
    )
    for check in result.checks:
        typer.echo(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    if not result.passed:
        typer.echo("gate failed: the adapter may not serve; the current model stays", err=True)
        raise typer.Exit(1)
    typer.echo("gate passed")
