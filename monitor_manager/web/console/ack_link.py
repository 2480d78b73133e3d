"""The acknowledge link of every firing message: `{external_url}/ack/{token}` (SPEC section 8).

    GET  /ack/{token}   what is firing, who acknowledged it if anyone, and the form
    POST /ack/{token}   acknowledge as the member chosen, with a comment

The signed token is the credential: these pages work without a login and while the console
is closed (`public=True`), and show only the group the token names. What they promise:
- a GET changes nothing (mail and chat apps open links to preview them);
- a token that is not ours, altered or cut short: a page saying so, 400;
- a token whose group has resolved (or a later episode of it fires: the token names the one
  it was made for): a page saying so, 410, and nothing changes;
- the POST checks the token again, and its CSRF token (from the anonymous cookie), and that
  the name chosen is one of the contact group's members (any name when it has none), then
  acknowledges as `Actor(name, "link")`; an acknowledged group is not acknowledged twice:
  the page says who is on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from monitor_manager import keys
from monitor_manager.act.actions import ActionError, Actor
from monitor_manager.act.links import LinkError
from monitor_manager.converge.acks import Ack
from monitor_manager.store import StoreError
from monitor_manager.web.console import paths, queries
from monitor_manager.web.console.acting import FormError, check_comment, check_name
from monitor_manager.web.console.pages import Context, console_form, console_page

VIA = "link"
SHOWN_ALERTS = 5  # on a phone the form stays near the top
COMMENT_CHARS = 1000


@dataclass
class OpenLink:
    """A token that verified, naming a group that still fires in the episode it was made for."""

    token: str
    key: str
    opened_at: float
    detail: queries.GroupDetail
    ack: Ack | None
    members: list[str]
    ack_timeout: float


async def _open(request: web.Request, ctx: Context) -> OpenLink | web.Response:
    """The link's group, or the page saying why there is none."""
    token = request.match_info["token"]
    ctx.page_path = paths.ack_path(token)  # a POST's language links lead back here
    core = request.app[keys.CORE]
    await core.pipeline.load()  # the signing keys and memory, rebuilt after a failed commit
    try:
        key, opened_at = core.pipeline.links.verify(token)
    except LinkError:
        return ctx.render("ack.html", status=400, view="invalid", link=None, detail=None)
    try:
        group = core.actions.firing_group(key, opened_at)
    except ActionError:
        detail = await queries.group_detail(request.app, key, alerts_per_page=1)
        conv = core.pipeline.convergence
        now_open = conv.groups.get(key)
        again = (  # a later episode of the group fires: its messages carry their own link
            now_open is not None
            and conv.fires(now_open)
            and abs(now_open.created_at - opened_at) > 1e-3
        )
        return ctx.render(
            "ack.html", status=410, view="resolved", link=None, detail=detail, again=again
        )
    detail = await queries.group_detail(
        request.app, key, alerts_per_page=SHOWN_ALERTS, timeline_per_page=1
    )
    assert detail is not None  # the group is open: memory has it
    config = next((g for g in ctx.config.contact_groups if g.name == group.contact_group), None)
    return OpenLink(
        token=token,
        key=key,
        opened_at=opened_at,
        detail=detail,
        ack=core.actions.current_ack(group),
        members=[m.name for m in config.members] if config is not None else [],
        ack_timeout=config.ack_timeout if config is not None else 0.0,
    )


def _page(
    ctx: Context,
    link: OpenLink,
    view: str,
    status: int = 200,
    error: FormError | None = None,
    by: str = "",
    comment: str = "",
) -> web.Response:
    firing = [a for a in link.detail.alerts if a.status == "firing"]
    return ctx.render(
        "ack.html",
        status=status,
        view=view,
        link=link,
        detail=link.detail,
        firing=firing,
        more=max(link.detail.firing - len(firing), 0),
        error=error,
        by=by or ctx.remembered_name,
        comment=comment,
        again=False,
    )


async def ack_link_page(request: web.Request, ctx: Context) -> web.StreamResponse:
    found = await _open(request, ctx)
    if isinstance(found, web.Response):
        return found
    return _page(ctx, found, "acked" if found.ack is not None else "form")


async def ack_link_submit(request: web.Request, ctx: Context) -> web.StreamResponse:
    found = await _open(request, ctx)
    if isinstance(found, web.Response):
        return found
    if found.ack is not None:
        return _page(ctx, found, "acked")  # someone was quicker: no second acknowledgement
    raw_name, raw_comment = ctx.form.get("by", ""), ctx.form.get("comment", "")
    try:
        if found.members:
            if raw_name not in found.members:
                raise FormError("by", ctx.t("err_not_member", group=found.detail.contact_group))
            name = raw_name
        else:
            name = check_name(ctx, raw_name)
        comment = check_comment(ctx, raw_comment, COMMENT_CHARS)
    except FormError as exc:
        return _page(ctx, found, "form", 400, exc, raw_name[:64], raw_comment[:COMMENT_CHARS])
    actions = request.app[keys.CORE].actions
    try:
        ack, new = await actions.acknowledge(
            found.key, Actor(name, VIA), comment, opened_at=found.opened_at
        )
    except ActionError:  # it resolved between the page and the click
        return ctx.render(
            "ack.html", status=410, view="resolved", link=None, detail=found.detail, again=False
        )
    except StoreError:
        return ctx.render("message.html", status=503, kind="store")
    found.ack = ack
    response = _page(ctx, found, "done" if new else "acked")
    ctx.remember_name(response, name)
    return response


def setup_ack_link(app: web.Application) -> None:
    # The token is base64url with one dot: no slash, so one path segment.
    path = f"{paths.ACK}/{{token}}"
    app.router.add_get(path, console_page(ack_link_page, public=True))
    app.router.add_post(path, console_form(ack_link_submit, public=True))
