"""Slash commands, the same on every platform: `/start`, `/help`, `/persona`,
`/memory`, `/forget`, `/optout`, `/optin`, `/timezone`, and for moderators
`/reload`, `/persona upload`, and `/mute` `/unmute` `/ban` `/unban` `/exempt`
`/unexempt` (bot/safety/limits.py: per persona or for all, every one audited) and
`/audit` to read that record.

Adapters parse the platform's command event into a name, an argument string and a
`CommandContext`. An adapter with an outbox (Telegram, whose commands are inbox
events) calls `Commands.execute` and hands its `CommandReply` to
`bot.inbox.outbox.deliver_command`, which stores the reply with the event's done
mark and sends it from there; one that answers in place (a Discord interaction,
the console) sends back the text `Commands.run` returns. Nothing here knows which
platform it serves.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.commands_memory import MemoryControl, MemoryItem, StoreMemoryControl
from bot.engine import PersonaEngine
from bot.errors import PersonaError, PersonaNotFound
from bot.inbox.worker import current_event
from bot.messages import Actor, Outgoing, Scope
from bot.people import People, place_key
from bot.personas import PersonaFileError, PersonaRegistry, parse_persona
from bot.safety.limits import LimitStore
from bot.text import clean_text

__all__ = [
    "CommandContext",
    "CommandReply",
    "Commands",
    "MemoryControl",
    "MemoryItem",
    "StoreMemoryControl",
]

log = structlog.get_logger("bot.commands")

#: Moderators' commands about a person (bot/safety/limits.py `ACTIONS`).
MODERATOR_ACTIONS = ("mute", "unmute", "ban", "unban", "exempt", "unexempt")

HELP = """\
/persona: who you are talking with (/persona ID to switch, where allowed)
/memory: what I remember about you
/forget ID or /forget all: delete it
/optout: keep your messages out of training data and stop messages I send first
/optin: undo /optout
/timezone Europe/Berlin: your time zone, for greetings at the right hour"""


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who runs a command, where, and what they may do."""

    scope: Scope
    actor: Actor
    is_moderator: bool = False
    allow_switch: bool = False
    #: A file sent with the command (the YAML of `/persona upload`), as text.
    attachment_text: str | None = None
    attachment_name: str | None = None


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a command answers: its text and, for `/start`, the persona's greeting,
    rendered but not yet stored (its `message_id` is None), to leave before the text."""

    text: str
    greeting: Outgoing | None = None


class Commands:
    """Runs commands; every answer is plain text (and `/start` a greeting) for the
    adapter to send."""

    names: Sequence[str] = (
        "start",
        "help",
        "persona",
        "memory",
        "forget",
        "optout",
        "optin",
        "timezone",
        "reload",
        *MODERATOR_ACTIONS,
        "audit",
    )

    def __init__(
        self,
        *,
        engine: PersonaEngine,
        people: People,
        personas: PersonaRegistry,
        memory: MemoryControl | None = None,
        limits: LimitStore | None = None,
    ) -> None:
        self.engine = engine
        self.people = people
        self.personas = personas
        self.memory = memory
        #: Mutes, bans and exemptions (the same tables the limits check reads).
        self.limits = limits if limits is not None else LimitStore(people.db)

    async def run(self, name: str, args: str, ctx: CommandContext) -> str:
        """The answer to `/name args` as one text, for a caller that answers in place
        and has no outbox: a greeting comes first in it and is stored as delivered
        with it (the caller hands the text to the platform at once)."""
        reply = await self.execute(name, args, ctx)
        if reply.greeting is None:
            return reply.text
        from bot.inbox.outbox import store_replies  # the inbox imports the engine

        await store_replies(self.engine, ctx.actor, [(reply.greeting, "greeting")], delivered=True)
        return f"{reply.greeting.text}\n\n{reply.text}"

    async def execute(self, name: str, args: str, ctx: CommandContext) -> CommandReply:
        """Run `/name args`; its reply is not stored or sent here (see the module)."""
        if name.lower().lstrip("/") in MODERATOR_ACTIONS:
            log.info("command", command=name, user=ctx.actor.id, platform=ctx.scope.platform)
            return CommandReply(await self._moderate(name.lower().lstrip("/"), args.strip(), ctx))
        handler = getattr(self, f"_cmd_{name.lower().lstrip('/')}", None)
        if handler is None:
            return CommandReply(f"Unknown command /{name}.\n{HELP}")
        log.info("command", command=name, user=ctx.actor.id, platform=ctx.scope.platform)
        answer: str | CommandReply = await handler(args.strip(), ctx)
        return answer if isinstance(answer, CommandReply) else CommandReply(answer)

    # -- everyone -----------------------------------------------------------------------

    async def _cmd_start(self, args: str, ctx: CommandContext) -> CommandReply:
        loaded = self.personas.get(ctx.scope.persona)
        await self.people.mark_reachable(ctx.scope.platform, ctx.actor.id)
        # Rendered only: stored by whoever stores the reply, in the same commit, so a
        # crash before that commit leaves no greeting behind to be sent twice.
        greeting = await self.engine.greeting(ctx.scope, ctx.actor.display_name, store=False)
        lines = []
        safety = loaded.persona.safety
        if safety.ai_disclosure:
            lines.append(safety.ai_disclosure)
        lines.append(
            "What I keep: our messages and what I learn about you from them, so I can "
            "remember you. See it with /memory, delete it with /forget all. Messages may "
            "help train future versions of me; /optout keeps yours out and stops messages "
            "I send first."
        )
        return CommandReply("\n\n".join(lines), greeting)

    async def _cmd_help(self, args: str, ctx: CommandContext) -> str:
        return HELP

    async def _cmd_persona(self, args: str, ctx: CommandContext) -> str:
        if not args:
            persona = self.personas.get(ctx.scope.persona).persona
            others = ", ".join(sorted(i for i in self.personas.ids() if i != persona.id))
            text = f"You are talking with {persona.name} ({persona.id}): {persona.description}"
            return f"{text}\nOthers: {others}" if others else text
        if args.split()[0] == "upload":
            return await self._upload(ctx)
        if not (ctx.allow_switch or ctx.is_moderator):
            return "Switching personas is not allowed here."
        target = args.split()[0]
        try:
            persona = self.personas.get(target).persona
        except PersonaNotFound:
            return f"No persona {target!r}. Available: {', '.join(sorted(self.personas.ids()))}"
        place = place_key(ctx.scope.platform, ctx.scope.space, ctx.scope.channel)
        await self.people.bind_persona(
            place, persona.id, platform=ctx.scope.platform, by_user=ctx.actor.id
        )
        return f"{persona.name} is here now."

    async def _cmd_memory(self, args: str, ctx: CommandContext) -> str:
        if self.memory is None:
            return "I keep our conversation history; long-term memories are not enabled here."
        items = await self.memory.list_memories(ctx.scope.platform, ctx.actor.id, ctx.scope.persona)
        if not items:
            return "I don't remember anything particular about you yet."
        lines = [f"[{i.id}] {i.at:%Y-%m-%d}: {i.text}" for i in items[:50]]
        more = f"\n…and {len(items) - 50} more." if len(items) > 50 else ""
        return (
            "What I remember about you:\n" + "\n".join(lines) + more + "\n/forget ID deletes one."
        )

    async def _cmd_forget(self, args: str, ctx: CommandContext) -> str:
        if not args:
            return "Say /forget ID (from /memory) or /forget all."
        item = "all" if args.lower() == "all" else args.split()[0]
        if self.memory is None:
            if item != "all":
                return "There are no separate memories to forget; /forget all deletes our messages."
            count = await self.people.forget_messages(ctx.scope.platform, ctx.actor.id)
            return f"Done: deleted {count} stored messages."
        try:
            count = await self.memory.forget(
                ctx.scope.platform, ctx.actor.id, ctx.scope.persona, item
            )
        except KeyError:
            return f"I have no memory {item!r} of yours."
        return (
            "Done: I forgot everything about you." if item == "all" else f"Forgot {count} memory."
        )

    async def _cmd_optout(self, args: str, ctx: CommandContext) -> str:
        await self.people.set_opted_out(ctx.scope.platform, ctx.actor.id, True)
        return (
            "Opted out: your messages stay out of training data and I won't message you "
            "first. I still answer when you write. /optin undoes this."
        )

    async def _cmd_optin(self, args: str, ctx: CommandContext) -> str:
        await self.people.set_opted_out(ctx.scope.platform, ctx.actor.id, False)
        return "Opted in again. Thank you!"

    async def _cmd_timezone(self, args: str, ctx: CommandContext) -> str:
        if not args:
            return "Say /timezone followed by a zone such as Europe/Berlin or Asia/Shanghai."
        try:
            ZoneInfo(args.split()[0])
        except (ZoneInfoNotFoundError, ValueError):
            return f"{args.split()[0]!r} is not a time zone I know; try Europe/Berlin."
        await self.people.set_timezone(ctx.scope.platform, ctx.actor.id, args.split()[0])
        return f"Time zone set to {args.split()[0]}."

    # -- moderators ---------------------------------------------------------------------

    async def _cmd_reload(self, args: str, ctx: CommandContext) -> str:
        if not ctx.is_moderator:
            return "Only moderators can reload personas."
        problems = await self.personas.load_all()
        if problems:
            shown = "\n".join(str(p) for p in problems[:20])
            return (
                f"Reloaded with {len(problems)} problem(s); the last good versions serve:\n{shown}"
            )
        return f"Reloaded {len(self.personas)} persona(s)."

    async def _upload(self, ctx: CommandContext) -> str:
        if not ctx.is_moderator:
            return "Only moderators can upload personas."
        if ctx.attachment_text is None:
            return "Attach the persona's YAML file to /persona upload."
        name = Path(ctx.attachment_name or "upload.yaml").name
        try:
            # In a thread: validation trial-renders the templates (bounded, but CPU).
            loaded = await asyncio.to_thread(
                parse_persona, ctx.attachment_text.encode("utf-8"), Path(name)
            )
        except PersonaFileError as exc:
            return "The persona has problems:\n" + "\n".join(str(p) for p in exc.problems[:30])
        persona_id = loaded.persona.id
        target = self._file_for(persona_id)
        await asyncio.to_thread(_write_atomically, target, ctx.attachment_text)
        problems = await self.personas.reload(target)
        if problems:
            return "Saved, but it did not load:\n" + "\n".join(str(p) for p in problems[:30])
        serving = self.personas.get(persona_id)
        return f"{serving.persona.name} ({persona_id}) is now version {serving.content_hash[:12]}."

    async def _cmd_audit(self, args: str, ctx: CommandContext) -> str:
        """`/audit [USER]`: the last moderator actions (about one person)."""
        if not ctx.is_moderator:
            return "Only moderators can /audit."
        target = None
        if args:
            found = _MENTION.match(args.split()[0])
            if found is None:
                return "Say /audit, or /audit USER (a numeric id or a mention)."
            target = found.group(1) or found.group(2)
        entries = await self.limits.audit(ctx.scope.platform, target, limit=20)
        if not entries:
            return "No moderator actions recorded" + (f" for {target}." if target else ".")
        lines = [
            f"{e.at:%Y-%m-%d %H:%M} {e.moderator}: {e.action} {e.target} "
            f"({'every persona' if e.persona == '*' else e.persona})"
            + (f": {e.reason}" if e.reason else "")
            for e in entries
        ]
        return "Moderator actions, newest first:\n" + "\n".join(lines)

    async def _moderate(self, action: str, args: str, ctx: CommandContext) -> str:
        if not ctx.is_moderator:
            return f"Only moderators can /{action}."
        parsed = parse_moderation(action, args, ctx.scope.persona)
        if isinstance(parsed, str):
            return parsed
        target, persona, duration, reason = parsed
        until = datetime.now(UTC) + duration if duration is not None else None
        event = current_event()
        before, after = await self.limits.apply(
            action,
            platform=ctx.scope.platform,
            target=target,
            persona=persona,
            moderator=ctx.actor.id,
            reason=reason,
            until=until,
            event_id=event.id if event is not None else None,
        )
        where = "every persona" if persona == "*" else persona
        done = f"{action}: {target} for {where}"
        if until is not None:  # as stored: a rerun after a crash keeps the first end
            done += f" until {after.muted_until or until:%Y-%m-%d %H:%M} UTC"
        changed = "" if before != after else " (no change)"
        return f"Done, {done}{changed}. Audited."

    def _file_for(self, persona_id: str) -> Path:
        try:
            return self.personas.get(persona_id).path
        except PersonaError:
            directory = self.personas.dirs[0]
            return directory / f"{persona_id}.yaml"


_MENTION = re.compile(r"^<@!?(\d{1,32})>$|^(\d{1,32})$")
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moderation(
    action: str, args: str, persona: str
) -> tuple[str, str, timedelta | None, str | None] | str:
    """`/mute USER [all] [30m|2h|7d] [reason...]` and the like: (target, persona or
    "*", mute duration, reason), or the usage text for arguments that are not that.
    USER is a numeric platform id or a Discord mention."""
    usage = (
        f"Say /{action} USER [all]{' [30m|2h|7d]' if action == 'mute' else ''}"
        f"{' [reason]' if action in ('mute', 'ban') else ''}: USER is the person's "
        "numeric id or a mention; 'all' means for every persona, not only this one."
    )
    words = args.split()
    if not words:
        return usage
    found = _MENTION.match(words[0])
    if found is None:
        return f"{words[0][:40]!r} is not a user id or mention. {usage}"
    target = found.group(1) or found.group(2)
    rest = words[1:]
    where = persona
    if rest and rest[0].lower() in ("all", "everywhere", "*"):
        where, rest = "*", rest[1:]
    duration = None
    if action == "mute" and rest and (length := _DURATION.match(rest[0].lower())):
        duration = timedelta(seconds=int(length.group(1)) * _UNITS[length.group(2)])
        if duration > timedelta(days=3650):
            return f"A mute of {rest[0]} is too long; leave the duration out for an open mute."
        rest = rest[1:]
    reason = clean_text(" ".join(rest))[:512] or None
    return target, where, duration, reason


def _write_atomically(path: Path, text: str) -> None:
    # The watcher must never see half a file: write beside it, then rename over it.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
