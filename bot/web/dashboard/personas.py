"""The persona pages: the list, the YAML editor with live problems, preview and diff,
save, versions with rollback, card import and export (logic: persona_service.py,
persona_cards.py; strings: persona_strings.py; the editor: static/personas.js).

Reading (the list, the editor, checks, previews, versions, exports) is open to every
account; saving, rollback and imports need an account that may change the persona.
Every change is written to the audit log in the transaction that records the
version it served.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from aiohttp import web
from sqlalchemy import Connection

from bot.llm.base import TokenCounter
from bot.personas.loader import LoadedPersona
from bot.personas.schema import persona_json_schema
from bot.web.dashboard.pages import (
    DashboardError,
    Pages,
    dashboard,
    form_text,
    moderator,
    query_text,
    read_form,
    redirect,
    render,
    require_persona,
)
from bot.web.dashboard.persona_cards import (
    EXPORT_FORMATS,
    ImportedItem,
    export_card_bytes,
    import_upload,
    serve_imported,
)
from bot.web.dashboard.persona_service import (
    MAX_TEXT_CHARS,
    PersonaService,
    SaveResult,
    parse_history,
)
from bot.web.dashboard.persona_strings import STRINGS
from bot.web.dashboard.store import Moderator, Role, audit

__all__ = ["NEW", "PERSONAS", "register"]

PERSONAS: web.AppKey[PersonaService] = web.AppKey("dashboard.personas", PersonaService)

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
#: The editor path of a persona not written yet (no id starts with `_`).
NEW = "_new"


def register(pages: Pages) -> None:
    """Add the persona pages."""
    state = pages.state
    backends = state.bot.backends

    async def tokens_for(loaded: LoadedPersona) -> TokenCounter:
        return (await backends.for_persona(loaded)).tokens

    pages.app[PERSONAS] = PersonaService(
        state.bot.personas,
        state.bot.db,
        tokenizer=state.settings.llm.tokenizer,
        context_window=state.settings.llm.context_window,
        tokens_for=tokens_for,
    )
    pages.strings(STRINGS)
    pages.nav("/personas", "nav.personas", order=10)
    pages.get("/personas", list_personas)
    pages.get("/personas/schema.json", schema)
    pages.post("/personas/import", import_card)
    pages.get("/personas/{pid}", editor)
    pages.post("/personas/{pid}/check", check, role=Role.VIEWER)
    pages.post("/personas/{pid}/preview", preview, role=Role.VIEWER)
    pages.post("/personas/{pid}/save", save)
    pages.get("/personas/{pid}/versions", versions)
    pages.get("/personas/{pid}/versions/{hash}", version)
    pages.post("/personas/{pid}/rollback", rollback)
    pages.get("/personas/{pid}/export", export)


def _service(request: web.Request) -> PersonaService:
    return request.app[PERSONAS]


def _pid(request: web.Request, *, new_ok: bool = False) -> str | None:
    """The persona id in the path (None: a new persona), or a 404 page."""
    pid = request.match_info["pid"]
    if new_ok and pid == NEW:
        return None
    if not _ID.match(pid) or pid not in _service(request).registry:
        raise DashboardError(404, "error.404", detail=f"persona {pid[:64]}")
    return pid


async def list_personas(request: web.Request) -> web.StreamResponse:
    context = await _list_context(_service(request))
    return render(request, "personas/list.html", {**context, "imported": None, "error": ""})


async def _list_context(service: PersonaService) -> dict[str, Any]:
    rows = [
        {
            "id": loaded.persona.id,
            "name": loaded.persona.name,
            "language": loaded.persona.language,
            "hash": loaded.content_hash[:12],
            "file": service.shown(loaded.path),
        }
        for loaded in service.serving()
    ]
    return {"rows": rows, "unserved": await service.unserved()}


async def schema(request: web.Request) -> web.StreamResponse:
    return web.json_response(persona_json_schema())


async def editor(request: web.Request) -> web.StreamResponse:
    pid = _pid(request, new_ok=True)
    who = moderator(request)
    service = _service(request)
    if pid is None:
        if not who.may(Role.MODERATOR):
            raise DashboardError(403, detail="new persona")
        return await _editor_page(request, None, _new_template(), "", None)
    text, base = await service.editor_text(pid)
    saved = query_text(request, "saved", max_chars=64)
    return await _editor_page(request, pid, text, base, None, saved=saved)


async def _editor_page(
    request: web.Request,
    pid: str | None,
    text: str,
    base: str,
    outcome: SaveResult | None,
    *,
    saved: str | None = None,
    status: int = 200,
) -> web.Response:
    service = _service(request)
    who = moderator(request)
    served = service.served(pid) if pid is not None else None
    checked = await service.check(text, pid)
    serving_text = served.source if served is not None else ""
    diff = service.diff(serving_text, text) if served is not None else None
    context: dict[str, Any] = {
        "pid": pid or NEW,
        "new": pid is None,
        "name": served.persona.name if served is not None else "",
        "text": text,
        "base": base,
        "serving_hash": served.content_hash if served is not None else "",
        "disk_differs": served is not None and base != served.content_hash,
        "problems": checked.problems,
        "diff": diff,
        "may_change": who.may(Role.MODERATOR) and (pid is None or who.may_change(pid)),
        "outcome": outcome,
        "saved": saved if saved and _HASH.match(saved) else None,
        "formats": list(EXPORT_FORMATS),
    }
    return render(request, "personas/editor.html", context, status=status)


async def check(request: web.Request) -> web.StreamResponse:
    pid = _pid(request, new_ok=True)
    form = await read_form(request)
    text = _yaml_field(form, default="")
    service = _service(request)
    checked = await service.check(text, pid)
    served = service.served(pid) if pid is not None else None
    diff = service.diff(served.source, text) if served is not None else None
    return web.json_response(
        {
            "ok": checked.ok,
            "busy": checked.busy,
            "problems": [p.as_json() for p in checked.problems],
            "diff": None
            if diff is None
            else [{"kind": d.kind, "old": d.old, "new": d.new, "text": d.text} for d in diff],
            "compared": served is not None,
        }
    )


async def preview(request: web.Request) -> web.StreamResponse:
    pid = _pid(request, new_ok=True)
    form = await read_form(request)
    text = _yaml_field(form, default="")
    message = form_text(form, "message", max_chars=20_000, default="")
    history = parse_history(form_text(form, "history", max_chars=200_000, default=""))
    user = form_text(form, "user", max_chars=200, default="") or "friend"
    group = form_text(form, "group", max_chars=10, default="") in ("1", "on", "true")
    if isinstance(history, str):
        return web.json_response({"ok": False, "error": history, "problems": []})
    if not message.strip():
        return web.json_response({"ok": False, "error": "message: write a message", "problems": []})
    checked, shown = await _service(request).preview(
        text, pid, message, history, user=user, direct=not group
    )
    return web.json_response(
        {
            "ok": shown is not None,
            "busy": checked.busy,
            "problems": [p.as_json() for p in checked.problems],
            "preview": shown,
        }
    )


async def save(request: web.Request) -> web.StreamResponse:
    pid = _pid(request, new_ok=True)
    who = require_persona(request, pid) if pid is not None else moderator(request)
    form = await read_form(request)
    text = _yaml_field(form)
    base = form_text(form, "base", max_chars=64, default="")
    service = _service(request)
    action = "persona.create" if pid is None else "persona.save"
    outcome = await service.save(
        pid, text, base, audit=_audit_save(who, action), allowed=who.may_change
    )
    if outcome.outcome == "forbidden":
        raise DashboardError(403, detail=f"persona {outcome.persona_id}")
    return await _after_save(request, pid, text, base, outcome)


async def _after_save(
    request: web.Request, pid: str | None, text: str, base: str, outcome: SaveResult
) -> web.StreamResponse:
    if outcome.outcome in ("saved", "unchanged"):
        raise redirect(f"/personas/{outcome.persona_id}?saved={outcome.content_hash}")
    status = 409 if outcome.outcome == "conflict" else 422
    return await _editor_page(request, pid, text, base, outcome, status=status)


def _audit_save(who: Moderator, action: str) -> Any:
    def write(conn: Connection, result: SaveResult) -> None:
        if result.outcome == "saved":
            target = f"persona:{result.persona_id}"
            audit(conn, who, action, target, result.before, result.after)

    return write


async def versions(request: web.Request) -> web.StreamResponse:
    pid = _pid(request)
    assert pid is not None
    service = _service(request)
    served = service.served(pid)
    rows = await service.versions(pid, limit=100)
    _, base = await service.editor_text(pid)
    return render(
        request,
        "personas/versions.html",
        {
            "pid": pid,
            "name": served.persona.name if served else pid,
            "rows": rows,
            "serving_hash": served.content_hash if served else "",
            "base": base,
            "may_change": moderator(request).may_change(pid),
        },
    )


async def version(request: web.Request) -> web.StreamResponse:
    pid = _pid(request)
    assert pid is not None
    content_hash = request.match_info["hash"]
    service = _service(request)
    row = await service.version(pid, content_hash) if _HASH.match(content_hash) else None
    if row is None:
        raise DashboardError(404, "error.404", detail=f"version {content_hash[:64]}")
    served = service.served(pid)
    _, base = await service.editor_text(pid)
    return render(
        request,
        "personas/version.html",
        {
            "pid": pid,
            "name": served.persona.name if served else pid,
            "row": row,
            "diff": service.diff(served.source if served else "", row.source),
            "serving_hash": served.content_hash if served else "",
            "base": base,
            "may_change": moderator(request).may_change(pid),
        },
    )


async def rollback(request: web.Request) -> web.StreamResponse:
    pid = _pid(request)
    assert pid is not None
    who = require_persona(request, pid)
    form = await read_form(request)
    content_hash = form_text(form, "hash", max_chars=64)
    base = form_text(form, "base", max_chars=64, default="")
    service = _service(request)
    outcome = await service.rollback(
        pid, content_hash, base, audit=_audit_save(who, "persona.rollback")
    )
    if outcome.outcome in ("saved", "unchanged"):
        raise redirect(f"/personas/{pid}?saved={outcome.content_hash}")
    if outcome.outcome == "problems" and not outcome.problems:
        raise DashboardError(404, "error.404", detail=f"version {content_hash[:64]}")
    version_row = await service.version(pid, content_hash)
    text = version_row.source if version_row is not None else ""
    return await _after_save(request, pid, text, base, outcome)


async def import_card(request: web.Request) -> web.StreamResponse:
    who = moderator(request)
    form = await read_form(request)
    upload = form.get("card")
    if not isinstance(upload, web.FileField):
        raise DashboardError(400, detail="card: choose a file")
    force = form_text(form, "force", max_chars=10, default="") in ("1", "on", "true")
    data = await asyncio.to_thread(upload.file.read, dashboard(request).config.max_body_bytes + 1)
    service = _service(request)

    def may_write(kind: Literal["persona", "world"], item_id: str) -> bool:
        if kind == "world":  # a world may serve every persona: an unlimited account
            return who.may(Role.MODERATOR) and who.personas is None
        return who.may_change(item_id)

    outcome = await import_upload(service, upload.filename, data, may_write=may_write, force=force)
    problems: list[str] = []
    if not outcome.error:

        def write(conn: Connection, item: ImportedItem) -> None:
            audit(conn, who, "persona.import", f"{item.kind}:{item.id}", item.before, item.after)

        problems = await serve_imported(service, outcome, audit=write)
    error = outcome.error or "\n".join(problems)
    context = await _list_context(service)
    return render(
        request,
        "personas/list.html",
        {**context, "imported": outcome.items, "error": error},
        status=422 if outcome.error else 200,
    )


async def export(request: web.Request) -> web.StreamResponse:
    pid = _pid(request)
    assert pid is not None
    fmt = query_text(request, "format", max_chars=10) or "png"
    if fmt not in EXPORT_FORMATS:
        raise DashboardError(400, detail="format: png, json or charx")
    from bot.personas.cards.errors import CardError

    try:
        card = await export_card_bytes(_service(request), pid, fmt)
    except CardError as exc:
        raise DashboardError(400, detail=f"{exc.field}: {exc.reason}") from None
    return web.Response(
        body=card.body,
        content_type=card.content_type,
        headers={"Content-Disposition": f'attachment; filename="{card.filename}"'},
    )


def _yaml_field(form: Any, *, default: str | None = None) -> str:
    """The editor's text. Browsers send a textarea's lines ending in CR LF; the
    file is written with LF, as the editor showed it."""
    text = form_text(form, "yaml", max_chars=2 * MAX_TEXT_CHARS, default=default)
    text = text.replace("\r\n", "\n")
    if len(text) > MAX_TEXT_CHARS:
        raise DashboardError(400, detail=f"yaml: at most {MAX_TEXT_CHARS} characters")
    return text


def _new_template() -> str:
    return (
        "# yaml-language-server: $schema=./persona.schema.json\n"
        "version: 1\n"
        "id: new-persona\n"
        "name: New Persona\n"
        "description: Who this persona is, in a line.\n"
        "language: en\n"
        "system_prompt: |\n"
        "  You are New Persona, talking with {{ user.display_name }} on {{ platform }}.\n"
    )
