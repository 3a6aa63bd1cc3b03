"""Cleaning text that arrives from outside, before it is stored or shown to a model.

A leaf module: it imports nothing of the project.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["ESCAPE_SEQUENCE", "LONG_ESCAPE", "clean_text", "strip_controls", "truncate"]

# C0/C1 control characters except tab and newline; NUL is among them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

#: A terminal escape sequence: CSI (colours, cursor moves) or OSC (titles, links; at
#: most 512 characters before its terminator) in `LONG_ESCAPE`, or a two-character
#: escape (ESC c, ESC 7, …). Removed whole, so no `[31m` is left behind.
LONG_ESCAPE = (
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]{0,512}(?:\x07|\x1b\\|\x9c)"
)
ESCAPE_SEQUENCE = re.compile(LONG_ESCAPE + r"|\x1b[0-~]")


def strip_controls(text: str) -> str:
    """`text` without terminal escape sequences, control characters (tab and newline
    stay; CR and CRLF become newlines) or lone surrogates (they become U+FFFD).

    Local: each character's fate depends only on the escape sequence it is part of,
    so a stream can be cleaned piece by piece once a sequence is complete.
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x1b" in text or "\x9b" in text or "\x9d" in text:
        text = ESCAPE_SEQUENCE.sub("", text)
    text = _CONTROL.sub("", text)
    return _SURROGATE.sub("\ufffd", text)


def clean_text(text: str) -> str:
    """Text safe to store and prompt with: no NUL, control characters or terminal
    escape sequences, no lone surrogates (they cannot be encoded as UTF-8), newlines
    normalized, NFC.

    Zero-width and bidi characters are kept: they are legitimate in many scripts
    (ZWJ in emoji, ZWNJ in Persian); adapters that render text decide about them.
    """
    return unicodedata.normalize("NFC", strip_controls(text))


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters, cut at a word boundary when one is near; and
    whether anything was cut."""
    if len(text) <= limit:
        return text, False
    cut = text[:limit]
    space = cut.rfind(" ", max(0, limit - 200))
    if space > 0:
        cut = cut[:space]
    return cut, True
