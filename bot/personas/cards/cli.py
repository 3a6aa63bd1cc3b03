"""`bot personas import` and `bot personas export`: wiring for bot/personas/cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bot.errors import UsageError

__all__ = ["export_command", "import_command"]


def import_command(
    files: Annotated[list[Path], typer.Argument(help="Card files: PNG, JSON, CHARX; lorebooks.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the persona files.")],
    force: Annotated[bool, typer.Option(help="Replace files that already exist.")] = False,
) -> None:
    """Import character cards (V1-V3 PNG, JSON, CHARX) and lorebooks (World Info,
    lorebook_v3) as persona and world files; all of them or, on any error, none."""
    from bot.personas.cards.importer import import_files

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r}: not a directory")
    for result in import_files(files, out, force=force):
        typer.echo(f"{result.source}: {result.kind} {result.id} -> {out / result.files[-1]}")


def export_command(
    persona_id: Annotated[str, typer.Argument(metavar="ID", help="The persona's id.")],
    out: Annotated[Path, typer.Option("--out", help="card.png or card.json.")],
    fmt: Annotated[str, typer.Option("--format", help="ccv3 (the only one).")] = "ccv3",
    personas: Annotated[
        list[Path] | None, typer.Option(help="Persona files or directories (default: config).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file.")
    ] = None,
) -> None:
    """Export a persona as a Character Card V3 (PNG with ccv3 and chara chunks, or JSON)."""
    from bot.config import load_settings
    from bot.personas import PersonaFileError, find_persona_files, load_persona
    from bot.personas.cards.export import export_card

    if fmt != "ccv3":
        raise UsageError(f"--format {fmt!r}: expected 'ccv3'")
    dirs = personas or load_settings(config).personas.dirs
    if out.suffix.lower() not in (".png", ".json"):
        raise UsageError(f"--out {str(out)!r}: name a .png or .json file")
    files, _ = find_persona_files(dirs)
    for file in files:
        try:
            loaded = load_persona(file)
        except PersonaFileError:
            continue  # `bot personas check` reports those
        if loaded.persona.id == persona_id:
            typer.echo(f"wrote {export_card(loaded, out)}")
            return
    raise UsageError(f"no persona {persona_id!r} loads from {', '.join(map(str, dirs))}")
