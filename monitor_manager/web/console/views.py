"""The console's pages: thin handlers that read one page of data (queries.py) and render it.

Routes (all answer HTML):

    GET  /                              overview (?contact_group=NAME&page=N: one group's list)
    GET  /groups/{key}                  one alert group (?alerts=N&timeline=N pages)
    GET  /notifications                 ?state=failing|pending|...&channel=&contact_group=&page=
    GET  /watchdog                      heartbeats, peers, Alertmanagers, channels
    GET  /contact-groups                members, channels, routes; the route tester
    POST /contact-groups/route-test     the route tester's answer
    GET  /login, POST /login, POST /logout
    (acting.py: acting on alert groups and silences; ack_link.py: the acknowledge link)
    GET  /static/console/{name}         the stylesheet and the script
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from monitor_manager.converge.matchers import MatcherError, parse_matchers
from monitor_manager.converge.routing import explain
from monitor_manager.web.console import paths, queries
from monitor_manager.web.console.auth import SESSION_COOKIE
from monitor_manager.web.console.pages import (
    CONSOLE,
    Context,
    console_form,
    console_page,
)

MAX_PAGE = 100_000
ROUTE_TEST_CHARS = 10_000
ROUTE_TEST_LABELS = 100


def page_number(request: web.Request, name: str = "page") -> int:
    raw = request.query.get(name, "1")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_PAGE else 1


async def _badges(request: web.Request, cards: list[Any]) -> None:
    providers = request.app[CONSOLE].hooks.group_badges
    if not providers or not cards:
        return
    keys = [c.key for c in cards]
    for provider in providers:
        found = await provider(request, keys)
        for card in cards:
            card.badges += found.get(card.key, [])


async def overview(request: web.Request, ctx: Context) -> web.StreamResponse:
    contact_group = request.query.get("contact_group") or None
    data = await queries.overview(request.app, contact_group, page=page_number(request))
    await _badges(request, [c for s in data.sections for c in s.cards])
    acting = await queries.acting_summary(request.app, ctx.fmt.now)
    return ctx.render(
        "overview.html", data=data, acting=acting, contact_group=contact_group, refresh=30
    )


async def group(request: web.Request, ctx: Context) -> web.StreamResponse:
    return await render_group(request, ctx, request.match_info["key"])


async def render_group(
    request: web.Request, ctx: Context, key: str, status: int = 200, action_error: str = ""
) -> web.StreamResponse:
    """The group page; also after an action on it was refused (`action_error` says why)."""
    detail = await queries.group_detail(
        request.app,
        key,
        alerts_page=page_number(request, "alerts"),
        timeline_page=page_number(request, "timeline"),
    )
    if detail is None:
        return ctx.render("message.html", status=404, kind="no_group", key=key)
    await _badges(request, [detail])
    for provider in request.app[CONSOLE].hooks.group_actions:
        detail.actions += await provider(request, detail)
    return ctx.render(
        "group.html",
        status=status,
        group=detail,
        action_error=action_error,
        refresh=0 if action_error else 30,
    )


async def notifications(request: web.Request, ctx: Context) -> web.StreamResponse:
    state = request.query.get("state") or None
    if state not in (None, "failing", *queries.DELIVERY_STATES):
        state = None
    filters = queries.NotificationFilter(
        state=state,
        channel=(request.query.get("channel") or "")[:100] or None,
        contact_group=(request.query.get("contact_group") or "")[:100] or None,
    )
    rows, pager, failing = await queries.notifications(
        request.app, filters, page=page_number(request)
    )
    return ctx.render(
        "notifications.html",
        rows=rows,
        pager=pager,
        failing=failing,
        filters=filters,
        states=("failing", *queries.DELIVERY_STATES),
        channels=[c.name for c in ctx.config.channels],
        contact_groups=[g.name for g in ctx.config.contact_groups],
        refresh=30,
    )


async def watchdog(request: web.Request, ctx: Context) -> web.StreamResponse:
    return ctx.render(
        "watchdog.html",
        heartbeats=queries.heartbeats(request.app),
        peers=queries.peers(request.app),
        alertmanagers=queries.alertmanagers(request.app),
        channels=await queries.channel_health(request.app),
        refresh=30,
    )


async def contact_groups(request: web.Request, ctx: Context) -> web.StreamResponse:
    return ctx.render(
        "contact_groups.html", groups=await queries.contact_groups(request.app), tester=None
    )


def parse_labels(text: str) -> dict[str, str]:
    """The route tester's input: `name=value` or `name="value"`, by commas or lines, braces
    allowed (what amtool and the alert's label list look like). MatcherError says why not."""
    if len(text) > ROUTE_TEST_CHARS:
        raise MatcherError(f"at most {ROUTE_TEST_CHARS} characters")
    labels: dict[str, str] = {}
    for line in text.splitlines():
        for matcher in parse_matchers(line.strip()):
            if matcher.op != "=":
                raise MatcherError(f"{matcher}: give each label a value with =")
            labels[matcher.name] = matcher.value
    if len(labels) > ROUTE_TEST_LABELS:
        raise MatcherError(f"at most {ROUTE_TEST_LABELS} labels")
    return labels


async def route_test(request: web.Request, ctx: Context) -> web.StreamResponse:
    ctx.page_path = paths.CONTACT_GROUPS
    text = ctx.form.get("labels", "")
    tester: dict[str, Any] = {"text": text, "error": "", "matches": [], "labels": {}}
    try:
        tester["labels"] = parse_labels(text)
    except MatcherError as exc:
        tester["error"] = exc.message
    else:
        if not tester["labels"]:
            tester["error"] = ctx.t("rt_empty")
        else:
            tester["matches"] = explain(ctx.config, tester["labels"])
    return ctx.render(
        "contact_groups.html",
        status=200 if not tester["error"] else 400,
        groups=await queries.contact_groups(request.app),
        tester=tester,
    )


async def login_page(request: web.Request, ctx: Context) -> web.StreamResponse:
    target = paths.safe_next(request.query.get("next"))
    if ctx.access != "login" or ctx.session is not None:
        return ctx.redirect(target)
    return ctx.render("login.html", target=target, error="", name="")


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def login(request: web.Request, ctx: Context) -> web.StreamResponse:
    ctx.page_path = paths.LOGIN
    console = ctx.console
    target = paths.safe_next(ctx.form.get("next"))
    if ctx.access != "login":
        return ctx.redirect(target)
    client = _client(request)
    name = ctx.form.get("name", "")[:64]
    wait = console.throttle.wait(client)
    if wait > 0:
        response = ctx.render(
            "login.html", status=429, target=target, name=name, error="throttled", wait=wait
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    user = await console.verifier.check(ctx.config, name, ctx.form.get("password", ""))
    if user is None:
        console.throttle.failed(client)
        return ctx.render("login.html", status=401, target=target, name=name, error="wrong")
    console.throttle.succeeded(client)
    console.sessions.drop(request.cookies.get(SESSION_COOKIE))  # never reuse a session id
    session = console.sessions.create(user, ctx.config.console.session_lifetime)
    response = ctx.redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=int(ctx.config.console.session_lifetime),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=ctx.secure,
    )
    return response


async def logout(request: web.Request, ctx: Context) -> web.StreamResponse:
    ctx.console.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = ctx.redirect(paths.LOGIN if ctx.access == "login" else paths.OVERVIEW)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def static(request: web.Request) -> web.StreamResponse:
    found = request.app[CONSOLE].static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type, digest = found
    etag = f'"{digest}"'
    headers = {
        "Cache-Control": "public, max-age=86400",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(paths.OVERVIEW, console_page(overview))
    r.add_get(f"/groups/{{key:{paths.GROUP_KEY}}}", console_page(group))
    r.add_get(paths.NOTIFICATIONS, console_page(notifications))
    r.add_get(paths.WATCHDOG, console_page(watchdog))
    r.add_get(paths.CONTACT_GROUPS, console_page(contact_groups))
    r.add_post(paths.ROUTE_TEST, console_form(route_test))
    r.add_get(paths.LOGIN, console_page(login_page, login_page=True))
    r.add_post(paths.LOGIN, console_form(login, login_page=True))
    r.add_post(paths.LOGOUT, console_form(logout, login_page=True))
    r.add_get(f"{paths.STATIC}/{{name}}", static)
