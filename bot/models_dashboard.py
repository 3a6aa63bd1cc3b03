"""The tables of the moderators' dashboard (bot/web/dashboard): accounts, signed-in
sessions, failed sign-ins and the audit of changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from bot.model_types import ts as _ts

__all__ = ["DashboardAudit", "DashboardLoginFailure", "DashboardModerator", "DashboardSession"]


class DashboardModerator(SQLModel, table=True):
    """An account of the moderators' dashboard (bot/web/dashboard): a role, and for a
    moderator the personas it may change (JSON list; NULL: every persona). Password
    accounts hold an argon2 hash; Discord sign-ins hold the Discord user id."""

    __tablename__ = "dashboard_moderators"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    personas: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    password_hash: str | None = Field(default=None, max_length=255)
    discord_id: str | None = Field(default=None, max_length=32, unique=True)
    created_at: datetime = Field(sa_column=_ts())


class DashboardSession(SQLModel, table=True):
    """A signed-in browser: the SHA-256 of its cookie (never the cookie itself), its
    CSRF token, and when it expires."""

    __tablename__ = "dashboard_sessions"

    token_hash: str = Field(max_length=64, primary_key=True)
    moderator_id: int = Field(foreign_key="dashboard_moderators.id", index=True, ondelete="CASCADE")
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))


class DashboardLoginFailure(SQLModel, table=True):
    """A failed sign-in, under one key per limit (`name:NAME`, `ip:ADDRESS`), so every
    worker counts the same failures."""

    __tablename__ = "dashboard_login_failures"
    __table_args__ = (Index("ix_dashboard_login_failures_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=128)
    at: datetime = Field(sa_column=_ts())


class DashboardAudit(SQLModel, table=True):
    """Every change made through the dashboard: who, what, to what, when, and the
    thing before and after (JSON)."""

    __tablename__ = "dashboard_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts(index=True))
    actor: str = Field(max_length=64, index=True)
    action: str = Field(max_length=64)
    target: str = Field(max_length=255, index=True)
    before: str = Field(default="null", sa_column=Column(Text, nullable=False))
    after: str = Field(default="null", sa_column=Column(Text, nullable=False))
