"""Column types the tables share: times stored in UTC on every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["UTCDateTime", "ts"]


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC on every database, read back aware.

    Aware values are converted to UTC before they are written: SQLite's DATETIME
    would keep the wall-clock digits and drop the offset (12:00+05:00 read back as
    12:00 UTC), while PostgreSQL's timestamptz converts. Naive values are taken as
    UTC. Reads come back aware in UTC on both (SQLite hands back naive ones). The
    same conversion applies to values compared with the column in a query.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return _in_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return _in_utc(value)


_ZERO = timedelta(0)


def _in_utc(value: datetime | None) -> datetime | None:
    """`value` as an aware UTC time (naive is taken as UTC); None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.utcoffset() == _ZERO else value.astimezone(UTC)


def ts(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    """A UTC time column (`UTCDateTime`), NOT NULL unless `nullable`."""
    return Column(UTCDateTime(), nullable=nullable, index=index)
