"""Cleaning text that arrives from outside, before it is stored or shown to a model.

A leaf module: it imports nothing of the project.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_text", "truncate"]

# C0/C1 control characters except tab and newline; NUL is among them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text safe to store and prompt with: no NUL or control characters, no lone
    surrogates (they cannot be encoded as UTF-8), newlines normalized, NFC.

    Zero-width and bidi characters are kept: they are legitimate in many scripts
    (ZWJ in emoji, ZWNJ in Persian); adapters that render text decide about them.
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SURROGATE.sub("\ufffd", text)
    return unicodedata.normalize("NFC", text)


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
