"""The pool of a server database (`bot.db.create_db_engine`): its bounds, connect
options, and how a connection the server dropped is kept from being handed out.

SQLAlchemy's pre-ping asks the server before every checkout (a round trip, about a
third of a small transaction's cost). For PostgreSQL through psycopg we look at the
connection instead: an idle connection has nothing to say, so a socket with
something to read (the server's "terminating connection" and its close, after a
restart or `pg_terminate_backend`), a broken libpq state or a transaction left open
means a dead or unusable connection, which the pool drops and replaces
(`DisconnectionError` at checkout). What this cannot see (a peer gone without
closing, as when a network path dies) fails the first statement with "cannot
reach the database server", as a ping would have, and the pool is renewed then.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from bot.db import PoolOptions

__all__ = ["idle_and_open", "server_options", "watch_checkouts"]


def server_options(parsed: URL, pool: PoolOptions) -> dict[str, Any]:
    """`create_engine` keyword arguments for a server database at `parsed`."""
    psycopg = parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg"
    options: dict[str, Any] = {
        # Every connection the bound allows is kept once opened, the most recently
        # returned handed out first: SQLAlchemy closes an overflow connection at its
        # return, so under sustained load each wave of calls opened new ones, and
        # each new backend is a fork, a cold catalog cache and its prepared
        # statements lost (tests/test_db_postgres.py shows it). With
        # LIFO the connections a quiet hour leaves unused stay at the bottom, and
        # `pool_recycle` replaces one that sat too long when it is next taken.
        "pool_size": pool.most,
        "max_overflow": 0,
        "pool_use_lifo": True,
        "pool_timeout": pool.timeout_s,
        # psycopg's connections are checked locally at checkout (watch_checkouts).
        "pool_pre_ping": not psycopg,
        "pool_recycle": pool.recycle_s,
    }
    if parsed.get_backend_name() == "postgresql":
        given = set(parsed.query)  # what the URL says itself wins
        connect: dict[str, Any] = {}
        if "connect_timeout" not in given:
            connect["connect_timeout"] = max(1, round(pool.connect_timeout_s))
        if "application_name" not in given:
            connect["application_name"] = "personabot"
        if "options" not in given:
            # Times come back in UTC whatever the server's default zone; stored times
            # are aware (timestamptz), so this changes how they read, not what they are.
            connect["options"] = "-c timezone=UTC"
        options["connect_args"] = connect
    return options


def watch_checkouts(engine: Engine) -> None:
    """Refuse, at checkout, a psycopg connection that is not idle and open (the pool
    then replaces it: SQLAlchemy tries a new one up to three times)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if not idle_and_open(dbapi_conn):
            raise DisconnectionError("the server closed this connection")

    event.listen(engine, "checkout", on_checkout)


def idle_and_open(dbapi_conn: Any) -> bool:
    """Whether a psycopg connection back in the pool can be handed out: open, idle
    (no transaction), and with nothing from the server waiting on its socket."""
    from psycopg.pq import ConnStatus, TransactionStatus

    try:
        if dbapi_conn.closed:
            return False
        pgconn = dbapi_conn.pgconn
        if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
            return False
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        # Readable while idle: the server spoke unasked, which it does to say goodbye
        # (or EOF). Anything else it might send (a NOTIFY: the pool never LISTENs)
        # only costs a new connection.
        return not poller.poll(0)
    except Exception:  # a closed or broken handle: psycopg raises on .socket
        return False
