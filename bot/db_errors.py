"""Errors of `bot.db` as people read them: one line, credentials masked, unreachable
servers and full pools named as such; which errors are worth a retry; and the text
every supported database can store."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.errors import StorageError
from bot.logs import redact_text

__all__ = [
    "TRANSIENT_ATTEMPTS",
    "reason",
    "storable",
    "storage_error",
    "transient",
    "unreachable",
]


def storable(text: str) -> str:
    """`text` as every supported database stores it: NUL (PostgreSQL's text type
    refuses it) and lone surrogates (no UTF-8 for them; SQLite refuses them) become
    U+FFFD. Text already storable comes back as it is (the same object)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def reason(exc: SQLAlchemyError) -> str:
    """The driver's own message on one line, credentials masked, with a hint where
    the cause is a common one."""
    if isinstance(exc, PoolTimeout):
        pool = exc.args[0] if exc.args else ""
        return (
            "every database connection of this process is busy and none came free in "
            f"time ({str(pool).split(' (Background')[0]}); raise database.pool_size or "
            "database.pool_timeout_s"
        )
    orig = getattr(exc, "orig", None)
    raw = str(orig) if orig is not None else str(exc).split("\n")[0]
    # psycopg's messages span lines (a hint on the next one, tab-indented).
    text = redact_text(" ".join(part.strip() for part in raw.splitlines() if part.strip()))
    if "database is locked" in text:
        return f"{text} (another process holds a write lock; is a second bot running on this file?)"
    if "readonly database" in text or ("read-only" in text and "transaction" not in text):
        return f"{text} (the file or its directory is read-only)"
    return text


#: How often a transaction a server rolled back as a deadlock victim (or for a
#: serialization failure) is tried in all.
TRANSIENT_ATTEMPTS = 3


def transient(exc: SQLAlchemyError) -> bool:
    """Whether the server rolled the transaction back for a reason a rerun cures."""
    # SQLSTATE 40001 serialization_failure, 40P01 deadlock_detected (PostgreSQL).
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state in ("40001", "40P01")


def storage_error(exc: SQLAlchemyError) -> StorageError:
    """The `StorageError` a caller of `Database` gets for `exc`."""
    # The driver's own message (`orig`), one line: SQLAlchemy's str() adds the SQL and
    # a "Background on this error" link on lines of their own.
    why = reason(exc)
    if unreachable(exc):
        return StorageError(f"cannot reach the database server: {why}")
    return StorageError(f"database error: {why}")


def unreachable(exc: SQLAlchemyError) -> bool:
    """Whether `exc` says the server could not be reached (or the connection was lost)."""
    # A connection that could not be made (or was lost): psycopg's error then carries
    # no SQLSTATE of the server's, or one of class 08 ("connection exception").
    orig = getattr(exc, "orig", None)
    if orig is None or not type(orig).__module__.startswith("psycopg"):
        return False
    state = str(getattr(orig, "sqlstate", None) or "")
    return state.startswith("08") or (not state and isinstance(exc, OperationalError))
