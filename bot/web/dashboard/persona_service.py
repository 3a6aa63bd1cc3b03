"""What the persona pages do, without HTTP: check, preview, diff, save, versions.

Every path goes through the persona loader the bot itself uses, so the dashboard
reports the same `file:line:column: field: message` problems as `bot personas
check`, and a version it saves has passed the same bounded trial render as hot
reload. Saving writes the file atomically into the persona directory and reloads
it in this process's `PersonaRegistry`; other `bot run` processes on the same
directory pick it up with their watcher. A version that does not load is never
written, so the last good one keeps serving.

Text from the page is hostile: it is bounded (`MAX_TEXT_CHARS`), checked in a
worker thread a few at a time (`MAX_CONCURRENT_CHECKS`), and every failure is a
problem with a line, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from bot.db import Database
from bot.llm.base import TokenCounter
from bot.personas.loader import LoadedPersona
from bot.personas.preview import HistoryMessage, build_preview
from bot.personas.registry import PersonaRegistry
from bot.text import clean_text
from bot.web.dashboard.persona_checks import MAX_DIFF_LINES as MAX_DIFF_LINES
from bot.web.dashboard.persona_checks import MAX_HISTORY_CHARS as MAX_HISTORY_CHARS
from bot.web.dashboard.persona_checks import MAX_HISTORY_LINES as MAX_HISTORY_LINES
from bot.web.dashboard.persona_checks import MAX_TEXT_CHARS, Checking, parse_history
from bot.web.dashboard.persona_files import locked_directory, read_file_bytes
from bot.web.dashboard.persona_types import (
    AuditHook,
    CheckResult,
    DiffLine,
    ProblemView,
    SaveResult,
    VersionRow,
)
from bot.web.dashboard.persona_versions import Versions, record_version

__all__ = [
    "MAX_TEXT_CHARS",
    "AuditHook",
    "CheckResult",
    "DiffLine",
    "PersonaService",
    "ProblemView",
    "SaveResult",
    "VersionRow",
    "locked_directory",
    "parse_history",
    "read_file_bytes",
    "record_version",
]

#: Checks and previews run at once in one process; more wait their turn.
MAX_CONCURRENT_CHECKS = 2
#: How long a check waits for its turn before the page is told to try again.
CHECK_QUEUE_S = 5.0
#: Longest preview message (characters).
MAX_MESSAGE_CHARS = 20_000


@dataclass
class PersonaService(Checking, Versions):
    """The persona pages' logic over the registry that serves personas.

    `db` stores versions (`persona_versions`) when given; `tokenizer` names the
    tokenizer for preview counts (an estimate when empty or unloadable).
    """

    registry: PersonaRegistry
    db: Database | None = None
    tokenizer: str | None = None
    context_window: int = 4096
    #: The token counter of the backend that voices a persona (the engine's own
    #: counts); when None, `tokenizer` is loaded once.
    tokens_for: Callable[[LoadedPersona], Awaitable[TokenCounter]] | None = None
    _tokens: TokenCounter | None = field(default=None, init=False, repr=False)
    _tokenizer_shown: str = field(default="approximate", init=False, repr=False)
    _checks: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_CHECKS), init=False, repr=False
    )
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    # -- checking ----------------------------------------------------------------

    async def check(self, text: str, persona_id: str | None) -> CheckResult:
        """The problems of `text` as the file of `persona_id` (None: a new persona),
        the same ones `bot personas check` reports, plus: the id may not change, and a
        new persona's id must be free."""
        try:
            async with asyncio.timeout(CHECK_QUEUE_S):
                await self._checks.acquire()
        except TimeoutError:
            return CheckResult((), busy=True)
        try:
            return await asyncio.to_thread(self._check_sync, text, persona_id)
        finally:
            self._checks.release()

    # -- preview -------------------------------------------------------------------

    async def preview(
        self,
        text: str,
        persona_id: str | None,
        message: str,
        history: list[HistoryMessage],
        *,
        user: str = "friend",
        direct: bool = True,
    ) -> tuple[CheckResult, dict[str, Any] | None]:
        """The prompt the engine would build from `text` (unsaved) for `message`:
        `bot personas preview`'s JSON, or None with the problems that prevent it."""
        checked = await self.check(text, persona_id)
        if not checked.ok or checked.loaded is None:
            return checked, None
        loaded = checked.loaded
        tokens = await self._token_counter(loaded)
        built = await asyncio.to_thread(
            build_preview,
            loaded,
            clean_text(message)[:MAX_MESSAGE_CHARS],
            history,
            tokens,
            user=user,
            context_window=self.context_window,
            tokenizer=self._tokenizer_shown,
            direct=direct,
        )
        return checked, built.as_json()

    # -- saving -------------------------------------------------------------------

    async def save(
        self,
        persona_id: str | None,
        text: str,
        base_hash: str,
        *,
        audit: AuditHook | None = None,
        allowed: Callable[[str], bool] | None = None,
    ) -> SaveResult:
        """Check `text`, then write it as the file of `persona_id` (None: a new one) and
        serve it; nothing is written unless it loads. `base_hash` is the hash of the
        file the editor started from (`editor_text`): a file changed since is a
        conflict, not overwritten.

        `audit(conn, result)` runs in the transaction that records the version; when
        that transaction fails, the previous file is put back and served again, so no
        change is left unaudited. `allowed(id)` is asked once the text's id is known
        (a new persona): False is the outcome `forbidden`, nothing written.
        """
        checked = await self.check(text, persona_id)
        if checked.busy:
            return SaveResult("busy", persona_id or "", message="busy: try again")
        if checked.loaded is None or checked.problems:
            return SaveResult("problems", persona_id or "", checked.problems)
        loaded = checked.loaded
        pid = loaded.persona.id
        if allowed is not None and not allowed(pid):
            return SaveResult("forbidden", pid)
        path = self.path_for(pid)
        async with self.write_lock:
            try:
                written = await asyncio.to_thread(
                    self._write_if_unchanged,
                    path,
                    text.encode("utf-8"),
                    base_hash,
                    persona_id is None,
                )
            except OSError as exc:
                why = exc.strerror or type(exc).__name__
                return SaveResult(
                    "problems", pid, message=f"cannot write {self.shown(path)}: {why}"
                )
            if isinstance(written, str):
                return SaveResult("conflict", pid, message=written)
            before = written
            problems = await self.registry.reload(path)
            served = self.served(pid)
            if problems or served is None:
                # Between the check and now something the file names changed (a world):
                # put the previous file back, so disk and service agree on the last good.
                await self._undo(path, before)
                return SaveResult("problems", pid, tuple(self.view(p) for p in problems))
            same = before is not None and hashlib.sha256(before).hexdigest() == loaded.content_hash
            result = SaveResult(
                "unchanged" if same else "saved",
                pid,
                before=before.decode("utf-8", errors="replace") if before is not None else None,
                after=text,
                content_hash=served.content_hash,
            )
            try:
                await self._commit(served, result, audit)
            except BaseException:
                await self._undo(path, before)
                raise
        return result

    async def rollback(
        self,
        persona_id: str,
        content_hash: str,
        base_hash: str,
        *,
        audit: AuditHook | None = None,
    ) -> SaveResult:
        """Serve a stored version of `persona_id` again, through `save`."""
        version = await self.version(persona_id, content_hash)
        if version is None:
            return SaveResult("problems", persona_id, message="no such version")
        return await self.save(persona_id, version.source, base_hash, audit=audit)

    async def record(self, loaded: LoadedPersona) -> None:
        """Store a version that is being served (idempotent)."""
        await self._commit(loaded, None, None)

    async def _commit(
        self, loaded: LoadedPersona, result: SaveResult | None, audit: AuditHook | None
    ) -> None:
        if self.db is None:
            return

        def work(conn: Connection) -> None:
            record_version(conn, loaded)
            if audit is not None and result is not None:
                audit(conn, result)

        await self.db.run(work)

    async def _undo(self, path: Path, before: bytes | None) -> None:
        await asyncio.to_thread(_restore, path, before)
        await self.registry.reload(path)

    def _write_if_unchanged(
        self, path: Path, data: bytes, base_hash: str, new: bool
    ) -> bytes | str | None:
        """Write `data` to `path` atomically if the file is still the one the editor
        loaded; the bytes it replaced (None: no file), or why not (a conflict)."""
        with locked_directory(path.parent):
            current = read_file_bytes(path)
            if new and current is not None:
                return f"{self.shown(path)} was created meanwhile"
            if not new:
                current_hash = hashlib.sha256(current).hexdigest() if current is not None else ""
                if current_hash != base_hash:
                    return (
                        f"{self.shown(path)} changed since you opened it (now "
                        f"{current_hash[:12] or 'deleted'}); reload the page to edit the new "
                        "version"
                    )
            _write_atomically(path, data)
            return current


def _write_atomically(path: Path, data: bytes) -> None:
    # A hidden temporary name: the registry and its watcher skip hidden files.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _restore(path: Path, before: bytes | None) -> None:
    with locked_directory(path.parent):
        if before is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomically(path, before)
