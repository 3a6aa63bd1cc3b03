"""The personas being served, and hot reload that keeps the last good version.

The registry serves one immutable snapshot (id → `LoadedPersona`). Every change
builds a new snapshot and swaps the single reference, so a turn that has fetched a
persona keeps a consistent version and readers never see a half-applied change.
A file that becomes invalid (its templates failing the trial render included) is
reported and the version it last served stays; a file whose id is already served
from another file is refused until that id is free.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import structlog
import watchfiles

from bot.errors import PersonaNotFound
from bot.personas.loader import (
    LoadedPersona,
    find_persona_files,
    is_persona_file,
    load_persona,
    problem_at,
)
from bot.personas.problems import ROOT_FIELD, PersonaFileError, Problem

__all__ = ["OnLoaded", "PersonaRegistry"]

OnLoaded = Callable[[LoadedPersona], Awaitable[None]]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_id: Mapping[str, LoadedPersona] = field(default_factory=lambda: MappingProxyType({}))
    id_by_path: Mapping[Path, str] = field(default_factory=lambda: MappingProxyType({}))

    def with_loaded(self, loaded: LoadedPersona, *, replacing: str | None) -> _Snapshot:
        by_id = {k: v for k, v in self.by_id.items() if k != replacing}
        by_id[loaded.persona.id] = loaded
        id_by_path = {**self.id_by_path, loaded.path: loaded.persona.id}
        return _Snapshot(MappingProxyType(by_id), MappingProxyType(id_by_path))

    def without(self, path: Path) -> _Snapshot:
        gone = self.id_by_path.get(path)
        by_id = {k: v for k, v in self.by_id.items() if k != gone}
        id_by_path = {p: i for p, i in self.id_by_path.items() if p != path}
        return _Snapshot(MappingProxyType(by_id), MappingProxyType(id_by_path))


class PersonaRegistry:
    """Loads persona files from `dirs`, serves them by id, and reloads them on change.

    `on_loaded` is awaited once for every version that is about to be served
    (initial load and every reload with new content), before it is served, so
    storage can record the version and its hash first. Changes are applied one at a
    time; `get` never waits for them.
    """

    def __init__(self, dirs: Sequence[Path], *, on_loaded: OnLoaded | None = None) -> None:
        self._dirs = tuple(_absolute(Path(d)) for d in dirs)
        self._on_loaded = on_loaded
        self._snapshot = _Snapshot()
        # Valid files refused because their id was taken; retried when an id frees up.
        self._refused: set[Path] = set()
        self._lock = asyncio.Lock()
        self._reload_count = 0

    @property
    def dirs(self) -> tuple[Path, ...]:
        """The directories personas are loaded from (absolute)."""
        return self._dirs

    @property
    def reload_count(self) -> int:
        """How many `reload` calls have completed, whatever their outcome."""
        return self._reload_count

    def get(self, persona_id: str) -> LoadedPersona:
        """The served version of `persona_id`; raises `PersonaNotFound` naming the ids."""
        try:
            return self._snapshot.by_id[persona_id]
        except KeyError:
            available = ", ".join(sorted(self._snapshot.by_id)) or "none"
            raise PersonaNotFound(
                f"no persona {persona_id!r} is loaded (available: {available}; "
                f"searched {', '.join(str(d) for d in self._dirs) or 'no directories'})"
            ) from None

    def ids(self) -> list[str]:
        """The ids being served, sorted."""
        return sorted(self._snapshot.by_id)

    def personas(self) -> list[LoadedPersona]:
        """The versions being served, ordered by id."""
        snapshot = self._snapshot
        return [snapshot.by_id[i] for i in sorted(snapshot.by_id)]

    def __contains__(self, persona_id: object) -> bool:
        return persona_id in self._snapshot.by_id

    def __len__(self) -> int:
        return len(self._snapshot.by_id)

    async def load_all(self) -> list[Problem]:
        """Load (or re-sync with) every persona file under the directories.

        Returns every problem found; valid files are served, invalid ones are not
        (or keep their last good version on a re-sync). A missing directory is a
        problem too. When two files share an id, the one whose path sorts first wins.
        """
        files, problems = await asyncio.to_thread(find_persona_files, self._dirs)
        paths = sorted({_absolute(p) for p in files} | set(self._snapshot.id_by_path))
        for path in paths:
            problems.extend(await self.reload(path))
        return sorted(problems, key=lambda p: p.sort_key)

    async def reload(self, path: Path) -> list[Problem]:
        """Apply the current state of one file: add, replace, or remove its persona.

        Returns the file's problems (none when it was applied). On problems the
        version the file served before, if any, keeps serving. Exceptions from
        `on_loaded` propagate and leave the served version unchanged.
        """
        path = _absolute(path)
        try:
            async with self._lock:
                before = self._snapshot
                problems = await self._apply(path)
                freed = set(before.by_id) - set(self._snapshot.by_id)
                if freed and self._refused:
                    for waiting in sorted(self._refused):
                        await self._apply(waiting)
                return problems
        finally:
            self._reload_count += 1

    async def watch(
        self,
        stop_event: asyncio.Event,
        *,
        force_polling: bool | None = None,
        debounce_ms: int = 1_600,
        step_ms: int = 50,
    ) -> None:
        """Reload changed persona files until `stop_event` is set.

        Call `load_all()` first: a change made before the watcher starts is seen
        only at that file's next change. Errors while applying a change are logged
        and watching goes on.
        """
        dirs = [d for d in self._dirs if await asyncio.to_thread(d.is_dir)]
        if not dirs:
            log.warning("persona.watch.no_directories", dirs=[str(d) for d in self._dirs])
            await stop_event.wait()
            return
        log.info("persona.watch.started", dirs=[str(d) for d in dirs])
        async for changes in watchfiles.awatch(
            *dirs,
            watch_filter=self._is_watched,
            stop_event=stop_event,
            force_polling=force_polling,
            debounce=debounce_ms,
            step=step_ms,
        ):
            # Deletions first, so that a file renamed within the directories frees its
            # id before the new name claims it.
            ordered = sorted(
                {(change != watchfiles.Change.deleted, raw) for change, raw in changes}
            )
            for _, raw in ordered:
                try:
                    await self._changed(Path(raw))
                except Exception:
                    log.exception("persona.reload_failed", path=raw)
        log.info("persona.watch.stopped")

    async def _changed(self, path: Path) -> None:
        if is_persona_file(path):
            await self.reload(path)
            return
        # A directory came, went or moved. Files created in a new directory before
        # the watcher watched it, or moved away with their directory, have no events
        # of their own.
        if await asyncio.to_thread(path.is_dir):
            files, _ = await asyncio.to_thread(find_persona_files, [path])
            affected = [_absolute(f) for f in files]
        else:
            affected = [p for p in self._snapshot.id_by_path if p.is_relative_to(path)]
        for file in affected:
            await self.reload(file)

    def _is_watched(self, change: watchfiles.Change, raw_path: str) -> bool:
        # Persona files, and anything that may be a directory holding them; hidden
        # names (editor swap files, .git) are skipped as find_persona_files skips them.
        path = Path(raw_path)
        if path.suffix and not is_persona_file(path):
            return False
        for root in self._dirs:
            if path.is_relative_to(root):
                return not any(p.startswith(".") for p in path.relative_to(root).parts)
        return False

    async def _apply(self, path: Path) -> list[Problem]:
        snapshot = self._snapshot
        old_id = snapshot.id_by_path.get(path)
        if not await asyncio.to_thread(path.is_file):
            self._refused.discard(path)
            if old_id is not None:
                self._snapshot = snapshot.without(path)
                log.info("persona.removed", persona=old_id, path=str(path))
            return []
        try:
            loaded = await asyncio.to_thread(load_persona, path)
        except PersonaFileError as exc:
            problems = exc.problems
        except Exception as exc:
            # The loader reports every problem as a PersonaFileError; anything else is
            # a bug, which must still cost only this file, never the others.
            log.exception("persona.load_crashed", path=str(path))
            problems = [Problem(path, 1, 1, ROOT_FIELD, f"cannot be loaded: {exc!r}")]
        else:
            problems = []
        if problems:
            self._refused.discard(path)
            self._report(problems, snapshot.by_id.get(old_id) if old_id else None)
            return problems
        new_id = loaded.persona.id
        holder = snapshot.by_id.get(new_id)
        if holder is not None and holder.path != path:
            self._refused.add(path)
            problem = await asyncio.to_thread(
                problem_at,
                loaded,
                ("id",),
                f"persona id {new_id!r} is already served from {holder.path}; "
                "this file is ignored while that one serves it",
            )
            self._report([problem], snapshot.by_id.get(old_id) if old_id else None)
            return [problem]
        self._refused.discard(path)
        if holder is not None and holder.content_hash == loaded.content_hash:
            return []  # editors and watchers often report one save twice
        if self._on_loaded is not None:
            await self._on_loaded(loaded)
        # Re-read the reference: on_loaded may have awaited, but changes are serialized
        # by the lock, so nothing else replaced the snapshot meanwhile.
        self._snapshot = self._snapshot.with_loaded(loaded, replacing=old_id)
        log.info(
            "persona.loaded",
            persona=new_id,
            path=str(path),
            content_hash=loaded.content_hash,
            replaced=holder.content_hash if holder is not None else None,
        )
        return []

    def _report(self, problems: list[Problem], kept: LoadedPersona | None) -> None:
        for problem in problems:
            log.warning("persona.problem", problem=str(problem))
        log.warning(
            "persona.rejected",
            path=str(problems[0].path),
            problems=len(problems),
            kept=kept.persona.id if kept is not None else None,
            kept_hash=kept.content_hash if kept is not None else None,
        )


def _absolute(path: Path) -> Path:
    # Absolute without resolving symlinks: watchfiles reports paths under the
    # directories as they were given, and served files are keyed the same way.
    return Path(os.path.abspath(path))  # noqa: PTH100 - resolve() would follow symlinks
