"""The terminal as a platform: `bot chat`.

Interactive (stdin is a terminal): a prompt with line editing, the reply streamed
token by token, the console's own commands `/reset`, `/persona ID`, `/help`, `/quit`,
and every command the other platforms have (`/memory`, `/forget`, `/optout`,
`/optin`, `/timezone`, `/reload`: bot/commands.py), the person at the terminal
being a moderator.
Scripted (stdin is a pipe): one message per line in, one reply per line out, with
newlines inside a reply written as the two characters `\\n` (or JSON lines with
`--format jsonl`), so another program can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from typing import Literal, TextIO

from adapters.base import Adapter, AdapterServices
from bot.commands import HELP as COMMANDS_HELP
from bot.commands import CommandContext
from bot.errors import BotError, PersonaNotFound
from bot.messages import Actor, Incoming, Outgoing, Scope

__all__ = ["ConsoleAdapter"]

HELP = "commands: /reset (start a fresh conversation), /persona ID (switch), /help, /quit"
#: The console's own commands; every other /command goes to bot/commands.py.
_OWN = ("/quit", "/exit", "/reset", "/persona", "/help")


class ConsoleAdapter(Adapter):
    """Chat with a persona in the terminal; stored like any other platform."""

    platform = "console"
    max_message_length = 1_000_000  # a terminal has no limit worth splitting for

    def __init__(
        self,
        services: AdapterServices,
        *,
        persona: str,
        user_id: str = "local",
        display_name: str = "guest",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
        output_format: Literal["text", "jsonl"] = "text",
    ) -> None:
        super().__init__(services)
        self.persona = persona
        self.actor = Actor(platform=self.platform, id=user_id, display_name=display_name)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.output_format = output_format
        self.channel = f"console:{user_id}"
        self._streamed: set[int] = set()
        self._counter = 0
        #: Messages sent to the engine, and how many of them got no real reply (the
        #: apology, or an error): `bot chat` exits 3 when any did.
        self.turns = 0
        self.unanswered = 0

    # -- platform side ----------------------------------------------------------------

    def _scope(self) -> Scope:
        return Scope(
            platform=self.platform, channel=self.channel, user=self.actor.id, persona=self.persona
        )

    async def _read_line(self, prompt: str, stop: asyncio.Event) -> str | None:
        """The next line, or None at end of input or when `stop` is set first.

        Each read runs on its own daemon thread, not the default executor: a read
        blocked on a silent terminal must not keep the process alive after SIGTERM.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()

        def deliver(value: str | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def read_in_thread() -> None:
            try:
                value, error = read(), None
            except BaseException as exc:  # handed to the loop, raised there
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(deliver, value, error)

        def read() -> str | None:
            if self.interactive and self.stdin is sys.stdin:
                try:
                    return input(prompt)  # line editing and history through readline
                except EOFError:
                    return None
            if prompt:
                self._write(prompt)
            line = self.stdin.readline()
            return None if line == "" else line.rstrip("\n")

        threading.Thread(target=read_in_thread, name="console-read", daemon=True).start()
        stopped: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        waiting: list[asyncio.Future[object]] = [future, stopped]  # type: ignore[list-item]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        return future.result() if future.done() else None

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        if outgoing.message_id is not None and outgoing.message_id in self._streamed:
            self._write("\n")
        elif not self.interactive and self.output_format == "jsonl":
            record = {
                "reply": text,
                "message_id": outgoing.message_id,
                "persona": outgoing.scope.persona,
                "error": outgoing.is_error,
                # Set when the safety stage answered instead of the model ("crisis").
                "safety": outgoing.safety,
            }
            self._write(json.dumps(record, ensure_ascii=False) + "\n")
        elif not self.interactive:
            self._write(text.replace("\\", "\\\\").replace("\n", "\\n") + "\n")
        else:
            self._write(f"{text}\n")
        self._counter += 1
        return f"console-{self._counter}"

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read messages until EOF, `/quit` or `stop`."""
        if self.interactive and self.stdin is sys.stdin:
            with contextlib.suppress(ImportError):  # line editing and ↑ history in input()
                import readline  # noqa: F401
        if self.interactive:
            await self._show_greeting()
        while not stop.is_set():
            prompt = f"{self.actor.display_name}> " if self.interactive else ""
            line = await self._read_line(prompt, stop)
            if line is None:
                break
            if self.interactive and line.startswith("/"):
                if not await self._command(line.strip()):
                    break
                continue
            await self._turn(line)

    async def _turn(self, text: str) -> None:
        incoming = Incoming(scope=self._scope(), actor=self.actor, text=text)
        self.turns += 1
        if self.interactive:
            started = False
            shown: list[str] = []

            async def on_delta(delta: str) -> None:
                nonlocal started
                if not started:
                    self._write(f"{self.engine.personas.get(self.persona).persona.name}> ")
                    started = True
                shown.append(delta)
                self._write(delta)

            try:
                replies = await self.engine.handle(incoming, on_delta=on_delta)
            except BotError as exc:
                self.unanswered += 1
                self._write(f"\n[error] {exc}\n")
                return
            self.unanswered += any(r.is_error for r in replies)
            for reply in replies:
                # A reply the safety stage replaced after part of it streamed is
                # written whole on a line of its own.
                whole = "".join(shown).strip() == reply.text.strip()
                if started and not reply.is_error and reply.message_id is not None and whole:
                    self._streamed.add(reply.message_id)
                elif started:
                    self._write("\n")
                await self.send(reply)
            return
        try:
            replies = await self.engine.handle(incoming)
        except BotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.unanswered += 1
            replies = []
        # No reply at all is the engine's answer to an empty line, not a failure.
        self.unanswered += any(r.is_error for r in replies)
        if not replies:
            # Keep one line out per line in, so a script reading replies stays in step.
            self._write("{}\n" if self.output_format == "jsonl" else "\n")
        for reply in replies:
            await self.send(reply)

    async def _show_greeting(self) -> None:
        try:
            greeting = await self.engine.greeting(self._scope(), self.actor.display_name)
        except BotError as exc:
            self._write(f"[error] {exc}\n")
            return
        name = self.engine.personas.get(self.persona).persona.name
        self._write(f"Chatting with {name} ({self.persona}). {HELP}\n")
        if greeting is not None:
            self._write(f"{name}> ")
            await self.send(greeting)

    async def _command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit"):
            return False
        if name == "/reset":
            self.channel = f"console:{self.actor.id}:{int(time.time() * 1000)}"
            self._write("[a fresh conversation; earlier ones stay stored]\n")
        elif name == "/persona":
            arg = arg.strip()
            if not arg:
                self._write(f"[persona: {self.persona}]\n")
                return True
            try:
                self.engine.personas.get(arg)
            except PersonaNotFound as exc:
                self._write(f"[{exc}]\n")
                return True
            self.persona = arg
            await self._show_greeting()
        elif name in _OWN:  # /help
            self._write(f"[{HELP}]\n{COMMANDS_HELP}\n")
        else:
            ctx = CommandContext(
                scope=self._scope(), actor=self.actor, is_moderator=True, allow_switch=True
            )
            try:
                answer = await self.command(name.lstrip("/"), arg, ctx)
            except BotError as exc:
                answer = f"[error] {exc}"
            self._write(f"{answer}\n")
        return True
