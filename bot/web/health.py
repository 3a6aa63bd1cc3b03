"""What `/readyz` checks: the database, its migrations, and the platforms.

A worker is ready when its database answers within `ops.ready_timeout_s`, the
database's migration is the head of this code's chain (a worker of a newer or older
version must not take traffic on it), and every platform adapter it runs says it is
connected (its `ready` event is set; an adapter without one counts as connected
while it runs). Each check reports a one-line reason, credentials masked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.aio import wait_for
from bot.logs import redact_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from bot.db import Database

__all__ = ["Check", "Readiness"]


@dataclass(frozen=True)
class Check:
    """One readiness check's verdict."""

    name: str
    ok: bool
    detail: str


def _revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


class Readiness:
    """The checks behind `/readyz`, for one worker (see the module docstring)."""

    def __init__(
        self,
        db: Database | None,
        adapters: Sequence[Any] = (),
        *,
        timeout_s: float = 2.0,
        head: str | None = None,
    ) -> None:
        self.db = db
        self.adapters = list(adapters)
        self.timeout_s = timeout_s
        self._head = head
        # One database probe at a time: a server that does not answer must not pile
        # up stuck probes on the threads the bot's own work runs on.
        self._probe: asyncio.Future[str | None] | None = None
        self._probe_started = 0.0

    @property
    def head(self) -> str:
        """The newest migration this code ships."""
        if self._head is None:
            from bot.db import head_revision

            self._head = head_revision()
        return self._head

    async def check(self) -> list[Check]:
        """Every check, database first."""
        checks = [await self.database()]
        checks.extend(self.platform(adapter) for adapter in self.adapters)
        return checks

    async def database(self) -> Check:
        """The database answers in time, at this code's migration head."""
        if self.db is None:
            return Check("database", False, "no database is open")
        db = self.db
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(db.read(_revision))
            self._probe_started = time.monotonic()
        probe = self._probe
        try:
            revision = await wait_for(asyncio.shield(probe), self.timeout_s)
        except TimeoutError:
            waited = time.monotonic() - self._probe_started
            return Check("database", False, f"no answer from the database for {waited:.1f} s")
        except Exception as exc:
            reason = redact_text(str(exc).split("\n")[0]) or type(exc).__name__
            return Check("database", False, f"unreachable: {reason}")
        if revision != self.head:
            at = revision or "no migrations (an empty database)"
            return Check(
                "database",
                False,
                f"migrations at {at}, this code needs {self.head} (run bot db upgrade)",
            )
        return Check("database", True, f"reachable, migrations at head {revision}")

    @staticmethod
    def platform(adapter: Any) -> Check:
        """One adapter is connected to its platform."""
        name = str(getattr(adapter, "platform", type(adapter).__name__))
        ready = getattr(adapter, "ready", None)
        if ready is None or ready.is_set():
            return Check(name, True, "connected")
        return Check(name, False, "not connected to the platform (yet)")
