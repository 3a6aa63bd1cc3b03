"""The dashboard's rows: moderators, sessions, failed sign-ins and the audit log.

Plain functions over a SQLAlchemy `Connection`, so the CLI calls them in its own
transaction and a page calls them inside `db.run(work)`, next to the change it
audits (one commit for both). The same SQL serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, func, insert, select, update

from bot.errors import UsageError
from bot.models import DashboardAudit, DashboardLoginFailure, DashboardModerator, DashboardSession

__all__ = [
    "AuditEntry",
    "Moderator",
    "Role",
    "add_moderator",
    "audit",
    "clear_failures",
    "count_failures",
    "create_session",
    "delete_session",
    "find_moderator",
    "list_audit",
    "list_moderators",
    "password_account",
    "record_failure",
    "remove_moderator",
    "session_moderator",
    "upsert_discord_moderator",
    "verify_password",
]

_mods = DashboardModerator.__table__  # type: ignore[attr-defined]
_sessions = DashboardSession.__table__  # type: ignore[attr-defined]
_failures = DashboardLoginFailure.__table__  # type: ignore[attr-defined]
_audit = DashboardAudit.__table__  # type: ignore[attr-defined]

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PERSONA_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
#: How much of a before/after value the audit keeps (JSON characters).
MAX_AUDIT_VALUE = 256 * 1024

# argon2id with the library's defaults (RFC 9106's second recommendation).
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs what a wrong
# password does (no timing tells which names exist).
_DUMMY_HASH = _hasher.hash("not a password of anyone's")


class Role(IntEnum):
    """What an account may do; a higher role may do everything a lower one may."""

    VIEWER = 1  # reads every page, changes nothing
    MODERATOR = 2  # changes its personas and their conversations and people
    ADMIN = 3  # changes everything, every persona

    @classmethod
    def parse(cls, text: str) -> Role:
        """`admin`, `moderator` or `viewer`; `UsageError` otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise UsageError(f"role {text!r}: expected 'admin', 'moderator' or 'viewer'") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Moderator:
    """A dashboard account, as pages see it (never its password hash)."""

    id: int
    name: str
    role: Role
    #: The personas a moderator may change; None: every persona.
    personas: frozenset[str] | None
    via: str  # "password" or "discord"

    def may(self, role: Role) -> bool:
        """Whether this account holds `role` or a higher one."""
        return self.role >= role

    def may_change(self, persona_id: str | None = None) -> bool:
        """Whether it may change things of `persona_id` (None: anything at all).
        A viewer changes nothing; an admin, everything."""
        if self.role == Role.ADMIN:
            return True
        if self.role < Role.MODERATOR:
            return False
        if persona_id is None or self.personas is None:
            return True
        return persona_id in self.personas


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log (before and after decoded from JSON)."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any


def _moderator(row: Any) -> Moderator:
    personas = None if row.personas is None else frozenset(json.loads(row.personas))
    return Moderator(
        id=row.id,
        name=row.name,
        role=Role.parse(row.role),
        personas=personas,
        via="discord" if row.discord_id is not None else "password",
    )


def check_name(name: str) -> str:
    """A valid account name (letters, digits, `_.-`, at most 64), else `UsageError`."""
    if not NAME.fullmatch(name):
        raise UsageError(f"name {name[:80]!r}: use 1-64 letters, digits, '_', '.' or '-'")
    return name


def check_personas(personas: list[str] | None) -> list[str] | None:
    """Persona ids, each checked and deduplicated (None: every persona)."""
    if personas is None:
        return None
    for pid in personas:
        if not PERSONA_ID.fullmatch(pid):
            raise UsageError(f"persona {pid[:80]!r}: not a persona id")
    return sorted(set(personas))


