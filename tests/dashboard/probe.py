"""A page module for tests only: one change per role and persona, audited, so the
core's permission, CSRF and audit paths are tested without the real pages."""

from __future__ import annotations

from aiohttp import web

from bot.web.dashboard import (
    Pages,
    Role,
    audit,
    dashboard,
    form_text,
    moderator,
    read_form,
    redirect,
    require_persona,
)


def register(pages: Pages) -> None:
    pages.strings({"en": {"probe.done": "done"}, "zh": {"probe.done": "完成"}})
    pages.post("/probe/persona/{pid}", change_persona)  # moderator of that persona
    pages.post("/probe/admin", change_anything, role=Role.ADMIN)
    pages.post("/probe/json", change_json)
    pages.get("/probe/boom", boom)


async def change_persona(request: web.Request) -> web.StreamResponse:
    pid = request.match_info["pid"]
    who = require_persona(request, pid)
    form = await read_form(request)
    note = form_text(form, "note", max_chars=100)
    await dashboard(request).db.run(
        lambda conn: audit(conn, who, "probe.change", f"persona:{pid}", None, {"note": note})
    )
    raise redirect("/audit")


async def change_anything(request: web.Request) -> web.StreamResponse:
    who = moderator(request)
    await dashboard(request).db.run(lambda conn: audit(conn, who, "probe.admin", "all"))
    return web.json_response({"ok": True})


async def change_json(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True, "who": moderator(request).name})


async def boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("secret-internal-detail")
