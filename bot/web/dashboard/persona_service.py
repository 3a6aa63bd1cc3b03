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
import contextlib
import difflib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, insert, select

from bot import models
from bot.db import Database
from bot.llm.base import TokenCounter
from bot.llm.tokens import load_token_counter
from bot.personas.loader import (
    MAX_FILE_BYTES,
    LoadedPersona,
    check_paths,
    find_persona_files,
    parse_persona,
    problem_at,
)
from bot.personas.lorebook.worlds import load_worlds
from bot.personas.preview import HistoryMessage, build_preview
from bot.personas.problems import ROOT_FIELD, PersonaFileError, Problem
from bot.personas.registry import PersonaRegistry
from bot.text import clean_text

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

#: The longest persona text the pages accept (the loader refuses files past 1 MiB).
MAX_TEXT_CHARS = MAX_FILE_BYTES
#: Checks and previews run at once in one process; more wait their turn.
MAX_CONCURRENT_CHECKS = 2
#: How long a check waits for its turn before the page is told to try again.
CHECK_QUEUE_S = 5.0
#: A diff of texts longer than this (lines, either side) is not computed.
MAX_DIFF_LINES = 20_000
#: Preview history: most messages, and characters in one.
MAX_HISTORY_LINES = 200
MAX_HISTORY_CHARS = 20_000
#: Longest preview message (characters).
MAX_MESSAGE_CHARS = 20_000


#: Writes the audit row of a save, in the transaction that records its version.
AuditHook = Callable[[Connection, "SaveResult"], None]


