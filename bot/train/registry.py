"""The adapters registered for serving, per persona, in the `lora_adapters` table.

A persona has at most one `serving` adapter (every conversation not in a canary) and
at most one `canary` (a sticky share of its conversations; bot/train/canary.py). Every
change of status is one transaction, so a reader sees the old pair or the new pair,
never a persona with two serving adapters. Rows are never deleted: a retired or
rolled-back adapter stays for the audit and for `rollback` to return to.

    candidate ──deploy──▶ canary ──promote──▶ serving ──(newer promoted)──▶ retired
                            │                    │
                            └──rollback──▶ rolled_back ◀──rollback── (the previous
                                                              retired one serves again)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select, update

from bot.db import Database
from bot.errors import UsageError
from bot.models import LoraAdapterRow

__all__ = [
    "ActivePair",
    "AdapterRecord",
    "AdapterRegistry",
    "AdapterStatus",
    "check_adapter_name",
    "check_persona_id",
]

_t: Table = LoraAdapterRow.__table__  # type: ignore[attr-defined]

#: What vLLM serves an adapter as and what replies record: no spaces, slashes or
#: control characters, so it is safe in a URL, a log line and a shell.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_adapter_name(name: str) -> str:
    """`name` if it can be an adapter's served name; UsageError saying why otherwise."""
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise UsageError(
            f"adapter name {shown!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


_PERSONA = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # as persona files' `id`


def check_persona_id(persona_id: str) -> str:
    """`persona_id` if a persona file could have it as `id`; UsageError otherwise."""
    if not _PERSONA.fullmatch(persona_id):
        shown = persona_id if len(persona_id) <= 80 else persona_id[:77] + "..."
        raise UsageError(
            f"persona id {shown!r}: 1-64 lower-case letters, digits, '_' or '-' "
            "(the `id` in the persona file)"
        )
    return persona_id


class AdapterStatus(StrEnum):
    """Where an adapter stands; see the module docstring."""

    CANDIDATE = "candidate"
    CANARY = "canary"
    SERVING = "serving"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"


#: The statuses whose adapters must be loaded in vLLM.
LIVE = (AdapterStatus.CANARY, AdapterStatus.SERVING)


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    """One registered adapter."""

    id: int
    name: str
    persona_id: str
    path: str
    sha256: str
    base_model: str
    rank: int
    report: dict[str, Any]
    status: AdapterStatus
    canary_share: float
    forced: bool
    reason: str | None
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> AdapterRecord:
        try:
            report = json.loads(row.report)
        except ValueError:
            report = {}
        return cls(
            id=row.id,
            name=row.name,
            persona_id=row.persona_id,
            path=row.path,
            sha256=row.sha256,
            base_model=row.base_model,
            rank=row.rank,
            report=report if isinstance(report, dict) else {},
            status=AdapterStatus(row.status),
            canary_share=float(row.canary_share),
            forced=bool(row.forced),
            reason=row.reason,
            created_at=_utc(row.created_at),
            promoted_at=_utc(row.promoted_at) if row.promoted_at else None,
            retired_at=_utc(row.retired_at) if row.retired_at else None,
        )


@dataclass(frozen=True, slots=True)
class ActivePair:
    """A persona's serving adapter and canary (either may be None)."""

    serving: AdapterRecord | None = None
    canary: AdapterRecord | None = None


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AdapterRegistry:
    """Reads and changes the `lora_adapters` table; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading ---------------------------------------------------------------------

    async def get(self, name: str) -> AdapterRecord | None:
        """The adapter registered as `name`, or None."""

        def work(conn: Connection) -> AdapterRecord | None:
            row = conn.execute(select(_t).where(_t.c.name == name)).first()
            return None if row is None else AdapterRecord.from_row(row)

        return await self.db.read(work)

    async def all(self, persona_id: str | None = None) -> list[AdapterRecord]:
        """Every registered adapter (of one persona), newest first."""

        def work(conn: Connection) -> list[AdapterRecord]:
            query = select(_t).order_by(_t.c.id.desc())
            if persona_id is not None:
                query = query.where(_t.c.persona_id == persona_id)
            return [AdapterRecord.from_row(r) for r in conn.execute(query)]

        return await self.db.read(work)

    async def live(self) -> list[AdapterRecord]:
        """The adapters that must be loaded in vLLM: every canary and serving one."""

        def work(conn: Connection) -> list[AdapterRecord]:
            query = select(_t).where(_t.c.status.in_([s.value for s in LIVE])).order_by(_t.c.id)
            return [AdapterRecord.from_row(r) for r in conn.execute(query)]

        return await self.db.read(work)

    async def active(self) -> dict[str, ActivePair]:
        """Each persona's serving adapter and canary (personas with neither are absent)."""
        pairs: dict[str, ActivePair] = {}
        for record in await self.live():
            pair = pairs.get(record.persona_id, ActivePair())
            if record.status is AdapterStatus.SERVING:
                pair = ActivePair(serving=record, canary=pair.canary)
            else:
                pair = ActivePair(serving=pair.serving, canary=record)
            pairs[record.persona_id] = pair
        return pairs

    # -- changing --------------------------------------------------------------------

    async def register(
        self,
        *,
        name: str,
        persona_id: str,
        path: str,
        sha256: str,
        base_model: str,
        rank: int,
        report: dict[str, Any],
        canary_share: float,
        forced: bool = False,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> AdapterRecord:
        """Register `name` as the persona's canary with `canary_share` (1.0: serving
        at once, the previous serving adapter retired). A previous canary of the
        persona is retired: one canary at a time. UsageError if the name is taken."""
        check_adapter_name(name)
        check_persona_id(persona_id)
        if not 0.0 <= canary_share <= 1.0:
            raise UsageError(f"--canary {canary_share!r}: a share from 0 to 1")
        at = now or datetime.now(UTC)
        status = AdapterStatus.SERVING if canary_share >= 1.0 else AdapterStatus.CANARY

        def work(conn: Connection) -> AdapterRecord:
            if conn.execute(select(_t.c.id).where(_t.c.name == name)).first() is not None:
                raise UsageError(
                    f"an adapter named {name!r} is already registered; pick another --name"
                )
            replaced = AdapterStatus.SERVING if status is AdapterStatus.SERVING else None
            self._retire(conn, persona_id, AdapterStatus.CANARY, at, f"replaced by {name}")
            if replaced is not None:
                self._retire(conn, persona_id, replaced, at, f"replaced by {name}")
            conn.execute(
                insert(_t).values(
                    name=name,
                    persona_id=persona_id,
                    path=path,
                    sha256=sha256,
                    base_model=base_model,
                    rank=rank,
                    report=json.dumps(report, ensure_ascii=False, default=str),
                    status=status.value,
                    canary_share=canary_share,
                    forced=forced,
                    reason=reason,
                    created_at=at,
                    promoted_at=at if status is AdapterStatus.SERVING else None,
                )
            )
            return self._one(conn, name)

        return await self.db.run(work)

    async def set_share(self, name: str, share: float) -> AdapterRecord:
        """Change a canary's share of conversations (sticky: raising it only adds
        conversations, lowering it only removes some)."""
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"share {share!r}: from 0 to 1")

        def work(conn: Connection) -> AdapterRecord:
            record = self._one(conn, name)
            if record.status is not AdapterStatus.CANARY:
                raise UsageError(f"{name} is {record.status.value}, not a canary")
            conn.execute(update(_t).where(_t.c.id == record.id).values(canary_share=share))
            return self._one(conn, name)

        return await self.db.run(work)

    async def promote(
        self, name: str, *, reason: str = "promoted by hand", now: datetime | None = None
    ) -> AdapterRecord:
        """Make `name` (a canary or candidate) the persona's serving adapter; the one
        serving before is retired."""
        at = now or datetime.now(UTC)

        def work(conn: Connection) -> AdapterRecord:
            record = self._one(conn, name)
            if record.status not in (AdapterStatus.CANARY, AdapterStatus.CANDIDATE):
                raise UsageError(
                    f"{name} is {record.status.value}; only a canary or candidate is promoted"
                )
            self._retire(conn, record.persona_id, AdapterStatus.SERVING, at, f"replaced by {name}")
            conn.execute(
                update(_t)
                .where(_t.c.id == record.id)
                .values(
                    status=AdapterStatus.SERVING.value,
                    canary_share=1.0,
                    promoted_at=at,
                    reason=reason,
                )
            )
            return self._one(conn, name)

        return await self.db.run(work)

    async def rollback(
        self,
        persona_id: str,
        *,
        reason: str = "rolled back by hand",
        only: str | None = None,
        now: datetime | None = None,
    ) -> tuple[AdapterRecord, AdapterRecord | None]:
        """Take the persona's newest change back: its canary if it has one (its
        conversations return to the serving adapter), else its serving adapter, with
        the adapter retired most recently serving again (None: the base model).
        Returns (the adapter rolled back, the one now serving). `only`: roll back
        only if that is the adapter it would take back (UsageError otherwise), so a
        decision taken on an older reading never rolls back a newer adapter."""
        at = now or datetime.now(UTC)

        def work(conn: Connection) -> tuple[AdapterRecord, AdapterRecord | None]:
            live = {
                AdapterStatus(r.status): AdapterRecord.from_row(r)
                for r in conn.execute(
                    select(_t).where(
                        _t.c.persona_id == persona_id,
                        _t.c.status.in_([s.value for s in LIVE]),
                    )
                )
            }
            canary, serving = live.get(AdapterStatus.CANARY), live.get(AdapterStatus.SERVING)
            target = canary or serving
            if target is None:
                raise UsageError(f"persona {persona_id!r} has no canary or serving adapter")
            if only is not None and target.name != only:
                raise UsageError(f"{only} is no longer the newest adapter of {persona_id!r}")
            self._set(conn, target.id, AdapterStatus.ROLLED_BACK, at, reason)
            if canary is not None:
                return self._one(conn, target.name), serving
            previous = conn.execute(
                select(_t)
                .where(
                    _t.c.persona_id == persona_id,
                    _t.c.status == AdapterStatus.RETIRED.value,
                    _t.c.promoted_at.is_not(None),
                )
                .order_by(_t.c.retired_at.desc(), _t.c.id.desc())
            ).first()
            if previous is None:
                return self._one(conn, target.name), None
            conn.execute(
                update(_t)
                .where(_t.c.id == previous.id)
                .values(
                    status=AdapterStatus.SERVING.value,
                    retired_at=None,
                    reason=f"serving again: {target.name} rolled back",
                )
            )
            return self._one(conn, target.name), self._one(conn, previous.name)

        return await self.db.run(work)

    # -- inside a transaction --------------------------------------------------------

    @staticmethod
    def _one(conn: Connection, name: str) -> AdapterRecord:
        row = conn.execute(select(_t).where(_t.c.name == name)).first()
        if row is None:
            raise UsageError(f"no adapter named {name!r} is registered (see `bot adapters list`)")
        return AdapterRecord.from_row(row)

    @staticmethod
    def _set(
        conn: Connection, row_id: int, status: AdapterStatus, at: datetime, reason: str
    ) -> None:
        conn.execute(
            update(_t)
            .where(_t.c.id == row_id)
            .values(status=status.value, retired_at=at, reason=reason)
        )

    @staticmethod
    def _retire(
        conn: Connection, persona_id: str, status: AdapterStatus, at: datetime, reason: str
    ) -> None:
        conn.execute(
            update(_t)
            .where(_t.c.persona_id == persona_id, _t.c.status == status.value)
            .values(status=AdapterStatus.RETIRED.value, retired_at=at, reason=reason)
        )
