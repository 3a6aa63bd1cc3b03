"""Card macros (`{{char}}`, `{{user}}`, `{{random:a,b}}`, ...) → persona text, and back.

A card's text is data, never template code. `to_template` turns it into a persona
Jinja template in which the known macros become the matching template variables
(`{{char}}` → `{{ persona.name }}`, `{{user}}` → `{{ user.display_name }}`,
`{{time}}`, `{{date}}`, `{{weekday}}`) or filters (`{{random:a,b}}` →
`{{ ["a", "b"]|random }}`), and everything else, unknown macros and Jinja syntax
included, is escaped so it renders as written. `to_plain` does the same for text
that is not a template (example dialogues, lore): static values in place.
`from_template` undoes `to_template` for export.

Macros are matched case-insensitively, as SillyTavern does; `<USER>`, `<BOT>` and
`<CHAR>` are the V1 spellings.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MAIN_PROMPT",
    "MacroContext",
    "from_template",
    "to_lore",
    "to_plain",
    "to_template",
]

#: SillyTavern's main prompt, what `{{original}}` stands for in a card's system prompt.
DEFAULT_MAIN_PROMPT = (
    "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}."
)

#: What `{{user}}` becomes in example dialogues: a fixed name, so the examples (in the
#: static prompt prefix) are the same for everyone and vLLM's prefix cache is shared.
PLAIN_USER = "User"
#: How `{{user}}` is written in lore text: the prompt builder puts the speaker's
#: display name there each turn (`bot.personas.lorebook.macros`).
LORE_USER = "{{user}}"
#: What `{{idle_duration}}` becomes: the render context has no idle time (yet).
PLAIN_IDLE = "a while"

_MACRO = re.compile(r"\{\{([^{}]{0,2000}?)\}\}|<(USER|BOT|CHAR)>", re.IGNORECASE)
_DELIMITER = re.compile(r"\{[{%#]|\{$")
_ENDRAW = re.compile(r"endraw", re.IGNORECASE)
_ROLL = re.compile(r"^(?:\d{0,3}d)?(\d{1,6})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MacroContext:
    """What the static macros stand for: the character's name, `{{original}}`, and
    the card's own fields (`{{description}}`, `{{personality}}`, ...)."""

    name: str
    original: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def _literal(text: str) -> str:
    """`text` as template source that renders exactly `text`."""
    if not _DELIMITER.search(text):
        return text
    if not _ENDRAW.search(text):
        return "{% raw %}" + text + "{% endraw %}"
    # Every '{' that could open a tag, written as an expression.
    return re.sub(r"\{(?=[{%#]|$)", '{{ "{" }}', text)


def _options(arg: str) -> list[str]:
    # `{{random::a::b}}` (the arg then starts with ':') keeps commas and spaces;
    # `{{random:a,b}}` splits at commas.
    if arg.startswith(":"):
        return arg[1:].split("::")
    return [part.strip() for part in arg.split(",")]


def _expand(
    text: str,
    ctx: MacroContext,
    literal: Callable[[str], str],
    dynamic: Callable[[str, str], str | None],
) -> str:
    out: list[str] = []
    pending: list[str] = []  # literal text not yet written: one escape for a whole run

    def flush() -> None:
        if pending:
            out.append(literal("".join(pending)))
            pending.clear()

    pos = 0
    for match in _MACRO.finditer(text):
        pending.append(text[pos : match.start()])
        pos = match.end()
        legacy = match.group(2)
        if legacy:
            key, arg = ("user" if legacy.lower() == "user" else "char"), ""
        else:
            name, _, arg = (match.group(1) or "").strip().partition(":")
            key = name.strip().lower()
        made = dynamic(key, arg)
        if made is not None:
            flush()
            out.append(made)
            continue
        static = _static(key, arg, ctx, text, match.start())
        pending.append(static if static is not None else match.group(0))
    pending.append(text[pos:])
    flush()
    return "".join(out)


