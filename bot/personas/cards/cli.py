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
    out: Annotated[
        Path, typer.Option("--out", help="card.png or card.json (ccv3), card.charx (charx).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="ccv3 (a PNG or JSON card) or charx (a zip).")
    ] = "ccv3",
    personas: Annotated[
        list[Path] | None, typer.Option(help="Persona files or directories (default: config).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file.")
    ] = None,
) -> None:
    """Export a persona as a Character Card V3: a PNG with ccv3 and chara chunks, a
    JSON file, or a CHARX zip with card.json, the avatar and the assets."""
    from bot.config import load_settings
    from bot.personas import PersonaFileError, find_persona_files, load_persona
    from bot.personas.cards.export import export_card

    if fmt not in ("ccv3", "charx"):
        raise UsageError(f"--format {fmt!r}: expected 'ccv3' or 'charx'")
    suffix = out.suffix.lower()
    if fmt == "ccv3" and suffix not in (".png", ".json"):
        raise UsageError(f"--out {str(out)!r}: name a .png or .json file (or --format charx)")
    if fmt == "charx" and suffix != ".charx":
        raise UsageError(f"--out {str(out)!r}: name a .charx file for --format charx")
    dirs = personas or load_settings(config).personas.dirs
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
