"""The console's page machinery: who is asking (access, session, language), rendering with
the security headers every page carries, and the decorators every console handler is wrapped
in, so no page forgets a check.

- `console_page` for GET pages: a closed console answers its closed page, a console with
  users sends someone without a session to the login page.
- `console_form` for POST handlers: the same, plus a bounded urlencoded body and the CSRF
  token; a handler gets the form and the context (`ctx.user` says who makes the change).
- `public=True` on either skips the access check and nothing else: for the pages whose URL is
  the credential (the signed acknowledge link), which work without a login and while the
  console is closed. Their forms still carry a CSRF token (from the anonymous cookie).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler

from monitor_manager import __version__, keys
from monitor_manager.config import Config, console_access
from monitor_manager.config.checks import ConsoleAccess
from monitor_manager.web.bodies import BodyError, read_body
from monitor_manager.web.console import paths
from monitor_manager.web.console.auth import (
    ANON_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    Sessions,
    Verifier,
    csrf_matches,
    csrf_token,
)
from monitor_manager.web.console.i18n import LANGUAGES, translate
from monitor_manager.web.console.times import TimeFormat, zone

log = logging.getLogger(__name__)
R = TypeVar("R", bound=web.StreamResponse)

HERE = Path(__file__).parent
LANG_COOKIE = "mm_lang"
NAME_COOKIE = "mm_name"  # the name last typed on an open console without users (a convenience)
MAX_NAME = 64
FORM_LIMIT = 64 * 1024
# No inline script or style anywhere: pages load one stylesheet and one script from here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Action:
    """A button on an alert group's page: a POST form to `url` (the CSRF token is added),
    with hidden `fields`, a comment box when `comment`, a required name box when `who` (an
    open console has nobody logged in to record). With `method="get"` it is a link to `url`
    instead (a page with a form of its own): `fields` become its query. `label` and `note`
    are already translated."""

    label: str
    url: str
    fields: tuple[tuple[str, str], ...] = ()
    style: str = "default"  # "primary" | "danger" | "default"
    comment: bool = False
    disabled: bool = False
    title: str = ""
    who: bool = False
    method: str = "post"  # "post" | "get"
    note: str = ""  # a line shown with it, e.g. what it would undo

    @property
    def href(self) -> str:
        """A GET action's link, its fields as the query."""
        if not self.fields:
            return self.url
        return self.url + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in self.fields)


@dataclass(frozen=True)
class Badge:
    """A mark beside an alert group in the lists and on its page ("acknowledged by ...")."""

    text: str
    kind: str = "info"  # "info" | "ack" | "silenced" | "warn"
    title: str = ""


ActionProvider = Callable[[web.Request, Any], Awaitable[list[Action]]]
"""(request, queries.GroupDetail) -> the actions to offer on that group's page."""
BadgeProvider = Callable[[web.Request, list[str]], Awaitable[dict[str, list[Badge]]]]
"""(request, alert group keys) -> badges per key, for the groups a page shows."""


@dataclass
class Hooks:
    group_actions: list[ActionProvider] = field(default_factory=list)
    group_badges: list[BadgeProvider] = field(default_factory=list)


class Console:
    """The console's state in the app (app[CONSOLE]): templates, sessions, the login
    throttle, the CSRF key (new at every start), static files, hooks."""

    def __init__(self, app: web.Application) -> None:
        clock = app[keys.CLOCK]
        self.sessions = Sessions(clock)
        self.throttle = LoginThrottle(clock)
        self.verifier = Verifier()
        self.key = secrets.token_bytes(32)
        self.hooks = Hooks()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every label, annotation and error is escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.static: dict[str, tuple[bytes, str, str]] = {}
        folder = resources.files("monitor_manager.web.console") / "static"
        for item in folder.iterdir():
            suffix = Path(item.name).suffix
            if suffix in STATIC_TYPES:
                body = item.read_bytes()
                digest = hashlib.sha256(body).hexdigest()[:12]
                self.static[item.name] = (body, STATIC_TYPES[suffix], digest)

    def static_url(self, name: str) -> str:
        return f"{paths.STATIC}/{name}?v={self.static[name][2]}"


CONSOLE = web.AppKey("console", Console)


