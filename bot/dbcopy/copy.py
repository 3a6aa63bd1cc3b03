"""`bot db copy`: every table of one bot database into another, resumable, verified.

The order of work, each step safe to interrupt:

1. Open both ends. The source must be at the newest migration (it is read in a
   read-only snapshot and never changed); the target is refused if it holds rows
   and no unfinished copy *of the same source* (bot/dbcopy/progress.py).
2. Migrate the target to head, then pair the tables (bot/dbcopy/schema.py).
3. Copy table by table, parents before children, in primary-key batches; each
   batch commits together with the progress record, so a rerun continues after
   the last committed batch. A self-link pointing at a later row (a fact's
   `superseded_by`) is written NULL and set once its table is complete.
4. PostgreSQL target: reset every table's id sequence past the copied ids, let
   memory fill its PostgreSQL-only vector columns (`backfill_vectors`), build the
   secondary indexes dropped for the load again (bot/dbcopy/indexes.py), ANALYZE.
5. Verify every table (bot/dbcopy/verify.py); drop the progress record only when
   every count and checksum matches.

Stop the bot (every worker) before copying: rows written to the source meanwhile
may be missed, and verification then says which table differs.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.db import head_revision, sqlite_path, upgrade
from bot.dbcopy import indexes, progress, steps
from bot.dbcopy.endpoints import (
    Endpoint,
    check_source_revision,
    check_target_revision,
    identity,
    open_endpoint,
    same_database,
)
from bot.dbcopy.schema import Plan, build_plan, reflect, skipped_table
from bot.dbcopy.verify import TableCheck, verify
from bot.errors import StorageError, UsageError

__all__ = ["CopyResult", "copy_database", "verify_databases"]

Say = Callable[[str], None]


@dataclass
class CopyResult:
    """What a copy did: rows per table, time, vectors filled, the verification."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: bool = False
    vectors: int | None = None
    checks: list[TableCheck] = field(default_factory=list)
    #: Seconds per step: open (and migrate), rows, links, finish (sequences, vectors,
    #: ANALYZE), verify.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _quiet(_: str) -> None:
    pass


class _Clock:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.into[name] = round(now - self.last, 3)
        self.last = now


@contextmanager
def _ends(source_url: str, target_url: str) -> Iterator[tuple[Endpoint, Endpoint]]:
    if same_database(source_url, target_url):
        raise UsageError("--from and --to are the same database: copy into another one")
    source = open_endpoint("--from", source_url, must_exist=True, read_only=True)
    try:
        target = open_endpoint("--to", target_url, must_exist=False)
    except BaseException:
        source.dispose()
        raise
    try:
        yield source, target
    finally:
        source.dispose()
        target.dispose()


def _source_conn(engine: Engine) -> Connection:
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        # One snapshot for the whole read: batches agree with each other.
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return conn


def _nonempty(conn: Connection) -> list[str]:
    meta = reflect(conn)
    out = []
    for name in sorted(meta.tables):
        if skipped_table(name):
            continue
        if conn.execute(sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)).first():
            out.append(name)
    return out


_BUSY = "--to: another `bot db copy` is writing to this database right now"