def hash_password(password: str) -> str:
    """The argon2id hash of `password`; `UsageError` when it is too short or long."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"password: at most {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def add_moderator(
    conn: Connection,
    name: str,
    role: Role,
    password: str,
    *,
    personas: list[str] | None = None,
    now: datetime | None = None,
) -> Moderator:
    """Add a password account, or replace the role, password and personas of the
    account of that name (its sessions end: it signs in again)."""
    check_name(name)
    limited = check_personas(personas)
    values = {
        "role": role.label,
        "personas": None if limited is None else json.dumps(limited),
        "password_hash": hash_password(password),
    }
    found = conn.execute(select(_mods.c.id).where(_mods.c.name == name)).first()
    if found is None:
        conn.execute(insert(_mods).values(name=name, created_at=now or datetime.now(UTC), **values))
    else:
        conn.execute(update(_mods).where(_mods.c.id == found.id).values(**values))
        conn.execute(delete(_sessions).where(_sessions.c.moderator_id == found.id))
    moderator = find_moderator(conn, name)
    assert moderator is not None
    return moderator


def upsert_discord_moderator(
    conn: Connection,
    discord_id: str,
    username: str,
    role: Role,
    personas: list[str] | None,
    *,
    now: datetime | None = None,
) -> Moderator:
    """The account of a Discord sign-in, its role and personas as the guild's roles
    say now (named `discord:ID`, so no password account can take it)."""
    name = f"discord:{discord_id}"[:64]
    values = {
        "role": role.label,
        "personas": None if personas is None else json.dumps(sorted(set(personas))),
    }
    found = conn.execute(select(_mods.c.id).where(_mods.c.discord_id == discord_id)).first()
    if found is None:
        conn.execute(
            insert(_mods).values(
                name=name, discord_id=discord_id, created_at=now or datetime.now(UTC), **values
            )
        )
    else:
        conn.execute(update(_mods).where(_mods.c.id == found.id).values(**values))
    moderator = find_moderator(conn, name)
    assert moderator is not None
    return moderator


def find_moderator(conn: Connection, name: str) -> Moderator | None:
    """The account named `name`, or None."""
    row = conn.execute(select(_mods).where(_mods.c.name == name)).first()
    return None if row is None else _moderator(row)


def list_moderators(conn: Connection) -> list[Moderator]:
    """Every account, by name."""
    return [_moderator(r) for r in conn.execute(select(_mods).order_by(_mods.c.name))]


def remove_moderator(conn: Connection, name: str) -> bool:
    """Remove the account named `name` and its sessions; False when there is none."""
    found = conn.execute(select(_mods.c.id).where(_mods.c.name == name)).first()
    if found is None:
        return False
    conn.execute(delete(_sessions).where(_sessions.c.moderator_id == found.id))
    conn.execute(delete(_mods).where(_mods.c.id == found.id))
    return True


def password_account(conn: Connection, name: str) -> tuple[Moderator | None, str | None]:
    """The password account `name` and its hash, for `verify_password` (run that
    off the event loop and off the database thread: argon2 takes tens of ms)."""
    if not NAME.fullmatch(name):
        return None, None
    row = conn.execute(select(_mods).where(_mods.c.name == name)).first()
    if row is None or not row.password_hash:
        return None, None
    return _moderator(row), row.password_hash


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`; an unknown account (None) costs what a
    wrong password does, so timing does not tell which names exist."""
    try:
        _hasher.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return stored is not None


# -- sessions -------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create_session(
    conn: Connection, moderator: Moderator, *, now: datetime, lifetime: timedelta
) -> tuple[str, str]:
    """A new session for `moderator`: (the cookie's token, its CSRF token). Only the
    token's SHA-256 is stored; expired sessions are swept on the way."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    conn.execute(delete(_sessions).where(_sessions.c.expires_at < now))
    conn.execute(
        insert(_sessions).values(
            token_hash=_digest(token),
            moderator_id=moderator.id,
            csrf=csrf,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token, csrf


def session_moderator(
    conn: Connection, token: str, *, now: datetime
) -> tuple[Moderator, str] | None:
    """The account and CSRF token of the unexpired session `token`, or None."""
    if not token or len(token) > 128:
        return None
    row = conn.execute(
        select(_mods, _sessions.c.csrf)
        .join(_sessions, _sessions.c.moderator_id == _mods.c.id)
        .where(_sessions.c.token_hash == _digest(token), _sessions.c.expires_at > now)
    ).first()
    return None if row is None else (_moderator(row), row.csrf)


def delete_session(conn: Connection, token: str) -> None:
    """End the session `token` (sign out)."""
    conn.execute(delete(_sessions).where(_sessions.c.token_hash == _digest(token)))


# -- failed sign-ins ------------------------------------------------------------------


def record_failure(conn: Connection, keys: list[str], *, now: datetime, window: timedelta) -> None:
    """Count one failed sign-in under each key (rows older than `window` go)."""
    conn.execute(delete(_failures).where(_failures.c.at < now - window))
    for key in keys:
        conn.execute(insert(_failures).values(key=key[:128], at=now))


def count_failures(conn: Connection, key: str, *, now: datetime, window: timedelta) -> int:
    """Failed sign-ins under `key` within `window` before `now`."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(_failures)
            .where(_failures.c.key == key[:128], _failures.c.at >= now - window)
        ).scalar_one()
    )


def clear_failures(conn: Connection, key: str) -> None:
    """Forget the failures under `key` (a successful sign-in of that name)."""
    conn.execute(delete(_failures).where(_failures.c.key == key[:128]))


# -- the audit log --------------------------------------------------------------------


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_AUDIT_VALUE:
        return json.dumps({"truncated": True, "head": text[:MAX_AUDIT_VALUE]})
    return text


def audit(
    conn: Connection,
    actor: Moderator | str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    *,
    now: datetime | None = None,
) -> None:
    """Record that `actor` did `action` (e.g. `persona.save`) to `target` (e.g.
    `persona:alice`), with the thing `before` and `after` (JSON-able; large values
    are cut). Call it in the transaction that makes the change."""
    conn.execute(
        insert(_audit).values(
            at=now or datetime.now(UTC),
            actor=(actor.name if isinstance(actor, Moderator) else actor)[:64],
            action=action[:64],
            target=target[:255],
            before=_json(before),
            after=_json(after),
        )
    )


def list_audit(
    conn: Connection,
    *,
    target: str | None = None,
    actor: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """The newest audit entries first (before `before_id`, for paging), at most `limit`."""
    query = select(_audit).order_by(_audit.c.id.desc()).limit(max(1, min(limit, 500)))
    if target:
        query = query.where(_audit.c.target == target)
    if actor:
        query = query.where(_audit.c.actor == actor)
    if before_id is not None:
        query = query.where(_audit.c.id < before_id)
    return [
        AuditEntry(
            r.id, r.at, r.actor, r.action, r.target, json.loads(r.before), json.loads(r.after)
        )
        for r in conn.execute(query)
    ]
