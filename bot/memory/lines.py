"""Reading a line-oriented file someone handed us (imports, query lists) safely.

The file is read as bytes, one bounded line at a time, so a file without newlines
cannot take the memory, and every problem names its line: not UTF-8 (with the byte
and its position), a NUL byte, a line over the limit, a UTF-16 file. A UTF-8 byte
order mark on line 1 and CRLF line ends are accepted; lines are split on `\\n`
only (a U+2028 inside a JSON string is text, not a line break).

`InputFileError` carries every problem found; its message is the first one, as
`file:line: problem`, plus how many more there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError

__all__ = ["MAX_LINE_BYTES", "InputFileError", "Line", "read_lines"]

#: The longest line accepted (a message of 100,000 characters fits with room to spare).
MAX_LINE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
_UTF16 = (b"\xff\xfe", b"\xfe\xff")


class InputFileError(ConfigError):
    """A file given on the command line has problems; nothing was taken from it."""

    label = "input error"
    exit_code = 2

    def __init__(self, problems: list[str], *, total: int | None = None) -> None:
        self.problems = problems
        self.total = total if total is not None else len(problems)
        more = self.total - 1
        tail = f" (and {more} more problem line(s); nothing was imported)" if more > 0 else ""
        super().__init__(f"{problems[0]}{tail}" if problems else "no problems")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the file: its text, or why it could not be read."""

    number: int
    text: str
    problem: str | None = None


def read_lines(path: Path, *, max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Every line of `path` (1-based numbers), decoded, without its line end.

    Raises `InputFileError` when the file cannot be opened or is UTF-16 (nothing of
    it is readable as lines); other problems come as lines with `problem` set.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputFileError([f"{path}: cannot read it ({exc.strerror})"]) from None
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(max_bytes + 1)
            except OSError as exc:
                raise InputFileError([f"{path}: cannot read it ({exc.strerror})"]) from None
            if not raw:
                return
            number += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                # Skip the rest of this line without holding it.
                while (more := handle.readline(max_bytes)) and not more.endswith(b"\n"):
                    pass
                yield Line(number, "", f"line longer than {max_bytes:,} bytes")
                continue
            if number == 1:
                if raw.startswith(_UTF16):
                    raise InputFileError(
                        [f"{path}:1: the file is UTF-16; save it as UTF-8 (JSON lines)"]
                    )
                raw = raw.removeprefix(_BOM)
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            yield _decode(number, raw)


def _decode(number: int, raw: bytes) -> Line:
    nul = raw.find(b"\x00")
    if nul >= 0:
        return Line(number, "", f"NUL byte at column {nul + 1}")
    try:
        return Line(number, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        return Line(number, "", f"not UTF-8: byte 0x{bad:02x} at column {exc.start + 1}")
