"""Keyed pseudonyms for people: HMAC-SHA256 of the platform and the platform's user id.

The same key gives the same pseudonym in every export (so a person's conversations
can be grouped, or removed later on request), a different key gives unrelated ones,
and without the key a pseudonym cannot be tied back to an account. The key never
appears in the output.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["Pseudonymizer", "label_of"]


def label_of(pseudonym: str) -> str:
    """The display label of a user pseudonym: `u_3f9a2c…` -> `User-3f9a2c`."""
    return "User-" + pseudonym[2:8]


class Pseudonymizer:
    """Turns (platform, platform user id) into a stable, key-dependent pseudonym."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes")
        self._key = key
        # HMAC objects copy cheaply: precomputing the keyed state saves half the work.
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def user(self, platform: str, platform_user_id: str) -> str:
        """The pseudonym of one account, e.g. `u_3f9a2c…` (32 hex digits, 128 bits)."""
        mac = self._base.copy()
        mac.update(f"user\x00{platform}\x00{platform_user_id}".encode())
        return "u_" + mac.hexdigest()[:32]

    def label(self, platform: str, platform_user_id: str) -> str:
        """A short name that stands in for a display name in text (`User-3f9a2c`)."""
        return label_of(self.user(platform, platform_user_id))

    def conversation(self, key: str) -> str:
        """The pseudonym of a conversation key (keys contain platform ids), `c_…`."""
        mac = self._base.copy()
        mac.update(f"conversation\x00{key}".encode())
        return "c_" + mac.hexdigest()[:24]

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return "Pseudonymizer(key=<hidden>)"
