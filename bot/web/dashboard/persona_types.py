"""The records the persona pages pass around: a problem as shown, a check's and a
save's outcome, a stored version, a diff line, and the audit hook of a save
(re-exported by bot/web/dashboard/persona_service.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection

from bot.personas.loader import LoadedPersona

__all__ = ["AuditHook", "CheckResult", "DiffLine", "ProblemView", "SaveResult", "VersionRow"]


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
