"""`bot personas preview`: the exact prompt a persona's model would get for a message.

Built through the engine's own pieces, nothing generated: the persona's system text
(`SystemLayout`, as the engine composes it), the lore of the turn (`lore_turn`, the call
the engine makes), and the placement and budget (`turn_prompt`, the engine's builder).
What a live turn adds that a preview cannot know is left out and said so: recalled
memories and the safety stage's per-turn guidance (both need a conversation).

The `--history` file is someone's export or a hand-written test: hostile until read.
It is bounded in size and messages, must be UTF-8 JSON (an array, or one object per
line), and every problem is one clear line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from bot.cli_errors import printable
from bot.config import load_settings
from bot.errors import PersonaError, UsageError
from bot.llm.base import TokenCounter
from bot.llm.tokens import fit_window, load_token_counter
from bot.personas.loader import LoadedPersona
from bot.personas.lorebook import LoreBook, LoreResult
from bot.personas.lorebook.timers import lore_turn
from bot.personas.registry import PersonaRegistry
from bot.personas.render import PromptContext, render_system_prompt
from bot.prompt import (
    AssembledPrompt,
    PromptBuilder,
    PromptTurn,
    SystemLayout,
    speaker_label,
    turn_prompt,
)
from bot.text import clean_text

__all__ = [
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_MESSAGES",
    "HistoryMessage",
    "Preview",
    "build_preview",
    "preview_command",
    "read_history",
]

#: A --history file larger than this is refused unread.
MAX_HISTORY_BYTES = 4 * 1024 * 1024
#: Most messages a --history file may hold.
MAX_HISTORY_MESSAGES = 2000
#: Longest one history message may be (characters).
MAX_MESSAGE_CHARS = 100_000


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One message of a --history file."""

    role: Literal["user", "assistant"]
    text: str
    name: str = ""


