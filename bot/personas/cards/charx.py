"""CHARX: a zip holding `card.json` and the card's assets, read within bounds.

Every member is checked before a byte of it is inflated: its name (no absolute
paths, no `..`, no drive letters or backslashes, no NUL), its kind (no symlinks,
no encrypted members), its declared size, and their total. Inflating then counts
what actually comes out, so a member that lies about its size stops at the bound.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass

__all__ = ["MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "CharxError", "read_charx"]

#: A CHARX with more members than this is refused.
MAX_MEMBERS = 1000
#: No member may inflate past this.
MAX_MEMBER_BYTES = 16 * 1024 * 1024
#: All members together may not inflate past this.
MAX_TOTAL_BYTES = 64 * 1024 * 1024
_READ = 64 * 1024


class CharxError(ValueError):
    """The zip cannot be used; `member` names the part (or `zip`)."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Charx:
    """`card.json`'s bytes and the other members' bytes by their (checked) names."""

    card: bytes
    files: dict[str, bytes]


def _check_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    shown = repr(name)[1:-1][:200]
    if "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise CharxError(shown, "an unsafe member name (absolute, a drive, a backslash or NUL)")
    if any(part == ".." for part in name.split("/")):
        raise CharxError(shown, "a member name that leaves the archive ('..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise CharxError(shown, "a symbolic link (refused: it could point anywhere)")
    if info.flag_bits & 0x1:
        raise CharxError(shown, "an encrypted member")
    if info.file_size > MAX_MEMBER_BYTES:
        raise CharxError(shown, f"inflates to {info.file_size} bytes (at most {MAX_MEMBER_BYTES})")
    return name


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    limit = min(MAX_MEMBER_BYTES, budget)
    out = bytearray()
    with archive.open(info) as member:
        while chunk := member.read(_READ):
            out += chunk
            if len(out) > limit:
                raise CharxError(info.filename[:200], f"inflates past {limit} bytes")
    return bytes(out)


def read_charx(data: bytes) -> Charx:
    """The card and assets of a CHARX file; `CharxError` for anything unsafe or broken."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CharxError("zip", f"not a readable zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CharxError("zip", f"{len(infos)} members (at most {MAX_MEMBERS})")
        members = [(info, _check_name(info)) for info in infos if not info.is_dir()]
        declared = sum(info.file_size for info, _ in members)
        if declared > MAX_TOTAL_BYTES:
            raise CharxError("zip", f"inflates to {declared} bytes (at most {MAX_TOTAL_BYTES})")
        names = [name for _, name in members]
        if "card.json" not in names:
            raise CharxError("card.json", "missing: a CHARX holds card.json at its top level")
        budget = MAX_TOTAL_BYTES
        files: dict[str, bytes] = {}
        try:
            for info, name in members:
                body = _inflate(archive, info, budget)
                budget -= len(body)
                files[name] = body
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, CharxError):
                raise
            raise CharxError("zip", f"a member cannot be read ({exc})") from None
        except Exception as exc:  # zlib.error and friends from a corrupt stream
            raise CharxError("zip", f"a member cannot be inflated ({type(exc).__name__})") from None
    return Charx(files.pop("card.json"), files)
