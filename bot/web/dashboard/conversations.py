"""The conversations pages: browse and search by persona, platform, channel, person and
words; one conversation with each reply's persona version, model or adapter, latency,
tokens and why the bot spoke or stayed silent; flag a reply (it leaves the training
exports), take a flag back, correct a reply (a DPO pair in the next export).

Logic: data_service.py. Reading is open to every account; flags and corrections need
an account that may change the conversation's persona. Every change is audited in
its own transaction.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bot.web.dashboard.data_service import (
    CORRECTION_MAX_CHARS,
    FLAG_REASON_MAX_CHARS,
    SEARCH_WINDOW,
    ConversationFilter,
    NotFound,
    conversation_view,
    correct_reply,
    flag_reply,
    list_conversations,
    message_persona,
    parse_cursor,
    unflag_reply,
)
from bot.web.dashboard.data_strings import STRINGS
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
from bot.web.dashboard.store import Moderator

__all__ = ["register"]


def register(pages: Pages) -> None:
    """Add the conversations pages."""
    pages.strings(STRINGS)
    pages.nav("/conversations", "nav.conversations", order=20)
    pages.get("/conversations", list_page)
    pages.get(r"/conversations/{cid:\d{1,18}}", conversation_page)
    pages.post(r"/conversations/messages/{mid:\d{1,18}}/flag", flag)
    pages.post(r"/conversations/messages/{mid:\d{1,18}}/unflag", unflag)
    pages.post(r"/conversations/messages/{mid:\d{1,18}}/correct", correct)


async def list_page(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    where = ConversationFilter(
        persona=query_text(request, "persona", max_chars=64),
        platform=query_text(request, "platform", max_chars=32),
        channel=query_text(request, "channel", max_chars=256),
        person=query_text(request, "person", max_chars=256),
        text=query_text(request, "q", max_chars=200),
    )
    cursor = query_text(request, "cursor", max_chars=40)
    try:
        parse_cursor(cursor)
    except ValueError:
        raise DashboardError(400, detail="cursor: not a page cursor") from None
    page = await state.db.read(lambda conn: list_conversations(conn, where, cursor=cursor))
    return render(
        request,
        "conversations/list.html",
        {
            "page": page,
            "where": where,
            "personas": sorted(state.bot.personas.ids()),
            "search_window": SEARCH_WINDOW,
            "paged": cursor is not None,
            "filters_qs": urlencode(
                [
                    (name, value)
                    for name, value in (
                        ("persona", where.persona),
                        ("platform", where.platform),
                        ("channel", where.channel),
                        ("person", where.person),
                        ("q", where.text),
                    )
                    if value
                ]
            ),
        },
    )


async def conversation_page(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    cid = int(request.match_info["cid"])
    before = query_int(request, "before", default=0, lo=0, hi=2**62) or None
    try:
        view = await state.db.read(lambda conn: conversation_view(conn, cid, before=before))
    except NotFound:
        raise DashboardError(404) from None
    return render(
        request,
        "conversations/one.html",
        {
            "view": view,
            "paged": before is not None,
            "may_change": _who_may(request, view.conversation.persona_id),
            "correction_max": CORRECTION_MAX_CHARS,
            "reason_max": FLAG_REASON_MAX_CHARS,
        },
    )


def _who_may(request: web.Request, persona_id: str) -> bool:
    return moderator(request).may_change(persona_id)


async def _target(request: web.Request) -> tuple[int, int, Moderator]:
    """(message id, conversation id, account) of a reply the account may change; a
    404, 400 or 403 page otherwise."""
    state = dashboard(request)
    mid = int(request.match_info["mid"])
    try:
        persona, direction, cid = await state.db.read(lambda conn: message_persona(conn, mid))
    except NotFound:
        raise DashboardError(404) from None
    who = require_persona(request, persona)
    if direction != "out":
        raise DashboardError(400, detail="only the persona's replies can be flagged or corrected")
    return mid, cid, who


async def flag(request: web.Request) -> web.StreamResponse:
    mid, cid, who = await _target(request)
    form = await read_form(request)
    reason = form_text(form, "reason", max_chars=FLAG_REASON_MAX_CHARS, default="")
    state = dashboard(request)
    now = state.now()
    await state.db.run(lambda conn: flag_reply(conn, who, mid, reason, now=now))
    raise redirect(f"/conversations/{cid}#m{mid}")


async def unflag(request: web.Request) -> web.StreamResponse:
    mid, cid, who = await _target(request)
    state = dashboard(request)
    now = state.now()
    await state.db.run(lambda conn: unflag_reply(conn, who, mid, now=now))
    raise redirect(f"/conversations/{cid}#m{mid}")


async def correct(request: web.Request) -> web.StreamResponse:
    mid, cid, who = await _target(request)
    form = await read_form(request)
    text = form_text(form, "text", max_chars=CORRECTION_MAX_CHARS)
    state = dashboard(request)
    now = state.now()
    try:
        await state.db.run(lambda conn: correct_reply(conn, who, mid, text, now=now))
    except ValueError as exc:
        raise DashboardError(400, detail=str(exc)) from None
    raise redirect(f"/conversations/{cid}#m{mid}")
