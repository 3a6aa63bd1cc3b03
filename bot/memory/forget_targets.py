"""What a forget request names (`m45`, `f12`, `s3`, `all`) and which rows it covers:
the owner check, a message's replies, the facts and summaries read from it, and the
older facts a fact replaced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text

from bot.memory.forget_sql import _IN, _ids, _json

_TABLES = {"fact": "facts", "summary": "summaries", "message": "messages"}
_PREFIX = {"f": "fact", "s": "summary", "m": "message"}


class ForgetRefused(PermissionError):
    """A forget request named a memory that is not the requester's (nothing deleted)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a person asked to forget: one item, or everything (`kind == "all"`)."""

    kind: Literal["message", "fact", "summary", "all"]
    item: int = 0

    @property
    def ref(self) -> str:
        """The id as people write it: `m45`, `f12`, `s3` or `all`."""
        return "all" if self.kind == "all" else f"{self.kind[0]}{self.item}"


def parse_target(target: str) -> Target:
    """`f12`, `s3`, `m45` or `all` (any case, spaces around); `ValueError` otherwise."""
    cleaned = target.strip().lower()
    if cleaned == "all":
        return Target("all")
    kind = _PREFIX.get(cleaned[:1])
    digits = cleaned[1:]
    if kind is None or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise ValueError(f"{target!r} is not a memory id (f12, s3, m45) or 'all'")
    return Target(kind, int(digits))  # type: ignore[arg-type]


def _check_owner(conn: Connection, user_id: int, target: Target) -> None:
    table = _TABLES[target.kind]
    owner = conn.execute(
        text(f"SELECT user_id FROM {table} WHERE id = :id"), {"id": target.item}
    ).first()
    if owner is None:
        raise KeyError(f"no memory {target.ref}")
    if owner.user_id != user_id:
        raise ForgetRefused(f"memory {target.ref} is not yours; nothing was deleted")


def _everything(
    conn: Connection, user_id: int, persona_id: str | None
) -> tuple[list[int], list[int], list[int]]:
    persona = "(:persona IS NULL OR persona_id = :persona)"
    params = {"uid": user_id, "persona": persona_id}
    return (
        _ids(conn, f"SELECT id FROM messages WHERE user_id = :uid AND {persona}", **params),
        _ids(conn, f"SELECT id FROM facts WHERE user_id = :uid AND {persona}", **params),
        _ids(conn, f"SELECT id FROM summaries WHERE user_id = :uid AND {persona}", **params),
    )


def _with_replies(conn: Connection, user_id: int, message_id: int) -> list[int]:
    replies = _ids(
        conn,
        "SELECT r.id FROM messages r JOIN messages m ON m.id = r.reply_to_id "
        "WHERE r.reply_to_id = :id AND r.direction = 'out' AND m.direction = 'in' "
        "AND r.user_id = :uid",
        id=message_id,
        uid=user_id,
    )
    return [message_id, *replies]


def _facts_from(conn: Connection, user_id: int, messages: Sequence[int]) -> list[int]:
    return _ids(
        conn,
        "SELECT DISTINCT f.id FROM facts f, json_each(f.source_ids) j "
        f"WHERE f.user_id = :uid AND j.value IN {_IN}",
        uid=user_id,
        ids=_json(messages),
    )


def _summaries_over(conn: Connection, user_id: int, messages: Sequence[int]) -> list[int]:
    return _ids(
        conn,
        "SELECT DISTINCT s.id FROM summaries s JOIN messages m ON m.conversation_id = "
        "s.conversation_id AND m.id BETWEEN s.first_message_id AND s.last_message_id "
        f"WHERE s.user_id = :uid AND m.id IN {_IN}",
        uid=user_id,
        ids=_json(messages),
    )


def _with_replaced(conn: Connection, user_id: int, facts: Sequence[int]) -> list[int]:
    """`facts` and, transitively, the older facts they superseded."""
    found = set(facts)
    frontier = set(facts)
    while frontier:
        older = _ids(
            conn,
            f"SELECT id FROM facts WHERE user_id = :uid AND superseded_by IN {_IN}",
            uid=user_id,
            ids=_json(frontier),
        )
        frontier = set(older) - found
        found |= frontier
    return sorted(found)