@dataclass(frozen=True, slots=True)
class ProblemView:
    """A problem as the page shows it: `text` is `bot personas check`'s line."""

    line: int
    column: int
    field: str
    message: str
    text: str

    def as_json(self) -> dict[str, Any]:
        """For the check endpoint."""
        return {
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of checking one text: the persona it makes, or its problems."""

    problems: tuple[ProblemView, ...]
    loaded: LoadedPersona | None = None
    busy: bool = False

    @property
    def ok(self) -> bool:
        """True when the text is a persona that can be served."""
        return self.loaded is not None and not self.problems and not self.busy


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save did. `before`/`after` are the file's texts, for the audit log."""

    outcome: Literal["saved", "unchanged", "problems", "conflict", "busy", "forbidden"]
    persona_id: str = ""
    problems: tuple[ProblemView, ...] = ()
    before: str | None = None
    after: str | None = None
    content_hash: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One stored version of a persona (`persona_versions`)."""

    content_hash: str
    loaded_at: datetime
    path: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a unified diff: `kind` is `hunk`, `same`, `added` or `removed`."""

    kind: Literal["hunk", "same", "added", "removed"]
    old: int | None
    new: int | None
    text: str


@dataclass
class PersonaService:
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

    # -- reading ----------------------------------------------------------------

    def serving(self) -> list[LoadedPersona]:
        """The versions being served, by id."""
        return self.registry.personas()

    def served(self, persona_id: str) -> LoadedPersona | None:
        """The version of `persona_id` being served, if any."""
        return self.registry.get(persona_id) if persona_id in self.registry else None

    def path_for(self, persona_id: str) -> Path:
        """The file that holds (or would hold) `persona_id`."""
        served = self.served(persona_id)
        if served is not None:
            return served.path
        return self.directory() / f"{persona_id}.yaml"

    def shown(self, path: Path) -> str:
        """`path` as the pages name it: under its persona directory (`personas/x.yaml`)."""
        for root in self.registry.dirs:
            if path.is_relative_to(root):
                return str(Path(root.name) / path.relative_to(root))
        return path.name

    async def editor_text(self, persona_id: str) -> tuple[str, str]:
        """The text to edit and its hash: the file on disk (which may be a version
        that did not load), else the served source."""
        served = self.served(persona_id)
        if served is None:
            return "", ""
        data = await asyncio.to_thread(read_file_bytes, served.path)
        if data is None:
            return served.source, served.content_hash
        return data.decode("utf-8", errors="replace"), hashlib.sha256(data).hexdigest()

    async def unserved(self, *, limit: int = 20) -> list[tuple[str, list[ProblemView]]]:
        """Persona files in the directories that serve nothing, each with its problems
        (at most `limit` files): what `bot personas check` would say about them."""
        async with self._checks:
            return await asyncio.to_thread(self._unserved_sync, limit)

    def _unserved_sync(self, limit: int) -> list[tuple[str, list[ProblemView]]]:
        files, _ = find_persona_files(self.registry.dirs)
        served = {loaded.path for loaded in self.registry.personas()}
        out: list[tuple[str, list[ProblemView]]] = []
        for file in [f for f in files if f not in served][:limit]:  # dirs are absolute
            problems = [self.view(p) for p in check_paths([file])]
            if not problems:
                note = Problem(file, 1, 1, "id", "not served: its id is served from another file")
                problems = [self.view(note)]
            out.append((self.shown(file), problems))
        return out

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

    def _check_sync(self, text: str, persona_id: str | None) -> CheckResult:
        path = self.path_for(persona_id) if persona_id else self.directory() / "new.yaml"
        if len(text) > MAX_TEXT_CHARS:
            problem = Problem(path, 1, 1, ROOT_FIELD, f"longer than {MAX_TEXT_CHARS} characters")
            return CheckResult((self.view(problem),))
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            line = text.count("\n", 0, exc.start) + 1
            column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
            problem = Problem(path, line, column, ROOT_FIELD, "a character that is not text")
            return CheckResult((self.view(problem),))
        try:
            loaded = parse_persona(data, path)
            problems: list[Problem] = []
            if loaded.persona.lore.worlds:
                worlds, problems = load_worlds(path, loaded.source, loaded.persona.lore.worlds)
                if not problems:
                    loaded = LoadedPersona(
                        loaded.persona, path, loaded.content_hash, loaded.source, worlds
                    )
        except PersonaFileError as exc:
            return CheckResult(tuple(self.view(p) for p in exc.problems))
        except Exception as exc:  # a bug in a check must still be one line on the page
            problem = Problem(path, 1, 1, ROOT_FIELD, f"cannot be checked: {type(exc).__name__}")
            return CheckResult((self.view(problem),))
        new_id = loaded.persona.id
        if persona_id is not None and new_id != persona_id:
            problems.append(
                problem_at(
                    loaded,
                    ("id",),
                    f"the id is {persona_id!r} and cannot change here: memories and training "
                    "data are kept under it (make a new persona instead)",
                )
            )
        elif persona_id is None and (new_id in self.registry or self.path_for(new_id).exists()):
            problems.append(problem_at(loaded, ("id",), f"a persona {new_id!r} already exists"))
        if problems:
            ordered = sorted(problems, key=lambda p: p.sort_key)
            return CheckResult(tuple(self.view(p) for p in ordered))
        return CheckResult((), loaded)

    def view(self, problem: Problem) -> ProblemView:
        """A loader problem as the page shows it, its file named by `shown`."""
        shown = self.shown(problem.path)
        return ProblemView(
            problem.line,
            problem.column,
            problem.field,
            problem.message,
            f"{shown}:{problem.line}:{problem.column}: {problem.field}: {problem.message}",
        )

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

    async def _token_counter(self, loaded: LoadedPersona) -> TokenCounter:
        if self.tokens_for is not None:
            counter = await self.tokens_for(loaded)
            # A local model loads its tokenizer with its weights, at its first turn:
            # until then (or in a `bot dashboard` of its own) `tokenizer` counts.
            if type(counter).__name__ != "ApproxTokenCounter" or not self.tokenizer:
                approximate = type(counter).__name__ == "ApproxTokenCounter"
                self._tokenizer_shown = "approximate" if approximate else type(counter).__name__
                return counter
        if self._tokens is None:
            counter = await asyncio.to_thread(load_token_counter, self.tokenizer)
            approximate = type(counter).__name__ == "ApproxTokenCounter"
            self._tokenizer_shown = "approximate" if approximate else str(self.tokenizer)
            self._tokens = counter
        return self._tokens

    # -- diff ----------------------------------------------------------------------

    @staticmethod
    def diff(before: str, after: str, *, context: int = 3) -> list[DiffLine] | None:
        """`before` → `after` as unified-diff lines; None when too long to diff."""
        old, new = before.splitlines(), after.splitlines()
        if max(len(old), len(new)) > MAX_DIFF_LINES:
            return None
        out: list[DiffLine] = []
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for group in matcher.get_grouped_opcodes(context):
            first, last = group[0], group[-1]
            out.append(
                DiffLine(
                    "hunk",
                    None,
                    None,
                    f"@@ -{first[1] + 1},{last[2] - first[1]} "
                    f"+{first[3] + 1},{last[4] - first[3]} @@",
                )
            )
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    out.extend(
                        DiffLine("same", i1 + k + 1, j1 + k + 1, old[i1 + k])
                        for k in range(i2 - i1)
                    )
                    continue
                out.extend(DiffLine("removed", i + 1, None, old[i]) for i in range(i1, i2))
                out.extend(DiffLine("added", None, j + 1, new[j]) for j in range(j1, j2))
        return out

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

    # -- versions ------------------------------------------------------------------

    async def versions(self, persona_id: str, *, limit: int = 50) -> list[VersionRow]:
        """The stored versions of `persona_id`, newest first (without their text)."""
        if self.db is None:
            return []
        table = models.PersonaVersion.__table__  # type: ignore[attr-defined]

        def work(conn: Connection) -> list[VersionRow]:
            rows = conn.execute(
                select(table.c.content_hash, table.c.loaded_at, table.c.path)
                .where(table.c.persona_id == persona_id)
                .order_by(table.c.loaded_at.desc(), table.c.id.desc())
                .limit(max(1, min(limit, 500)))
            ).all()
            return [VersionRow(r.content_hash, r.loaded_at, r.path) for r in rows]

        return await self.db.read(work)

    async def version(self, persona_id: str, content_hash: str) -> VersionRow | None:
        """One stored version with its text."""
        if self.db is None or not _is_hash(content_hash):
            return None
        table = models.PersonaVersion.__table__  # type: ignore[attr-defined]

        def work(conn: Connection) -> VersionRow | None:
            row = conn.execute(
                select(table.c.content_hash, table.c.loaded_at, table.c.path, table.c.source).where(
                    table.c.persona_id == persona_id, table.c.content_hash == content_hash
                )
            ).first()
            return (
                VersionRow(row.content_hash, row.loaded_at, row.path, row.source) if row else None
            )

        return await self.db.read(work)

    def directory(self) -> Path:
        """Where new personas and imports are written: the first persona directory."""
        if not self.registry.dirs:
            raise ValueError("no persona directory is configured (personas.dirs)")
        return self.registry.dirs[0]


def record_version(conn: Connection, loaded: LoadedPersona) -> None:
    """Keep a served version in `persona_versions` (a version stored already is left)."""
    table = models.PersonaVersion.__table__  # type: ignore[attr-defined]
    found = conn.execute(
        select(table.c.id).where(
            table.c.persona_id == loaded.persona.id,
            table.c.content_hash == loaded.content_hash,
        )
    ).scalar()
    if found is None:
        conn.execute(
            insert(table).values(
                persona_id=loaded.persona.id,
                content_hash=loaded.content_hash,
                path=str(loaded.path),
                source=loaded.source,
                loaded_at=datetime.now(UTC),
            )
        )


def parse_history(text: str) -> list[HistoryMessage] | str:
    """Preview history written one message a line, `user: ...` or `assistant: ...`
    (`Name (user): ...` names the speaker); or why it cannot be read."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_HISTORY_LINES:
        return f"at most {MAX_HISTORY_LINES} history messages"
    out: list[HistoryMessage] = []
    for number, line in enumerate(lines, 1):
        head, sep, body = line.partition(":")
        who = head.strip()
        name = ""
        if who.endswith(")") and "(" in who:
            name, _, who = who[:-1].partition("(")
            name, who = name.strip(), who.strip()
        role = who.lower()
        if not sep or role not in ("user", "assistant"):
            return f"history line {number}: start it with 'user:' or 'assistant:'"
        if len(body) > MAX_HISTORY_CHARS:
            return f"history line {number}: longer than {MAX_HISTORY_CHARS} characters"
        out.append(
            HistoryMessage(
                "user" if role == "user" else "assistant", clean_text(body.strip()), name[:200]
            )
        )
    return out


def _is_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def read_file_bytes(path: Path) -> bytes | None:
    """A persona file's bytes (at most one past the loader's limit), None if absent."""
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked_directory(directory: Path) -> Iterator[None]:
    """One writer at a time in a persona directory, across dashboard processes."""
    # The directory itself is locked (flock works on a directory's descriptor), so
    # no lock file is left among the personas.
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
