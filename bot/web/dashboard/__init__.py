"""The moderators' web dashboard: `create_dashboard(bot)` over a running bot's parts.

Served by `bot dashboard` and, when `dashboard.enabled`, by `bot run`. Page modules
register through `Pages` (bot/web/dashboard/pages.py explains how); accounts, sessions,
failed sign-ins and the audit log live in bot/web/dashboard/store.py.
"""

from bot.web.dashboard.app import DashboardServer, create_dashboard, start_dashboard
from bot.web.dashboard.pages import (
    Dashboard,
    DashboardError,
    Pages,
    csrf_token,
    dashboard,
    form_text,
    language,
    moderator,
    query_int,
    query_text,
    read_form,
    redirect,
    render,
    require_persona,
    see_other,
    t,
)
from bot.web.dashboard.store import AuditEntry, Moderator, Role, audit, list_audit

__all__ = [
    "AuditEntry",
    "Dashboard",
    "DashboardError",
    "DashboardServer",
    "Moderator",
    "Pages",
    "Role",
    "audit",
    "create_dashboard",
    "csrf_token",
    "dashboard",
    "form_text",
    "language",
    "list_audit",
    "moderator",
    "query_int",
    "query_text",
    "read_form",
    "redirect",
    "render",
    "require_persona",
    "see_other",
    "start_dashboard",
    "t",
]
