"""The overview (who you are, what you may change, recent changes) and the audit log."""

from __future__ import annotations

from aiohttp import web

from bot.web.dashboard.pages import (
    Pages,
    dashboard,
    moderator,
    query_int,
    query_text,
    render,
)
from bot.web.dashboard.store import list_audit

__all__ = ["register"]


def register(pages: Pages) -> None:
    pages.nav("/", "nav.home", order=0)
    pages.nav("/audit", "nav.audit", order=90)
    pages.get("/", overview)
    pages.get("/audit", audit_log)


async def overview(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    recent = await state.db.read(lambda conn: list_audit(conn, limit=10))
    return render(request, "home.html", {"me": moderator(request), "recent": recent})


async def audit_log(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    target = query_text(request, "target", max_chars=255)
    actor = query_text(request, "actor", max_chars=64)
    before = query_int(request, "before", default=0, lo=0, hi=2**62) or None
    entries = await state.db.read(
        lambda conn: list_audit(conn, target=target, actor=actor, before_id=before, limit=51)
    )
    more = len(entries) > 50
    entries = entries[:50]
    return render(
        request,
        "audit.html",
        {
            "entries": entries,
            "target": target or "",
            "actor": actor or "",
            "older": entries[-1].id if more and entries else None,
        },
    )
