"""Reading and checking persona texts for the pages: what is served and from which
file, the problems of a text (the loader's own, as `bot personas check` says them),
the preview's token counter and history, and diffs. A base of `PersonaService`
(bot/web/dashboard/persona_service.py), which owns the state declared here.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

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
from bot.personas.preview import HistoryMessage
from bot.personas.problems import ROOT_FIELD, PersonaFileError, Problem
from bot.personas.registry import PersonaRegistry
from bot.text import clean_text
from bot.web.dashboard.persona_files import read_file_bytes
from bot.web.dashboard.persona_types import CheckResult, DiffLine, ProblemView

__all__ = ["MAX_TEXT_CHARS", "Checking", "parse_history"]

#: The longest persona text the pages accept (the loader refuses files past 1 MiB).
MAX_TEXT_CHARS = MAX_FILE_BYTES
#: A diff of texts longer than this (lines, either side) is not computed.
MAX_DIFF_LINES = 20_000
#: Preview history: most messages, and characters in one.
MAX_HISTORY_LINES = 200
MAX_HISTORY_CHARS = 20_000


class Checking:
    """The reading and checking side of `PersonaService`."""

    registry: PersonaRegistry
    tokenizer: str | None
    context_window: int
    tokens_for: Callable[[LoadedPersona], Awaitable[TokenCounter]] | None
    _tokens: TokenCounter | None
    _tokenizer_shown: str
    _checks: asyncio.Semaphore

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

    def directory(self) -> Path:
        """Where new personas and imports are written: the first persona directory."""
        if not self.registry.dirs:
            raise ValueError("no persona directory is configured (personas.dirs)")
        return self.registry.dirs[0]


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
