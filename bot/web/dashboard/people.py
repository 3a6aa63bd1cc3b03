"""The people pages: find a person; what the bot remembers about them (facts and
summaries), their consent history, standing decisions and conversations; forget one
memory or everything, through `Memory.forget` (the path `/forget` takes: no byte
left), audited without the forgotten text.

Logic: data_service.py (reads), ops_service.forget_memory (forget). Reading is open
to every account. Forgetting one memory needs an account that may change the
memory's persona; forgetting everything of one persona, that persona; of every
persona, an account not limited to some personas.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from aiohttp import web

from bot.web.dashboard.data_service import NotFound, list_people, memory_persona, person_view
from bot.web.dashboard.data_strings import STRINGS
from bot.web.dashboard.ops_service import forget_memory
from bot.web.dashboard.pages import (
    DashboardError,
    Pages,
    dashboard,
    form_text,
    moderator,
    query_int,
    query_text,
    read_form,
    redirect,
    render,
    require_persona,
)
from bot.web.dashboard.store import Moderator, Role

__all__ = ["register"]

_REF = re.compile(r"^(all|[fsm][0-9]{1,18})$")


def register(pages: Pages) -> None:
    """Add the people pages."""
    pages.strings(STRINGS)
    pages.nav("/people", "nav.people", order=30)
    pages.get("/people", list_page)
    pages.get(r"/people/{uid:\d{1,18}}", person_page)
    pages.post(r"/people/{uid:\d{1,18}}/forget", forget)


async def list_page(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    query = query_text(request, "q", max_chars=256)
    platform = query_text(request, "platform", max_chars=32)
    before = query_int(request, "before", default=0, lo=0, hi=2**62) or None
    rows, older = await state.db.read(
        lambda conn: list_people(conn, query=query, platform=platform, before=before)
    )
    qs = urlencode([(k, v) for k, v in (("q", query), ("platform", platform)) if v])
    return render(
        request,
        "people/list.html",
        {
            "rows": rows,
            "older": older,
            "q": query or "",
            "platform": platform or "",
            "filters_qs": qs,
            "paged": before is not None,
        },
    )


def _may_forget(who: Moderator, persona: str | None) -> bool:
    if persona is None:
        return who.may(Role.MODERATOR) and who.personas is None
    return who.may_change(persona)


async def person_page(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    uid = int(request.match_info["uid"])
    try:
        view = await state.db.read(lambda conn: person_view(conn, uid))
    except NotFound:
        raise DashboardError(404) from None
    who = moderator(request)
    forgot = query_text(request, "forgot", max_chars=40)
    return render(
        request,
        "people/one.html",
        {
            "view": view,
            "may_forget": lambda persona: _may_forget(who, persona),
            "forget_personas": [p for p in view.personas if who.may_change(p)],
            "forgot": forgot if forgot and _REF.match(forgot) else None,
        },
    )


async def forget(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    uid = int(request.match_info["uid"])
    form = await read_form(request)
    target = form_text(form, "memory", max_chars=20).strip().lower()
    if not _REF.match(target):
        raise DashboardError(400, detail="memory: f12, s3, m45 or all")
    persona = form_text(form, "persona", max_chars=64, default="").strip() or None
    try:
        await state.db.read(lambda conn: person_view(conn, uid, limit=1))
    except NotFound:
        raise DashboardError(404) from None
    if target == "all":
        if persona is None:
            who = moderator(request)
            if not _may_forget(who, None):
                raise DashboardError(403, detail="every persona")
        else:
            who = require_persona(request, persona)
    else:
        owner = await state.db.read(lambda conn: memory_persona(conn, uid, target))
        if owner is None:
            raise DashboardError(404)
        who = require_persona(request, owner)
        persona = owner
    try:
        await forget_memory(state.bot, who, uid, target, persona_id=persona, now=state.now())
    except KeyError:
        raise DashboardError(404) from None
    except PermissionError:  # ForgetRefused: not this person's (checked above; a race)
        raise DashboardError(403, detail=target) from None
    raise redirect(f"/people/{uid}?forgot={target}")