def _static(key: str, arg: str, ctx: MacroContext, text: str, at: int) -> str | None:
    if key in ("char", "charifnotgroup", "group", "name"):
        return ctx.name
    if key == "original":
        return ctx.original
    if key == "newline":
        return "\n"
    if key in ("trim", "noop") or key.startswith("//"):
        return ""
    if key == "idle_duration":
        return PLAIN_IDLE
    if key == "pick" and arg:
        options = _options(arg)
        # Stable, as SillyTavern's pick is: the same text picks the same option.
        return options[zlib.crc32(f"{at}:{text}".encode()) % len(options)]
    aliases = {
        "chardescription": "description",
        "charpersonality": "personality",
        "charscenario": "scenario",
        "mesexamples": "mes_example",
        "mesexamplesraw": "mes_example",
        "charprompt": "system_prompt",
        "charjailbreak": "post_history_instructions",
        "charinstruction": "post_history_instructions",
    }
    wanted = aliases.get(key, key)
    if not arg and wanted in ctx.fields:
        return ctx.fields[wanted]
    return None


def _template_macro(key: str, arg: str) -> str | None:
    simple = {
        "user": "user.display_name",
        "time": "time",
        "date": "date",
        "weekday": "weekday",
        "isotime": "time",
        "isodate": "date",
    }
    if key in simple and not arg:
        return "{{ " + simple[key] + " }}"
    if key == "char" and not arg:
        return "{{ persona.name }}"
    if key == "random" and arg:
        return "{{ " + json.dumps(_options(arg), ensure_ascii=False) + "|random }}"
    if key == "roll" and _ROLL.match(arg.strip()):
        sides = int(_ROLL.match(arg.strip()).group(1))  # type: ignore[union-attr]
        return "{{ range(1, " + str(max(sides, 1) + 1) + ")|random }}"
    return None


def to_template(text: str, ctx: MacroContext) -> str:
    """The card text as a persona Jinja template; nothing in it but the macros acts."""
    return _expand(text, ctx, _literal, _template_macro)


def _plain_macro(key: str, arg: str) -> str | None:
    if key == "user" and not arg:
        return PLAIN_USER
    if key == "random" and arg:
        return _options(arg)[0]
    return None


def to_plain(text: str, ctx: MacroContext) -> str:
    """The card text with the macros' static values in place (for text that is not a
    template: example dialogues); `{{user}}` is "User", `{{random:...}}` its first option."""
    return _expand(text, ctx, lambda s: s, _plain_macro)


def _lore_macro(key: str, arg: str) -> str | None:
    if key == "user" and not arg:
        return LORE_USER
    return _plain_macro(key, arg)


def to_lore(text: str, ctx: MacroContext) -> str:
    """`to_plain` for lore text, except that `{{user}}` (and `<USER>`) is kept as
    `{{user}}`, which the prompt builder fills with the speaker's name each turn."""
    return _expand(text, ctx, lambda s: s, _lore_macro)


_BACK = [
    (re.compile(r"\{\{ persona\.name \}\}"), "{{char}}"),
    (re.compile(r"\{\{ user\.display_name \}\}"), "{{user}}"),
    (re.compile(r"\{\{ (time|date|weekday) \}\}"), r"{{\1}}"),
    (re.compile(r'\{\{ "\{" \}\}'), "{"),
]
_RANDOM_BACK = re.compile(r"\{\{ (\[.*?\])\|random \}\}")
_RAW = re.compile(r"\{% raw %\}(.*?)\{% endraw %\}", re.DOTALL)


def from_template(template: str) -> str:
    """A persona template as card text: the macros `to_template` writes become card
    macros again; other template code is left as it is."""
    pieces: list[str] = []
    pos = 0
    for match in _RAW.finditer(template):
        pieces.append(_back(template[pos : match.start()]))
        pieces.append(match.group(1))
        pos = match.end()
    pieces.append(_back(template[pos:]))
    return "".join(pieces)


def _back(text: str) -> str:
    for pattern, replacement in _BACK:
        text = pattern.sub(replacement, text)

    def random(match: re.Match[str]) -> str:
        try:
            options = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
            return match.group(0)
        return "{{random::" + "::".join(options) + "}}"

    return _RANDOM_BACK.sub(random, text)
