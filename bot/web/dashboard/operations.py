"""The operations page: live charts and queue depth from the same numbers as /metrics,
exports with their manifests, training runs with their reports, adapters with canary
results and promote / roll back buttons (bot/train/registry.py, as `bot adapters`).

Logic: ops_service.py. Reading is open to every account; promoting or rolling back an
adapter needs an account that may change its persona. Both are audited.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from bot.errors import UsageError
from bot.train.canary import CanaryVerdict, compare_canary
from bot.train.registry import AdapterRecord, AdapterRegistry, AdapterStatus
from bot.web.dashboard.data_strings import STRINGS
from bot.web.dashboard.ops_service import (
    MetricsHistory,
    list_exports,
    list_runs,
    snapshot,
)
from bot.web.dashboard.pages import (
    DashboardError,
    Pages,
    dashboard,
    moderator,
    query_text,
    redirect,
    render,
    require_persona,
)
from bot.web.dashboard.store import audit

__all__ = ["register"]

HISTORY: web.AppKey[MetricsHistory] = web.AppKey("dashboard.ops_history", MetricsHistory)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Characters of a manifest or report shown inline.
_SHOWN = 20_000
_ADAPTERS_SHOWN = 100


def register(pages: Pages) -> None:
    """Add the operations page."""
    pages.app[HISTORY] = MetricsHistory()
    pages.strings(STRINGS)
    pages.nav("/operations", "nav.operations", order=40)
    pages.get("/operations", ops_page)
    pages.get("/operations/metrics.json", metrics_json)
    pages.post("/operations/adapters/{name}/promote", promote)
    pages.post("/operations/adapters/{name}/rollback", rollback)


def _pretty(data: dict[str, Any] | None) -> str:
    if data is None:
        return ""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "\n…"


async def _verdicts(request: web.Request, adapters: list[AdapterRecord]) -> dict[str, str]:
    state = dashboard(request)
    cfg = state.settings.finetune
    found: dict[str, str] = {}
    for record in adapters:
        if record.status is not AdapterStatus.CANARY:
            continue
        try:
            verdict: CanaryVerdict = await compare_canary(
                state.db, record, margin=cfg.rollback_margin, min_feedback=cfg.min_feedback
            )
            found[record.name] = verdict.reason
        except Exception as exc:  # the page still shows the rest
            found[record.name] = f"could not compare: {type(exc).__name__}"
    return found


async def ops_page(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    snap = await snapshot(state.bot, state.now())
    request.app[HISTORY].add(snap)
    exports_dir = state.settings.export.out_dir
    runs_dir = state.settings.finetune.out_dir
    exports = list_exports(exports_dir)
    runs = list_runs(runs_dir)
    adapters = (await AdapterRegistry(state.db).all())[:_ADAPTERS_SHOWN]
    who = moderator(request)
    done = query_text(request, "done", max_chars=120)
    return render(
        request,
        "operations/index.html",
        {
            "snap": snap,
            "exports": exports,
            "exports_dir": str(exports_dir),
            "runs": runs,
            "runs_dir": str(runs_dir),
            "adapters": adapters,
            "verdicts": await _verdicts(request, adapters),
            "may_change": who.may_change,
            "pretty": _pretty,
            "done": done,
        },
    )


async def metrics_json(request: web.Request) -> web.StreamResponse:
    state = dashboard(request)
    snap = await snapshot(state.bot, state.now())
    history = request.app[HISTORY]
    history.add(snap)
    return web.json_response({"now": snap, "points": list(history.points)})


async def _adapter(request: web.Request) -> AdapterRecord:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise DashboardError(404)
    record = await AdapterRegistry(dashboard(request).db).get(name)
    if record is None:
        raise DashboardError(404)
    return record


def _state(record: AdapterRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"name": record.name, "status": record.status.value, "share": record.canary_share}


async def promote(request: web.Request) -> web.StreamResponse:
    record = await _adapter(request)
    who = require_persona(request, record.persona_id)
    state = dashboard(request)
    registry = AdapterRegistry(state.db)
    try:
        after = await registry.promote(
            record.name, reason=f"promoted by {who.name} (dashboard)", now=state.now()
        )
    except UsageError as exc:
        raise DashboardError(400, detail=str(exc)) from None
    await state.db.run(
        lambda conn: audit(
            conn, who, "adapter.promote", f"adapter:{record.name}", _state(record), _state(after)
        )
    )
    raise redirect(f"/operations?done=promoted+{record.name}")


async def rollback(request: web.Request) -> web.StreamResponse:
    record = await _adapter(request)
    who = require_persona(request, record.persona_id)
    state = dashboard(request)
    registry = AdapterRegistry(state.db)
    try:
        gone, serving = await registry.rollback(
            record.persona_id,
            reason=f"rolled back by {who.name} (dashboard)",
            only=record.name,
            now=state.now(),
        )
    except UsageError as exc:
        raise DashboardError(400, detail=str(exc)) from None
    await state.db.run(
        lambda conn: audit(
            conn,
            who,
            "adapter.rollback",
            f"adapter:{record.name}",
            _state(record),
            {"rolled_back": _state(gone), "serving": _state(serving)},
        )
    )
    raise redirect(f"/operations?done=rolled+back+{record.name}")