def _lock(conn: Connection, target_url: str) -> IO[bytes] | None:
    # Two copies into one database at once would race on the same rows: the second
    # is refused. PostgreSQL: a session lock; SQLite: flock on a file beside the
    # database. Both are released when this process dies, kill -9 included.
    if conn.dialect.name == "postgresql":
        got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(hashtext('bot db copy'))").scalar()
        conn.commit()
        if not got:
            raise StorageError(_BUSY)
        return None
    path = sqlite_path(target_url)
    if path is None:
        return None
    # Held open until the copy ends (the caller closes it).
    handle = path.with_name(f"{path.name}.dbcopy-lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StorageError(_BUSY) from None
    return handle


def copy_database(
    source_url: str,
    target_url: str,
    *,
    batch_size: int = 2000,
    rate: float | None = None,
    replace_nul: bool = False,
    say: Say = _quiet,
) -> CopyResult:
    """Copy every table of `source_url` into `target_url` (see the module docstring).

    `rate` caps rows per second (a live server's load); `replace_nul` stores text's
    NUL characters as U+FFFD (as `bot.db.storable` does) instead of refusing them on a
    PostgreSQL target. Raises `StorageError` or
    `UsageError` with one line for a person; a verification mismatch is returned
    in `CopyResult.checks` (and the progress record is kept)."""
    try:
        return _copy(
            source_url,
            target_url,
            batch_size=batch_size,
            rate=rate,
            replace_nul=replace_nul,
            say=say,
        )
    except SQLAlchemyError as exc:  # a server gone mid-copy, a locked file, a full disk
        raise StorageError(
            f"database error during the copy: {steps.first_line(exc)} (run the same command "
            "again to continue)"
        ) from None


def _copy(
    source_url: str,
    target_url: str,
    *,
    batch_size: int,
    rate: float | None,
    replace_nul: bool,
    say: Say,
) -> CopyResult:
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    started = time.monotonic()
    result = CopyResult()
    clock = _Clock(result.phases)
    with _ends(source_url, target_url) as (source, target):
        check_source_revision(source, source_url)
        check_target_revision(target)
        name = identity(source_url)
        head = head_revision()
        guard = target.engine.connect()
        held: IO[bytes] | None = None
        try:
            held = _lock(guard, target_url)
            found = _prepare_target(target, name, head)
            result.resumed = found is not None
            with _source_conn(source.engine) as src, target.engine.connect() as dst:
                plan = build_plan(reflect(src), reflect(dst))
                src.rollback()
                dst.commit()
                record = _start(dst, plan, found, name, head)
                state = record.tables
                if found is not None:
                    say(f"resuming the copy from {source.shown}")
                clock.lap("open")
                for table in plan.tables:
                    result.rows[table.name] = steps.copy_table(
                        src,
                        dst,
                        table,
                        state[table.name],
                        batch_size,
                        rate,
                        say,
                        replace_nul=replace_nul,
                    )
                clock.lap("rows")
                for table in plan.tables:
                    if table.links and state[table.name].state != "linked":
                        steps.copy_links(src, dst, table, batch_size)
                clock.lap("links")
                if target.dialect == "postgresql":
                    steps.reset_sequences(dst, plan)
                    result.vectors = steps.backfill(dst, say)
                    if record.indexes:
                        say(f"indexes: building {len(record.indexes)} again")
                    indexes.rebuild(dst, record.indexes)
                    dst.exec_driver_sql("ANALYZE")
                    dst.commit()
                clock.lap("finish")
                say("verifying: counts and checksums of every table")
                result.checks = verify(
                    src, dst, plan, batch_size=max(batch_size, 1000), replace_nul=replace_nul
                )
                dst.commit()
                clock.lap("verify")
                if result.ok:
                    with dst.begin():
                        progress.drop(dst)
        finally:
            if held is not None:
                held.close()  # releases the flock; the empty file may stay
            if target.dialect == "postgresql":
                guard.exec_driver_sql("SELECT pg_advisory_unlock(hashtext('bot db copy'))")
                guard.commit()
            guard.close()
    result.seconds = time.monotonic() - started
    return result


def _prepare_target(target: Endpoint, name: str, head: str) -> progress.Progress | None:
    with target.engine.connect() as conn:
        found = progress.read(conn)
        if found is not None:
            if found.source != name:
                raise StorageError(
                    f"--to {target.shown} holds an unfinished copy of another database "
                    f"({found.source}): rerun with that --from to finish it, or copy into "
                    "an empty database"
                )
            if found.revision != head:
                raise StorageError(
                    f"--to {target.shown} holds an unfinished copy made at migration "
                    f"{found.revision} (this bot: {head}): copy into an empty database"
                )
            return found
        full = _nonempty(conn)
    if full:
        full.sort(key=lambda n: n != "messages")  # the table people know first
        shown = ", ".join(full[:3]) + (f" and {len(full) - 3} more" if len(full) > 3 else "")
        raise StorageError(
            f"--to {target.shown} is not empty ({shown} hold rows): copy into an empty "
            "database, or check it against the source with --verify-only"
        )
    if target.revision != head:
        upgrade(target.engine)
    return None


def _start(
    dst: Connection,
    plan: Plan,
    found: progress.Progress | None,
    name: str,
    head: str,
) -> progress.Progress:
    names = [t.name for t in plan.tables]
    with dst.begin():
        if found is None:
            progress.start(dst, name, head, names)
            indexes.drop_secondary(dst, names)
        else:
            progress.add_tables(dst, [n for n in names if n not in found.tables])
    current = progress.read(dst)
    dst.commit()
    assert current is not None
    return current


def verify_databases(
    source_url: str,
    target_url: str,
    *,
    batch_size: int = 5000,
    on_table: Callable[[TableCheck], None] | None = None,
    replace_nul: bool = False,
) -> list[TableCheck]:
    """Compare every table of two bot databases at head (`--verify-only`);
    `replace_nul`: read text's NUL as U+FFFD on both sides (a `--replace-nul` copy)."""
    try:
        return _verify(
            source_url,
            target_url,
            batch_size=batch_size,
            on_table=on_table,
            replace_nul=replace_nul,
        )
    except SQLAlchemyError as exc:
        raise StorageError(f"database error while comparing: {steps.first_line(exc)}") from None


def _verify(
    source_url: str,
    target_url: str,
    *,
    batch_size: int,
    on_table: Callable[[TableCheck], None] | None,
    replace_nul: bool,
) -> list[TableCheck]:
    with _ends(source_url, target_url) as (source, target):
        check_source_revision(source, source_url)
        head = head_revision()
        if target.revision != head:
            raise StorageError(
                f"--to {target.shown} is at migration {target.revision or '(none)'}, not "
                f"{head}: nothing to compare yet"
            )
        with _source_conn(source.engine) as src, _source_conn(target.engine) as dst:
            plan = build_plan(reflect(src), reflect(dst))
            return verify(
                src,
                dst,
                plan,
                batch_size=batch_size,
                on_table=on_table,
                replace_nul=replace_nul,
            )
