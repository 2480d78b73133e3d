"""The console: server-rendered pages for the people on call (SPEC section 9).

`setup_console(app)` is the one call that adds it, after the API's routes. Access follows the
config (`config.console_access`): with `[[console.users]]` a login; without, open on a
loopback listen address and closed on any other, where every page says how to open it. The
webhook, the API and paging never depend on it.

The actions ack, un-ack and silence (acting.py), and the acknowledge link of every message
(ack_link.py), plug in through these hooks, as any other action can:

    from monitor_manager.web.console import Action, Badge, add_group_actions, add_group_badges
    from monitor_manager.web.console import console_form

    async def ack_actions(request, group):          # group: queries.GroupDetail
        return [Action("Acknowledge", f"/groups/{group.key}/ack", style="primary",
                       comment=True)] if group.open else []
    add_group_actions(app, ack_actions)             # buttons in the group page's action area

    async def ack_badges(request, keys):            # the alert groups a page shows
        return {key: [Badge("acknowledged by Li Si", kind="ack")] for key in acked(keys)}
    add_group_badges(app, ack_badges)               # beside each group, in lists and its page

    async def ack(request, ctx):                    # ctx.form: the posted fields, CSRF checked;
        ...                                         # ctx.user: who (None: open loopback console)
        return ctx.redirect(group_path(key))
    app.router.add_post("/groups/{key}/ack", console_form(ack))

Without providers the action area is absent from the page.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from monitor_manager.web.console import views
from monitor_manager.web.console.ack_link import setup_ack_link
from monitor_manager.web.console.acting import setup_acting
from monitor_manager.web.console.pages import (
    CONSOLE,
    Action,
    ActionProvider,
    Badge,
    BadgeProvider,
    Console,
    Context,
    console_form,
    console_page,
    current_user,
    secure_headers,
)
from monitor_manager.web.console.paths import GROUP_KEY, group_path

# A message's link from before the console (release 1 and 2 link the JSON API): a browser
# that opens it is sent to the group's page.
_API_GROUP = re.compile(rf"/api/v1/alert-groups/({GROUP_KEY})")


def setup_console(app: web.Application) -> None:
    """Add the console's routes, its state and its middleware to the app."""
    app[CONSOLE] = Console(app)
    views.add_routes(app)
    setup_acting(app)  # ack, un-ack, silences: through the hooks below, as any could
    setup_ack_link(app)  # the signed link of every firing message: public
    # First in the chain: it sees every answer, also the API's JSON 404 for a path that does
    # not exist, and the API group link before the API's token check.
    app.middlewares.insert(0, console_middleware)


def add_group_actions(app: web.Application, provider: ActionProvider) -> None:
    app[CONSOLE].hooks.group_actions.append(provider)


def add_group_badges(app: web.Application, provider: BadgeProvider) -> None:
    app[CONSOLE].hooks.group_badges.append(provider)


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in ("GET", "HEAD") and wants_html(request):
        m = _API_GROUP.fullmatch(request.path)
        if m and "Authorization" not in request.headers:
            return web.Response(status=303, headers={"Location": group_path(m.group(1))})
    response = await handler(request)
    unmatched = request.match_info.http_exception is not None
    if unmatched and response.status in (404, 405) and wants_html(request):
        # An unknown path answers JSON (SPEC section 4) unless the client asks for a page.
        ctx = Context.of(request)
        page = ctx.render("message.html", status=response.status, kind="not_found")
        exc = request.match_info.http_exception
        if exc is not None and "Allow" in exc.headers:
            page.headers["Allow"] = exc.headers["Allow"]
        return page
    return response


__all__ = [
    "CONSOLE",
    "Action",
    "Badge",
    "add_group_actions",
    "add_group_badges",
    "console_form",
    "console_page",
    "current_user",
    "group_path",
    "secure_headers",
    "setup_console",
]