@dataclass
class Context:
    """One request's view of the console."""

    request: web.Request
    console: Console
    config: Config
    access: ConsoleAccess
    lang: str
    session: Session | None
    fmt: TimeFormat
    set_lang: bool = False
    anon: str | None = None  # the CSRF cookie's value
    new_anon: bool = False
    form: dict[str, str] = field(default_factory=dict)
    page_path: str = paths.OVERVIEW  # where a POST-rendered page's language links go

    @classmethod
    def of(cls, request: web.Request) -> Context:
        console = request.app[CONSOLE]
        config = request.app[keys.CONFIG]
        asked = request.query.get("lang")
        cookie = request.cookies.get(LANG_COOKIE)
        lang = (
            asked
            if asked in LANGUAGES
            else cookie
            if cookie in LANGUAGES
            else config.templates.language
        )
        session = console.sessions.get(request.cookies.get(SESSION_COOKIE), config)
        anon = request.cookies.get(ANON_COOKIE)
        if anon is not None and not (8 <= len(anon) <= 64 and anon.isascii()):
            anon = None
        return cls(
            request=request,
            console=console,
            config=config,
            access=console_access(config),
            lang=lang,
            session=session,
            fmt=TimeFormat(zone(config), lang, request.app[keys.CLOCK]()),
            set_lang=asked in LANGUAGES,
            anon=anon,
        )

    @property
    def user(self) -> str | None:
        """Who is logged in; None on an open (loopback, no users) console."""
        return self.session.user if self.session else None

    @property
    def reachable(self) -> bool:
        """Whether this request may open the console's pages: an open console, or a login.
        A public page (the acknowledge link) shows no navigation where they are not."""
        return self.access == "open" or (self.access == "login" and self.session is not None)

    @property
    def remembered_name(self) -> str:
        """The name this browser last acted as on an open console (prefills name boxes)."""
        name = unquote(self.request.cookies.get(NAME_COOKIE, "")[: MAX_NAME * 12])
        return name if len(name) <= MAX_NAME and name.isprintable() else ""

    def remember_name(self, response: web.StreamResponse, name: str) -> None:
        if name and len(name) <= MAX_NAME and name != self.remembered_name:
            response.set_cookie(
                NAME_COOKIE,
                quote(name, safe=""),  # any script, as ASCII
                max_age=365 * 86400,
                path="/",
                httponly=True,
                samesite="Lax",
                secure=self.secure,
            )

    def t(self, text_id: str, /, **values: Any) -> str:
        return translate(self.lang, text_id, **values)

    @property
    def csrf(self) -> str:
        return csrf_token(self.console.key, self._csrf_basis())

    def _csrf_basis(self) -> str:
        if self.session is not None:
            return self.session.csrf_basis
        if self.anon is None:
            self.anon, self.new_anon = secrets.token_urlsafe(24), True
        return self.anon

    def csrf_ok(self, given: str | None) -> bool:
        basis = self.session.csrf_basis if self.session is not None else self.anon
        return csrf_matches(self.console.key, basis, given)

    @property
    def secure(self) -> bool:
        """HTTPS here or at a proxy in front: cookies are Secure then."""
        proto = self.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return self.request.secure or proto == "https"

    def url_with(self, **query: str | int | None) -> str:
        """This page's URL with some query parameters changed (None removes one)."""
        params = {k: v for k, v in self.request.query.items() if k != "lang"}
        for name, value in query.items():
            if value is None or value == "":
                params.pop(name, None)
            else:
                params[name] = str(value)
        path = self.request.path if self.request.method == "GET" else self.page_path
        if not params:
            return path
        return path + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())

    def render(self, template: str, status: int = 200, **data: Any) -> web.Response:
        data.setdefault("refresh", 0)
        page = self.console.env.get_template(template).render(
            ctx=self,
            t=self.t,
            fmt=self.fmt,
            lang=self.lang,
            paths=paths,
            static=self.console.static_url,
            instance=self.config.server.instance,
            version=__version__,
            **data,
        )
        response = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
        return self.finish(response)

    def redirect(self, location: str) -> web.Response:
        return self.finish(web.Response(status=303, headers={"Location": location}))

    def finish(self, response: R) -> R:
        if self.set_lang:
            response.set_cookie(
                LANG_COOKIE,
                self.lang,
                max_age=365 * 86400,
                path="/",
                httponly=True,
                samesite="Lax",
                secure=self.secure,
            )
        if self.new_anon and self.anon is not None:
            response.set_cookie(
                ANON_COOKIE,
                self.anon,
                path="/",
                httponly=True,
                samesite="Lax",
                secure=self.secure,
            )
            self.new_anon = False
        secure_headers(response)
        return response


def secure_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")


Handler = Callable[[web.Request, Context], Awaitable[web.StreamResponse]]


def console_page(
    handler: Handler, *, login_page: bool = False, public: bool = False
) -> AiohttpHandler:
    """A GET page: access checked (unless `public`), errors shown as a page (never a
    traceback)."""

    async def run(request: web.Request) -> web.StreamResponse:
        ctx = Context.of(request)
        try:
            refused = None if public else _refused(ctx, login_page)
            if refused is not None:
                return refused
            return await handler(request, ctx)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("console page %s failed", request.path)
            return ctx.render("message.html", status=500, kind="error")

    run.__name__ = handler.__name__
    return run


def console_form(
    handler: Handler, *, login_page: bool = False, public: bool = False
) -> AiohttpHandler:
    """A POST handler: access (unless `public`), a bounded urlencoded form, the CSRF token
    (and the browser's own Sec-Fetch-Site) checked before `handler` runs; `ctx.form` holds
    the fields."""

    async def run(request: web.Request) -> web.StreamResponse:
        ctx = Context.of(request)
        try:
            refused = None if public else _refused(ctx, login_page)
            if refused is not None:
                return refused
            if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                return ctx.render("message.html", status=403, kind="csrf")
            if request.content_type != "application/x-www-form-urlencoded":
                return ctx.render("message.html", status=415, kind="form")
            try:
                body = await read_body(request, FORM_LIMIT)
                fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
            except (BodyError, UnicodeDecodeError, ValueError):
                return ctx.render("message.html", status=400, kind="form")
            ctx.form = {k: v[0] for k, v in fields.items()}
            if not ctx.csrf_ok(ctx.form.get("csrf")):
                return ctx.render("message.html", status=403, kind="csrf")
            return await handler(request, ctx)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("console form %s failed", request.path)
            return ctx.render("message.html", status=500, kind="error")

    run.__name__ = handler.__name__
    return run


def _refused(ctx: Context, login_page: bool) -> web.StreamResponse | None:
    if ctx.access == "closed":
        host = ctx.config.server.listen.rsplit(":", 1)[0]
        return ctx.render("closed.html", status=403, host=host)
    if ctx.access == "login" and ctx.session is None and not login_page:
        if ctx.request.method in ("GET", "HEAD"):
            return ctx.redirect(f"{paths.LOGIN}?next={quote(str(ctx.request.rel_url), safe='')}")
        return ctx.render("message.html", status=401, kind="login")
    return None


def current_user(request: web.Request) -> str | None:
    """Who is logged in to the console for this request (None: nobody, or an open console);
    for recording who made a change."""
    return Context.of(request).user
