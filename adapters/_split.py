"""Splitting a reply into parts a platform accepts: at paragraph, line, sentence or
word boundaries, never inside a code block when that can be avoided.

A leaf module: it imports nothing of the project.
"""

from __future__ import annotations

import re

__all__ = ["split_message"]

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s*")
_FENCE = "```"


def _code_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = text.find(_FENCE)
    while start != -1:
        end = text.find(_FENCE, start + 3)
        if end == -1:
            spans.append((start, len(text)))
            break
        spans.append((start, end + 3))
        start = text.find(_FENCE, end + 3)
    return spans


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    return any(s < at < e for s, e in spans)


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line, sentence or word
    boundary, in that order of preference, and never inside a ``` code block when a
    boundary outside one exists. A code block longer than `limit` is itself split at
    line boundaries and each part re-fenced, so every part renders as code. A single
    word longer than `limit` is the only thing ever cut mid-word."""
    if limit <= 8:
        raise ValueError("limit must be more than 8 characters")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        spans = _code_spans(rest)
        window = rest[:limit]
        cut = _best_cut(window, spans, limit)
        if cut is None:  # inside a code block that does not fit: split it, re-fenced
            block_start = next(s for s, e in spans if s < limit < e or s <= limit <= e)
            if block_start > limit // 3:
                cut = block_start
            else:
                cut = _split_code_block(rest, block_start, limit, parts)
                rest = rest[cut:].lstrip("\n")
                continue
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


def _best_cut(window: str, spans: list[tuple[int, int]], limit: int) -> int | None:
    floor = limit // 3
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        while at > floor:
            if not _inside(spans, at):
                return at
            at = window.rfind(sep, 0, at)
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > floor]
    ends = [e for e in ends if e <= len(window) and not _inside(spans, e)]
    if ends:
        return ends[-1]
    at = window.rfind(" ")
    while at > 0:
        if not _inside(spans, at):
            return at
        at = window.rfind(" ", 0, at)
    if any(s < limit <= e for s, e in spans):
        return None
    return limit


def _split_code_block(rest: str, start: int, limit: int, parts: list[str]) -> int:
    """Emit the code block starting at `start` as re-fenced parts; return where it ends."""
    if start:
        parts.append(rest[:start].rstrip())
    end = rest.find(_FENCE, start + 3)
    end = len(rest) if end == -1 else end + 3
    block = rest[start:end]
    first_nl = block.find("\n")
    opener = block[: first_nl + 1] if first_nl != -1 else _FENCE + "\n"
    body = block[len(opener) :]
    body = body[:-3] if body.endswith(_FENCE) else body
    room = limit - len(opener) - len("\n" + _FENCE)
    chunk = ""
    for line in body.splitlines(keepends=True):
        while len(line) > room:  # a single line longer than the room: hard cut
            if chunk:
                parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
                chunk = ""
            parts.append(f"{opener}{line[:room]}\n{_FENCE}")
            line = line[room:]
        if len(chunk) + len(line) > room:
            parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
            chunk = ""
        chunk += line
    if chunk.strip():
        parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
    return end
