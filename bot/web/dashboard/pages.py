"""The page registration API: how a page module adds its routes, strings and menu
entry, and what a handler uses to render, check permissions and read input.

A page module (`bot/web/dashboard/personas.py`, ...) defines `register(pages)`:

    def register(pages: Pages) -> None:
        pages.strings({"en": {"nav.personas": "Personas"}, "zh": {"nav.personas": "人设"}})
        pages.nav("/personas", "nav.personas", order=10)
        pages.get("/personas", list_personas)                      # any signed-in account
        pages.post("/personas/{pid}", save, role=Role.MODERATOR)   # CSRF checked first

Every route but sign-in and static files requires a session; `role` is the least
role that may use it (GET defaults to viewer, other methods to moderator); a POST,
PUT, PATCH or DELETE without the session's CSRF token never reaches its handler.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from bot.web.dashboard.i18n import LANGUAGE_NAMES, LANGUAGES, Catalogue
from bot.web.dashboard.store import Moderator, Role

if TYPE_CHECKING:
    from bot.app import App
    from bot.config import DashboardSettings, Settings
    from bot.db import Database

__all__ = [
    "DASHBOARD",
    "Dashboard",
    "DashboardError",
    "Handler",
    "Pages",
    "csrf_token",
    "dashboard",
    "form_text",
    "language",
    "moderator",
    "query_int",
    "query_text",
    "read_form",
    "redirect",
    "render",
    "require_persona",
    "see_other",
    "t",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

#: The request keys the middlewares fill in.
MODERATOR_KEY: web.RequestKey[Moderator] = web.RequestKey("dashboard.moderator", Moderator)
CSRF_KEY: web.RequestKey[str] = web.RequestKey("dashboard.csrf", str)
LANG_KEY: web.RequestKey[str] = web.RequestKey("dashboard.lang", str)


class DashboardError(Exception):
    """An error page (or JSON error) with `status` and the catalogue's `key`.

    Raise it from a handler: `raise DashboardError(403, "error.403", detail="...")`.
    The text shown is the catalogue's, in the reader's language; never a traceback.
    """

    def __init__(self, status: int, key: str | None = None, **values: Any) -> None:
        super().__init__(f"{status} {key}")
        self.status = status
        self.key = key or f"error.{status}"
        self.values = values


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str  # a catalogue key
    order: int
    role: Role


@dataclass
class Dashboard:
    """What every page handler can reach (`dashboard(request)`): the running bot's
    parts, the settings, the clock, the templates and the strings."""

    bot: App
    settings: Settings
    templates: jinja2.Environment
    catalogue: Catalogue = field(default_factory=Catalogue)
    nav: list[NavItem] = field(default_factory=list)
    #: The clock (tests pass their own).
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: Route role requirements, for the index of what exists.
    roles: dict[str, Role] = field(default_factory=dict)
    #: Password checks at once (argon2id takes 64 MiB and tens of ms each): a flood
    #: of sign-ins waits here instead of taking the machine's memory and cores.
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    @property
    def db(self) -> Database:
        """The bot's database (`await db.read(work)`, `await db.run(work)`)."""
        return self.bot.db

    @property
    def config(self) -> DashboardSettings:
        """The `dashboard` section of the settings."""
        return self.settings.dashboard

    def now(self) -> datetime:
        return self.clock()


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


class Pages:
    """What a page module's `register(pages)` receives."""

    def __init__(self, app: web.Application, state: Dashboard) -> None:
        self.app = app
        self.state = state

    def strings(self, texts: Mapping[str, Mapping[str, str]]) -> None:
        """Add this module's strings: `{"en": {key: text}, "zh": {key: text}}`."""
        self.state.catalogue.add(texts)

    def nav(self, href: str, label: str, *, order: int = 50, role: Role = Role.VIEWER) -> None:
        """A menu entry (shown to accounts holding `role`), by `order`."""
        self.state.nav.append(NavItem(href, label, order, role))
        self.state.nav.sort(key=lambda item: item.order)

    def get(self, path: str, handler: Handler, *, role: Role = Role.VIEWER) -> None:
        """A GET (and HEAD) route for accounts holding `role` or higher."""
        self.route("GET", path, handler, role=role)

    def post(self, path: str, handler: Handler, *, role: Role = Role.MODERATOR) -> None:
        """A POST route (CSRF-checked) for accounts holding `role` or higher."""
        self.route("POST", path, handler, role=role)

    def route(self, method: str, path: str, handler: Handler, *, role: Role) -> None:
        """Any method; unsafe methods are CSRF-checked by the middleware."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            who = moderator(request)
            if not who.may(role):
                raise DashboardError(403, detail=t(request, f"role.{role.label}"))
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", "page")
        self.app.router.add_route(method, path, guarded)
        self.state.roles[f"{method} {path}"] = role


# -- what a handler uses --------------------------------------------------------------


def dashboard(request: web.Request) -> Dashboard:
    """The dashboard's state (bot parts, settings, clock)."""
    return request.app[DASHBOARD]


