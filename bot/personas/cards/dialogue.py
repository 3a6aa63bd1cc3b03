"""A card's `mes_example` (`<START>` blocks of `{{user}}:` / `{{char}}:` lines) as
persona example dialogues, and back."""

from __future__ import annotations

import re

from bot.personas.cards.macros import MacroContext, to_plain

__all__ = ["parse_examples", "write_examples"]

_START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)
_USER = re.compile(r"^\s*(?:\{\{user\}\}|<USER>)\s*:\s?", re.IGNORECASE)
_CHAR = re.compile(r"^\s*(?:\{\{char\}\}|<BOT>|<CHAR>)\s*:\s?", re.IGNORECASE)

Dialogue = list[dict[str, str]]


def parse_examples(text: str, ctx: MacroContext) -> list[Dialogue] | None:
    """The dialogues of `text`, or None when a block does not start with the user,
    alternate and end with the character (the persona schema's shape)."""
    named = re.compile(rf"^\s*{re.escape(ctx.name)}\s*:\s?") if ctx.name else None
    dialogues: list[Dialogue] = []
    for block in _START.split(text):
        turns: list[list[str]] = []  # [role, text]
        for line in block.split("\n"):
            user = _USER.match(line)
            char = _CHAR.match(line) or (named.match(line) if named else None)
            if user or char:
                role = "user" if user else "assistant"
                body = line[(user or char).end() :]  # type: ignore[union-attr]
                if turns and turns[-1][0] == role:
                    turns[-1][1] += "\n" + body
                else:
                    turns.append([role, body])
            elif turns:
                turns[-1][1] += "\n" + line
            elif line.strip():
                return None  # text before any speaker
        if not turns:
            continue
        roles = [role for role, _ in turns]
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
        if roles != expected or roles[-1] != "assistant" or len(roles) < 2:
            return None
        dialogue = [{role: to_plain(body.strip(), ctx)} for role, body in turns]
        if any(not next(iter(turn.values())) for turn in dialogue):
            return None
        dialogues.append(dialogue)
    return dialogues


def write_examples(dialogues: list[Dialogue]) -> str:
    """Dialogues as a card's `mes_example`."""
    blocks = []
    for dialogue in dialogues:
        lines = ["<START>"]
        for turn in dialogue:
            ((role, body),) = turn.items()
            lines.append(("{{user}}: " if role == "user" else "{{char}}: ") + body)
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
