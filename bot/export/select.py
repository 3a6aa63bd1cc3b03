"""The streaming read of the ledger: one SQL query, rows in conversation order.

Everything that can be decided per row is decided in SQL, next to the data: consent
as of the message's time, whether a later reply replaced this one, the live 👍/👎
count. Python then only walks the rows once, in (conversation, id) order, holding
one conversation window at a time; rows arrive through a server-side cursor in
batches (`yield_per`), so memory does not grow with the ledger.

SQLite reads run in a plain deferred transaction: one consistent snapshot (WAL lets
the bot keep writing meanwhile), unlike `bot.db`'s write engine, whose `BEGIN
IMMEDIATE` would hold the write lock for the whole export. On PostgreSQL the query
is one statement on a named (server-side) cursor in a READ ONLY transaction: one
snapshot too, and the bot's writes go on beside it.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    create_engine,
    event,
    exists,
    func,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

import bot.models as models
from bot.db import MIGRATIONS_DIR, PoolOptions, create_db_engine, current_revision, sqlite_path
from bot.errors import StorageError
from bot.export.errors import ExportError

__all__ = [
    "CONSENT_BEFORE_OPT_IN",
    "CONSENT_OK",
    "CONSENT_OPTED_OUT",
    "NEEDS_REVISION",
    "YIELD_PER",
    "ExportRow",
    "export_query",
    "open_read_engine",
    "persona_version",
    "read_in_background",
    "stream_rows",
]

#: The migration that added what the export reads (moderator corrections; 0004:
#: moderator flags, the reply index).
NEEDS_REVISION = "0015"

#: Rows fetched per round trip from the server-side cursor.
YIELD_PER = 2000

CONSENT_OK = 0
CONSENT_OPTED_OUT = 1
CONSENT_BEFORE_OPT_IN = 2

_t = SQLModel.metadata.tables
_messages: Table = _t[models.Message.__tablename__]
_users: Table = _t[models.User.__tablename__]
_conversations: Table = _t[models.Conversation.__tablename__]
_consent: Table = _t[models.ConsentEvent.__tablename__]
_feedback: Table = _t[models.Feedback.__tablename__]

# Kinds of rows that can appear in a dataset (apologies come along so they can be
# counted as a filter, and so the message they answered can be dropped with them).
_KINDS = ("message", "proactive", "greeting", "apology")
_UP, _DOWN = "👍", "👎"


def open_read_engine(url: str) -> Engine:
    """An engine for reading the ledger; refuses a missing or un-migrated database."""
    path = sqlite_path(url)
    if path is None:
        engine = create_db_engine(url, read_only=True, pool=PoolOptions(size=2, max_overflow=0))
    else:
        if not path.is_file():
            raise ExportError(f"database file {path} does not exist")
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_read_only)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    try:
        current = current_revision(engine)
    except (SQLAlchemyError, StorageError) as exc:
        engine.dispose()
        raise ExportError(f"cannot read the database: {exc}") from exc
    if not _has_revision(current, NEEDS_REVISION):
        engine.dispose()
        raise ExportError(
            f"the database is at migration {current or '(none)'}, the export needs "
            f"{NEEDS_REVISION} or later: run `bot db upgrade` first"
        )
    return engine


def _has_revision(current: str | None, needed: str) -> bool:
    # Any later revision will do: walk from the database's revision down to the base.
    if current is None:
        return False
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    try:
        return any(rev.revision == needed for rev in script.iterate_revisions(current, "base"))
    except CommandError:  # a revision this code does not know: newer than us
        return True


def _sqlite_read_only(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    dbapi_conn.isolation_level = None  # we begin ourselves, deferred (see module doc)
    dbapi_conn.execute("PRAGMA query_only=ON")
    dbapi_conn.execute("PRAGMA busy_timeout=5000")


def export_query(
    *, persona: str | None, since: datetime | None, until: datetime | None
) -> Select[Any]:
    """The rows of an export, ordered by conversation and id (see the module doc)."""
    m = _messages
    later = _messages.alias("later")
    superseded = case(
        (
            and_(m.c.direction == "out", m.c.reply_to_id.is_not(None), m.c.kind == "message"),
            exists().where(
                later.c.reply_to_id == m.c.reply_to_id,
                later.c.id > m.c.id,
                later.c.direction == "out",
                later.c.kind == "message",
                later.c.deleted_at.is_(None),
            ),
        ),
        else_=literal(False),
    )

    last_in = func.max(case((_consent.c.opted_in, _consent.c.at)))
    last_out = func.max(case((~_consent.c.opted_in, _consent.c.at)))
    consent = (
        select(
            _consent.c.user_id.label("user_id"),
            last_in.label("last_in"),
            last_out.label("last_out"),
        )
        .group_by(_consent.c.user_id)
        .subquery("consent")
    )
    consent_state = case(
        (m.c.user_id.is_(None), literal(CONSENT_OK)),
        (_users.c.opted_out, literal(CONSENT_OPTED_OUT)),
        (
            and_(
                consent.c.last_out.is_not(None),
                (consent.c.last_in.is_(None)) | (consent.c.last_in < consent.c.last_out),
            ),
            literal(CONSENT_OPTED_OUT),
        ),
        (
            and_(consent.c.last_out.is_not(None), m.c.created_at < consent.c.last_in),
            literal(CONSENT_BEFORE_OPT_IN),
        ),
        else_=literal(CONSENT_OK),
    )

    # A reaction counts as it stands now: the latest add/remove event of each
    # (message, person, emoji), from people who have not opted out.
    f, g = _feedback.alias("f"), _feedback.alias("g")
    voter = _users.alias("voter")
    votes = (
        select(
            f.c.message_id.label("message_id"),
            func.sum(case((f.c.emoji.like(_UP + "%"), 1), else_=0)).label("ups"),
            func.sum(case((f.c.emoji.like(_DOWN + "%"), 1), else_=0)).label("downs"),
        )
        .join(voter, voter.c.id == f.c.user_id)
        .where(
            f.c.added,
            ~voter.c.opted_out,
            ~exists().where(
                g.c.message_id == f.c.message_id,
                g.c.user_id == f.c.user_id,
                g.c.emoji == f.c.emoji,
                (g.c.at > f.c.at) | ((g.c.at == f.c.at) & (g.c.id > f.c.id)),
            ),
        )
        .group_by(f.c.message_id)
        .subquery("votes")
    )

    statement = (
        select(
            m.c.id,
            m.c.conversation_id,
            m.c.user_id,
            m.c.direction,
            m.c.kind,
            m.c.status,
            m.c.text,
            m.c.truncated,
            m.c.reply_to_id,
            m.c.persona_id,
            m.c.persona_hash,
            m.c.backend,
            m.c.model,
            # As stored: parsed only for the few rows whose time a prompt needs.
            type_coerce(m.c.created_at, String).label("created_at"),
            m.c.deleted_at.is_not(None).label("deleted"),
            m.c.flagged_at.is_not(None).label("flagged"),
            type_coerce(superseded, Integer).label("superseded"),
            type_coerce(consent_state, Integer).label("consent"),
            func.coalesce(votes.c.ups, 0).label("ups"),
            func.coalesce(votes.c.downs, 0).label("downs"),
            _conversations.c.key.label("conversation_key"),
            _conversations.c.platform,
            _conversations.c.is_direct,
            _users.c.platform_user_id,
            _users.c.display_name,
            _users.c.timezone,
            m.c.corrected_text.label("correction"),
        )
        .select_from(
            m.join(_conversations, _conversations.c.id == m.c.conversation_id)
            .outerjoin(_users, _users.c.id == m.c.user_id)
            .outerjoin(consent, consent.c.user_id == m.c.user_id)
            .outerjoin(votes, votes.c.message_id == m.c.id)
        )
        .where(m.c.kind.in_(_KINDS))
        .order_by(m.c.conversation_id, m.c.id)
    )
    if persona is not None:
        statement = statement.where(m.c.persona_id == persona)
    if since is not None:
        statement = statement.where(m.c.created_at >= since)
    if until is not None:
        statement = statement.where(m.c.created_at < until)
    return statement


class ExportRow(NamedTuple):
    """One row of `export_query`, as a plain tuple with names (cheap to read)."""

    id: int
    conversation_id: int
    user_id: int | None
    direction: str
    kind: str
    status: str
    text: str
    truncated: bool
    reply_to_id: int | None
    persona_id: str
    persona_hash: str | None
    backend: str | None
    model: str | None
    created_at: Any  # SQLite's text form, or a datetime from other databases
    deleted: bool
    flagged: bool
    superseded: int
    consent: int
    ups: int
    downs: int
    conversation_key: str
    platform: str
    is_direct: bool
    platform_user_id: str | None
    display_name: str | None
    timezone: str | None
    correction: str | None  # a moderator's corrected reply (migration 0015)


def stream_rows(conn: Connection, statement: Select[Any]) -> Iterator[list[ExportRow]]:
    """The rows of `statement` in batches of `YIELD_PER`, from a server-side cursor."""
    result = conn.execution_options(stream_results=True, yield_per=YIELD_PER).execute(statement)
    make = ExportRow._make
    try:
        for batch in result.partitions():
            yield [make(row) for row in batch]
    finally:
        result.close()


def read_in_background(
    engine: Engine, statement: Select[Any], *, depth: int = 4
) -> Generator[list[ExportRow], None, None]:
    """`stream_rows` on a thread of its own, `depth` batches ahead of the consumer.

    SQLite evaluates the query while the GIL is released, so on two cores the
    database work overlaps the Python work on the rows instead of adding to it.
    The queue bounds memory; closing the iterator stops the reader.
    """
    batches: queue.Queue[list[ExportRow] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: list[ExportRow] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with engine.connect() as conn:
                for batch in stream_rows(conn, statement):
                    if not put(batch):
                        return
            put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    reader = threading.Thread(target=read, name="export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def persona_version(conn: Connection, content_hash: str) -> tuple[str, str] | None:
    """(path, YAML source) of the stored persona version with this content hash."""
    v = _t[models.PersonaVersion.__tablename__]
    row = conn.execute(
        select(v.c.path, v.c.source).where(v.c.content_hash == content_hash).limit(1)
    ).first()
    return None if row is None else (str(row.path), str(row.source))
