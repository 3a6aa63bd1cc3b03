"""What is wrong with a persona file, said where an editor can jump to it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.errors import PersonaError

__all__ = ["PersonaFileError", "Problem"]

#: The field name of problems that belong to the file as a whole (encoding, YAML syntax).
ROOT_FIELD = "(root)"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in one persona file, at a 1-based line and column.

    `field` is the dotted path of the offending value (`sampling.temperature`,
    `examples.0.1.user`), or `(root)` for problems of the file as a whole.
    `str(problem)` is `file:line:column: field: message`, the form compilers use, so
    editors and terminals turn it into a link.
    """

    path: Path
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.field}: {self.message}"

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        """Orders problems by file, then position, then field."""
        return (str(self.path), self.line, self.column, self.field)


class PersonaFileError(PersonaError):
    """A persona file that cannot be used; `.problems` lists every problem found in it."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=lambda p: p.sort_key)
        if not self.problems:
            raise ValueError("PersonaFileError needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))
