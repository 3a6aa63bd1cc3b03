"""The stored versions of personas (`persona_versions`): listing them, reading one
back, and recording a served one (a base of `PersonaService`, which owns `db`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select

from bot import models
from bot.db import Database
from bot.personas.loader import LoadedPersona
from bot.web.dashboard.persona_types import VersionRow

__all__ = ["Versions", "record_version"]


class Versions:
    """The versions side of `PersonaService` (bot/web/dashboard/persona_service.py)."""

    db: Database | None

    async def versions(self, persona_id: str, *, limit: int = 50) -> list[VersionRow]:
        """The stored versions of `persona_id`, newest first (without their text)."""
        if self.db is None:
            return []
        table = models.PersonaVersion.__table__  # type: ignore[attr-defined]

        def work(conn: Connection) -> list[VersionRow]:
            rows = conn.execute(
                select(table.c.content_hash, table.c.loaded_at, table.c.path)
                .where(table.c.persona_id == persona_id)
                .order_by(table.c.loaded_at.desc(), table.c.id.desc())
                .limit(max(1, min(limit, 500)))
            ).all()
            return [VersionRow(r.content_hash, r.loaded_at, r.path) for r in rows]

        return await self.db.read(work)

    async def version(self, persona_id: str, content_hash: str) -> VersionRow | None:
        """One stored version with its text."""
        if self.db is None or not _is_hash(content_hash):
            return None
        table = models.PersonaVersion.__table__  # type: ignore[attr-defined]

        def work(conn: Connection) -> VersionRow | None:
            row = conn.execute(
                select(table.c.content_hash, table.c.loaded_at, table.c.path, table.c.source).where(
                    table.c.persona_id == persona_id, table.c.content_hash == content_hash
                )
            ).first()
            return (
                VersionRow(row.content_hash, row.loaded_at, row.path, row.source) if row else None
            )

        return await self.db.read(work)


def record_version(conn: Connection, loaded: LoadedPersona) -> None:
    """Keep a served version in `persona_versions` (a version stored already is left)."""
    table = models.PersonaVersion.__table__  # type: ignore[attr-defined]
    found = conn.execute(
        select(table.c.id).where(
            table.c.persona_id == loaded.persona.id,
            table.c.content_hash == loaded.content_hash,
        )
    ).scalar()
    if found is None:
        conn.execute(
            insert(table).values(
                persona_id=loaded.persona.id,
                content_hash=loaded.content_hash,
                path=str(loaded.path),
                source=loaded.source,
                loaded_at=datetime.now(UTC),
            )
        )


def _is_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