def moderator(request: web.Request) -> Moderator:
    """The signed-in account (every registered route has one)."""
    who: Moderator | None = request.get(MODERATOR_KEY)
    if who is None:
        raise DashboardError(403, detail="not signed in")
    return who


def csrf_token(request: web.Request) -> str:
    """The CSRF token to send back: the form field `csrf`, or the `X-CSRF-Token` header."""
    token: str = request.get(CSRF_KEY, "")
    return token


def language(request: web.Request) -> str:
    """`en` or `zh`: the reader's language."""
    lang: str = request.get(LANG_KEY, LANGUAGES[0])
    return lang


def t(request: web.Request, key: str, **values: Any) -> str:
    """The catalogue's `key` in the reader's language."""
    return dashboard(request).catalogue.text(language(request), key, **values)


def require_persona(request: web.Request, persona_id: str) -> Moderator:
    """The signed-in account, when it may change `persona_id`; a 403 page otherwise
    (a viewer, or a moderator limited to other personas)."""
    who = moderator(request)
    if not who.may_change(persona_id):
        raise DashboardError(403, detail=f"persona {persona_id}")
    return who


async def read_form(request: web.Request) -> Mapping[str, Any]:
    """The posted form (urlencoded or multipart; already CSRF-checked, bounded by
    `dashboard.max_body_bytes`)."""
    return await request.post()


def form_text(
    form: Mapping[str, Any], name: str, *, max_chars: int = 1000, default: str | None = None
) -> str:
    """The text field `name`, at most `max_chars`; a 400 page when it is missing (and
    no `default`), not text, or longer. NUL characters are refused."""
    value = form.get(name)
    if value is None:
        if default is not None:
            return default
        raise DashboardError(400, detail=f"{name}: missing")
    if not isinstance(value, str):
        raise DashboardError(400, detail=f"{name}: expected text")
    if len(value) > max_chars:
        raise DashboardError(400, detail=f"{name}: at most {max_chars} characters")
    if "\x00" in value:
        raise DashboardError(400, detail=f"{name}: contains a NUL character")
    return value


def query_text(request: web.Request, name: str, *, max_chars: int = 200) -> str | None:
    """The query parameter `name` (None when absent or empty); 400 when too long."""
    value = request.query.get(name)
    if not value:
        return None
    if len(value) > max_chars or "\x00" in value:
        raise DashboardError(400, detail=f"{name}: at most {max_chars} characters")
    return value


def query_int(
    request: web.Request, name: str, *, default: int, lo: int = 0, hi: int = 1_000_000
) -> int:
    """The integer query parameter `name` within [lo, hi]; 400 when it is not one."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value[:20])
    except ValueError:
        raise DashboardError(400, detail=f"{name}: expected a whole number") from None
    if not lo <= number <= hi:
        raise DashboardError(400, detail=f"{name}: between {lo} and {hi}")
    return number


def redirect(location: str) -> web.HTTPSeeOther:
    """A 303 to a path of this dashboard: `raise redirect(...)` after a successful POST."""
    if not location.startswith("/") or location.startswith("//"):
        location = "/"
    return web.HTTPSeeOther(location)


def see_other(location: str) -> web.Response:
    """A 303 to a path of this dashboard, as a response to return (cookies can be set
    on it)."""
    if not location.startswith("/") or location.startswith("//"):
        location = "/"
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Render `template` (which extends `base.html`) with `context` plus `t`, `who`,
    `csrf`, `csrf_field`, `lang`, `nav`, `path` and `static`."""
    state = dashboard(request)
    lang = language(request)
    who: Moderator | None = request.get(MODERATOR_KEY)
    values: dict[str, Any] = {
        "t": lambda key, **kw: state.catalogue.text(lang, key, **kw),
        "who": who,
        "csrf": csrf_token(request),
        "csrf_field": lambda: Markup('<input type="hidden" name="csrf" value="{}">').format(
            csrf_token(request)
        ),
        "lang": lang,
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "nav": [item for item in state.nav if who is not None and who.may(item.role)],
        "path": request.path,
        "path_qs": request.path_qs,
        "static": _static_url,
        "Role": Role,
    }
    values.update(context or {})
    body = state.templates.get_template(template).render(values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _static_url(name: str) -> str:
    """/static/NAME?v=HASH: a changed file is fetched again, not served stale."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        return f"/static/{escape(name)}"
    digest = _static_hashes.get(path)
    if digest is None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        _static_hashes[path] = digest
    return f"/static/{name}?v={digest}"


_static_hashes: dict[Path, str] = {}


def templates() -> jinja2.Environment:
    """The dashboard's Jinja environment: templates/ of this package, autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
