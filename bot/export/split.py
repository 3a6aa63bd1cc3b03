"""Train/validation assignment by conversation: deterministic, seeded, leak-free.

A conversation's split depends only on the seed and its conversation key (not on
row ids, which differ between databases), so every record, DPO pair and re-run puts
a conversation on the same side.
"""

from __future__ import annotations

import hashlib

__all__ = ["SPLITS", "split_of"]

SPLITS = ("train", "validation")


def split_of(conversation_key: str, *, seed: str, validation_fraction: float) -> str:
    """`"validation"` for about `validation_fraction` of conversations, else `"train"`."""
    digest = hashlib.sha256(f"{seed}\x00{conversation_key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if position < validation_fraction else "train"