def read_history(path: Path) -> list[HistoryMessage]:
    """The messages of a history file: a JSON array of {role, content|text, name?},
    or JSON Lines of the same. Raises `UsageError` naming the file and the problem."""
    where = f"--history {path}"
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_HISTORY_BYTES + 1)
    except IsADirectoryError:
        raise UsageError(f"{where}: is a directory, not a file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_HISTORY_BYTES:
        raise UsageError(f"{where}: larger than {MAX_HISTORY_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{where}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    items = _json_items(text, where)
    if len(items) > MAX_HISTORY_MESSAGES:
        raise UsageError(f"{where}: more than {MAX_HISTORY_MESSAGES} messages")
    return [_message(item, i + 1, where) for i, item in enumerate(items)]


def _json_items(text: str, where: str) -> list[Any]:
    stripped = text.strip()
    if not stripped:
        return []
    try:
        if stripped.startswith("["):
            value = json.loads(stripped)
            if not isinstance(value, list):  # pragma: no cover - '[' starts an array
                raise UsageError(f"{where}: expected a JSON array of messages")
            return value
        return [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "write an array of {\"role\": \"user\", \"content\": \"...\"} or one per line"
        ) from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply") from None


def _message(item: Any, number: int, where: str) -> HistoryMessage:
    at = f"{where}: message {number}"
    if not isinstance(item, dict):
        raise UsageError(f"{at}: expected an object with role and content")
    role = item.get("role")
    if role not in ("user", "assistant"):
        raise UsageError(f"{at}: role must be 'user' or 'assistant' (got {role!r:.40})")
    content = item.get("content", item.get("text"))
    if not isinstance(content, str):
        raise UsageError(f"{at}: content must be text")
    if len(content) > MAX_MESSAGE_CHARS:
        raise UsageError(f"{at}: longer than {MAX_MESSAGE_CHARS} characters")
    name = item.get("name", "")
    if not isinstance(name, str):
        raise UsageError(f"{at}: name must be text")
    return HistoryMessage(role, clean_text(content), name[:200])


@dataclass(frozen=True, slots=True)
class Preview:
    """A built prompt with what went into it."""

    loaded: LoadedPersona
    prompt: AssembledPrompt
    lore: LoreResult
    budget_tokens: int
    lore_budget: int
    tokens: TokenCounter
    tokenizer: str

    def as_json(self) -> dict[str, Any]:
        """The preview as a JSON-able mapping (`--format json`)."""
        count = self.tokens.count_text
        return {
            "persona": self.loaded.persona.id,
            "tokenizer": self.tokenizer,
            "prompt_tokens": self.prompt.prompt_tokens,
            "budget_tokens": self.budget_tokens,
            "history_used": self.prompt.history_used,
            "history_dropped": self.prompt.history_dropped,
            "messages": [
                {"role": m.role, "content": m.content, "tokens": count(m.content)}
                for m in self.prompt.messages
            ],
            "lore": {
                "tokens": self.lore.tokens,
                "budget_tokens": self.lore_budget,
                "fired": [
                    {
                        "entry": f.label,
                        "key": f.key,
                        "position": f.position,
                        "depth": f.depth,
                        "why": f.reason,
                        "tokens": f.tokens,
                    }
                    for f in self.lore.fired
                ],
                "left_out": list(self.lore.left_out),
                "skipped": [{"entry": e, "why": w} for e, w in self.lore.skipped],
                "parts": {
                    "before_char": count(self.lore.before) if self.lore.before else 0,
                    "after_char": count(self.lore.after) if self.lore.after else 0,
                    "at_depth": {str(n.depth): count(n.text) for n in self.lore.notes},
                },
            },
            "not_shown": "recalled memories and safety guidance (they need a conversation)",
        }

    def as_text(self) -> str:
        """The preview for a terminal: messages with roles, lore fired and why, counts."""
        count = self.tokens.count_text
        persona = self.loaded.persona
        out = [
            f"persona {persona.id} ({persona.name}) · tokenizer {self.tokenizer} · "
            f"prompt {self.prompt.prompt_tokens} of {self.budget_tokens} tokens · history "
            f"{self.prompt.history_used} shown, {self.prompt.history_dropped} dropped",
            "",
        ]
        for i, message in enumerate(self.prompt.messages):
            out.append(f"── [{i}] {message.role} · {count(message.content)} tokens ──")
            out.append(message.content)
            out.append("")
        lore = self.lore
        out.append(f"lore · {lore.tokens} of {self.lore_budget} tokens")
        if not lore.fired and not lore.left_out and not lore.skipped:
            out.append("  (no entry fired)")
        for f in lore.fired:
            where = f"at_depth {f.depth}" if f.position == "at_depth" else f.position
            out.append(f"  fired  {f.label} · {where} · {f.tokens} tokens · {f.reason}")
        out.extend(f"  left out (budget)  {label}" for label in lore.left_out)
        out.extend(f"  skipped  {label} · {why}" for label, why in lore.skipped)
        for name, text in (("before_char", lore.before), ("after_char", lore.after)):
            if text:
                out.append(f"  part {name}: {count(text)} tokens")
        out.extend(f"  part at_depth {n.depth}: {count(n.text)} tokens" for n in lore.notes)
        out.append("not shown: recalled memories and safety guidance (they need a conversation)")
        return printable("\n".join(out))


def build_preview(
    loaded: LoadedPersona,
    message: str,
    history: list[HistoryMessage],
    tokens: TokenCounter,
    *,
    user: str = "friend",
    context_window: int = 4096,
    tokenizer: str = "",
    now: datetime | None = None,
    direct: bool = True,
    platform: str = "console",
) -> Preview:
    """The prompt of a turn answering `message` after `history`, as the engine builds
    it (no memories, no generation)."""
    persona = loaded.persona
    ctx = PromptContext(
        user_display_name=speaker_label(user, fallback="friend"),
        user_id="preview",
        platform=platform,
        now=now or datetime.now(UTC),
        timezone="UTC",
        is_direct=direct,
    )
    try:
        layout = SystemLayout.for_persona(persona)
    except PersonaError:
        from bot.prompt import persona_guidance

        layout = SystemLayout(static_head="", guidance=persona_guidance(persona))
    system = layout.compose(render_system_prompt(persona, ctx))
    text = clean_text(message)
    book = LoreBook(persona.lore, loaded.worlds)
    lore = (
        lore_turn(book, text, [h.text for h in history], tokens, len(history) + 1, {})
        if book.active
        else LoreResult()
    )
    window = fit_window(persona.model.context_window or context_window, tokens)
    budget = max(64, window - persona.sampling.max_tokens)
    prompt = turn_prompt(
        PromptBuilder(tokens),
        system=system,
        lore=lore,
        dynamic=(),
        history=[PromptTurn(h.role, h.text, speaker_label(h.name)) for h in history],
        new_message=PromptTurn("user", text, speaker_label(user)),
        budget_tokens=budget,
        group=not direct,
        user_name=user,
        persona_name=persona.name,
        now=ctx.now,
    )
    return Preview(loaded, prompt, lore, budget, persona.lore.budget_tokens, tokens, tokenizer)


def preview_command(
    persona_id: Annotated[str, typer.Argument(help="The persona's id.")],
    message: Annotated[str, typer.Option("--message", "-m", help="The new message.")],
    history: Annotated[
        Path | None,
        typer.Option(help="JSON (array or lines) of {role, content, name?}: the history."),
    ] = None,
    user: Annotated[str, typer.Option(help="The speaker's display name.")] = "friend",
    fmt: Annotated[
        str, typer.Option("--format", help="text or json.", case_sensitive=False)
    ] = "text",
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer directory or id for counts; default: llm.tokenizer, "
        "else llm.model."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
    ] = None,
) -> None:
    """Print the exact prompt the model would get for a message.

    The messages with their roles, the lore entries that fired and why, and the
    tokens of each part; nothing is generated."""
    from bot.logs import configure_logging

    if fmt.lower() not in ("text", "json"):
        raise UsageError(f"--format must be text or json (got {fmt!r:.40})")
    settings = load_settings(config)
    configure_logging(level="ERROR", fmt=settings.logging.format)
    past = read_history(history) if history is not None else []
    registry = PersonaRegistry(settings.personas.dirs)
    problems = asyncio.run(registry.load_all())
    if persona_id not in registry:
        found = [p for p in problems if persona_id in str(p.path)]
        detail = f": {found[0]}" if found else f" (known: {', '.join(sorted(registry.ids()))})"
        raise UsageError(f"no persona {persona_id!r} loads{detail}")
    name = tokenizer or settings.llm.tokenizer or settings.llm.model
    counter = load_token_counter(name)
    shown = name if type(counter).__name__ != "ApproxTokenCounter" else "approximate"
    preview = build_preview(
        registry.get(persona_id),
        message,
        past,
        counter,
        user=user,
        context_window=settings.llm.context_window,
        tokenizer=shown,
    )
    if fmt.lower() == "json":
        typer.echo(json.dumps(preview.as_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo(preview.as_text())
