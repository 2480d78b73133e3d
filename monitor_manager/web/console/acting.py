"""Acting in the console: acknowledge an alert group, withdraw it, silence alerts, expire a
silence; and the marks that show what was done (SPEC sections 8 and 9).

Routes (all answer HTML; the POSTs are console forms, CSRF checked):

    POST /groups/{key}/ack              acknowledge (comment; `by` on an open console)
    POST /groups/{key}/unack            withdraw the acknowledgement
    GET  /silences                      active and pending silences, maintenance windows,
                                        recently expired silences
    GET  /silences/new                  the form (?matchers=TEXT&group=KEY prefill it)
    POST /silences                      create one
    POST /silences/{id}/expire          end one now

Every change goes through `act.actions.Actions`, as the API's and the link's do, and records
who made it: the logged-in user, or on an open console (loopback, no users) the name typed in
the form, which is required there. The group page offers the actions through the console's
hooks (`add_group_actions`), and lists and pages show badges through `add_group_badges`.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

from aiohttp import web

from monitor_manager import keys
from monitor_manager.act.actions import MAX_COMMENT, ActionError, Actor, comment_text, person
from monitor_manager.clock import iso
from monitor_manager.converge.matchers import Matcher, MatcherError, parse_matchers
from monitor_manager.converge.silences import SilenceError, SilenceNotFound
from monitor_manager.durations import format_duration, parse_duration
from monitor_manager.store import StoreError
from monitor_manager.web.console import paths, queries
from monitor_manager.web.console.pages import (
    CONSOLE,
    MAX_NAME,
    Action,
    Badge,
    Context,
    console_form,
    console_page,
)
from monitor_manager.web.console.views import render_group

VIA = "console"
MATCHERS_CHARS = 10_000
DEFAULT_DURATION = "2h"
DURATION_CHOICES = ("1h", "2h", "4h", "1d")


class FormError(ValueError):
    """A form field a person must correct: `message` is already in their language."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- who ---------------------------------------------------------------------------------------


def check_name(ctx: Context, raw: str, field: str = "by") -> str:
    """A name typed in a form, checked with the messages in the page's language."""
    name = raw.strip()
    if not name:
        raise FormError(field, ctx.t("err_name_missing"))
    if len(name) > MAX_NAME:
        raise FormError(field, ctx.t("err_too_long", n=MAX_NAME))
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise FormError(field, ctx.t("err_control"))
    try:
        return person(name, field)
    except ActionError as exc:  # the same rule as the API's, should it ever be stricter
        raise FormError(field, exc.message) from None


def who(ctx: Context) -> str:
    """Who makes a change: the logged-in user; on an open console, the name in the form."""
    if ctx.user is not None:
        return ctx.user
    return check_name(ctx, ctx.form.get("by", ""))


def check_comment(ctx: Context, raw: str, limit: int = MAX_COMMENT) -> str:
    if len(raw) > limit:
        raise FormError("comment", ctx.t("err_too_long", n=limit))
    try:
        return comment_text(raw)
    except ActionError as exc:
        raise FormError("comment", exc.message) from None


def _done(ctx: Context, location: str, typed_name: bool) -> web.Response:
    """A change made: back to where it shows, remembering a typed name for the next form."""
    response = ctx.redirect(location)
    if typed_name:
        ctx.remember_name(response, ctx.form.get("by", "").strip())
    return response


def _store_failed(ctx: Context) -> web.Response:
    return ctx.render("message.html", status=503, kind="store")


# -- hooks: actions and badges -----------------------------------------------------------------


async def group_actions(request: web.Request, group: Any) -> list[Action]:
    """Acknowledge or withdraw, and silence: for an open group with firing alerts."""
    if not group.open or group.state not in ("firing", "pending"):
        return []
    ctx = Context.of(request)
    conv = request.app[keys.PIPELINE].convergence
    acting = queries.group_acting(conv, group.key)
    if acting is None or not acting.firing:
        return []
    typed = ctx.user is None
    path = paths.group_path(group.key)
    out: list[Action] = []
    if acting.ack is None:
        out.append(
            Action(ctx.t("act_ack"), f"{path}/ack", style="primary", comment=True, who=typed)
        )
    else:
        ack = acting.ack
        note = ctx.t("ack_by_at", by=ack.by, at=ctx.fmt.time(ack.at))
        out.append(
            Action(
                ctx.t("act_unack"),
                f"{path}/unack",
                who=typed,
                note=f"{note}: {ack.comment}" if ack.comment else note,
            )
        )
    prefill = queries.matchers_text(Matcher(k, v) for k, v in sorted(group.group_labels.items()))
    out.append(
        Action(
            ctx.t("act_silence"),
            paths.NEW_SILENCE,
            fields=(("matchers", prefill), ("group", group.key)),
            method="get",
        )
    )
    return out


async def group_badges(request: web.Request, group_keys: list[str]) -> dict[str, list[Badge]]:
    """Acknowledged by whom, escalated how far, silenced: for the open groups shown."""
    ctx = Context.of(request)
    conv = request.app[keys.PIPELINE].convergence
    out: dict[str, list[Badge]] = {}
    for key in group_keys:
        acting = queries.group_acting(conv, key)
        if acting is None:
            continue
        badges: list[Badge] = []
        if acting.ack is not None:
            ack = acting.ack
            when = ctx.fmt.time(ack.at)
            title = f"{when}: {ack.comment}" if ack.comment else when
            badges.append(Badge(ctx.t("badge_acked", by=ack.by), kind="ack", title=title))
        if acting.escalated:
            badges.append(Badge(ctx.t("badge_escalated", n=acting.escalated), kind="warn"))
        if acting.firing and acting.muted == acting.firing:
            badges.append(Badge(ctx.t("badge_silenced"), kind="silenced"))
        elif acting.muted:
            badges.append(
                Badge(
                    ctx.t("badge_part_silenced", n=acting.muted, total=acting.firing),
                    kind="silenced",
                )
            )
        if badges:
            out[key] = badges
    return out


# -- acknowledge, withdraw ---------------------------------------------------------------------


async def ack(request: web.Request, ctx: Context) -> web.StreamResponse:
    key = request.match_info["key"]
    ctx.page_path = paths.group_path(key)
    actions = request.app[keys.CORE].actions
    try:
        by = who(ctx)
        comment = check_comment(ctx, ctx.form.get("comment", ""))
        await actions.acknowledge(key, Actor(by, VIA), comment)
    except FormError as exc:
        return await render_group(request, ctx, key, 400, exc.message)
    except ActionError as exc:
        return await render_group(request, ctx, key, exc.status, ctx.t("err_not_firing"))
    except StoreError:
        return _store_failed(ctx)
    return _done(ctx, paths.group_path(key), ctx.user is None)


async def unack(request: web.Request, ctx: Context) -> web.StreamResponse:
    key = request.match_info["key"]
    ctx.page_path = paths.group_path(key)
    actions = request.app[keys.CORE].actions
    try:
        by = who(ctx)
        await actions.unacknowledge(key, Actor(by, VIA))
    except FormError as exc:
        return await render_group(request, ctx, key, 400, exc.message)
    except ActionError as exc:
        group = actions.convergence.groups.get(key)
        fires = group is not None and actions.convergence.fires(group)
        text = ctx.t("err_not_acked") if fires else ctx.t("err_not_firing")
        return await render_group(request, ctx, key, exc.status, text)
    except StoreError:
        return _store_failed(ctx)
    return _done(ctx, paths.group_path(key), ctx.user is None)


# -- silences ----------------------------------------------------------------------------------


async def silences_page(request: web.Request, ctx: Context) -> web.StreamResponse:
    return await _silences(request, ctx)


async def _silences(
    request: web.Request, ctx: Context, status: int = 200, error: str = "", failed: str = ""
) -> web.StreamResponse:
    view = await queries.silences(request.app, ctx.fmt.now)
    return ctx.render(
        "silences.html",
        status=status,
        view=view,
        error=error,
        failed=failed,  # the silence whose expiry was refused
        refresh=0 if error else 30,
    )


def _form_values(ctx: Context, source: Any) -> dict[str, str]:
    return {
        "matchers": str(source.get("matchers", ""))[:MATCHERS_CHARS],
        "duration": str(source.get("duration", DEFAULT_DURATION))[:32],
        "starts": str(source.get("starts", ""))[:32],
        "ends": str(source.get("ends", ""))[:32],
        "comment": str(source.get("comment", ""))[:MAX_COMMENT],
        "by": str(source.get("by", ctx.remembered_name))[:MAX_NAME],
        "group": str(source.get("group", ""))
        if paths.is_group_key(source.get("group", ""))
        else "",
    }


async def new_silence(request: web.Request, ctx: Context) -> web.StreamResponse:
    return _silence_form(ctx, _form_values(ctx, request.query))


def _silence_form(
    ctx: Context, values: dict[str, str], status: int = 200, error: FormError | None = None
) -> web.Response:
    return ctx.render(
        "silence_new.html",
        status=status,
        values=values,
        error=error,
        choices=DURATION_CHOICES,
        max_duration=format_duration(ctx.config.silences.max_duration),
    )


def parse_local_time(ctx: Context, text: str, field: str) -> float | None:
    """A `datetime-local` value (`2026-11-27T10:00`), read in the console's zone."""
    text = text.strip()
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FormError(field, ctx.t("err_time", example="2026-11-27T10:00")) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ctx.fmt.tz)
    return when.timestamp()


def silence_body(ctx: Context, values: dict[str, str], by: str) -> dict[str, Any]:
    """The form as Alertmanager's postableSilence; FormError for what the form itself gets
    wrong (the rest is `parse_postable`'s to refuse)."""
    text = values["matchers"].strip()
    if not text:
        raise FormError("matchers", ctx.t("err_matchers_missing"))
    try:
        matchers = [m for line in text.splitlines() for m in parse_matchers(line.strip())]
    except MatcherError as exc:
        raise FormError("matchers", exc.message) from None
    if not matchers:
        raise FormError("matchers", ctx.t("err_matchers_missing"))
    now = ctx.fmt.now
    starts = parse_local_time(ctx, values["starts"], "starts") or now
    ends = parse_local_time(ctx, values["ends"], "ends")
    if ends is None:
        try:
            seconds = parse_duration(values["duration"] or "")
        except ValueError:
            raise FormError("duration", ctx.t("err_duration")) from None
        if seconds <= 0:
            raise FormError("duration", ctx.t("err_duration"))
        ends = starts + seconds
    comment = check_comment(ctx, values["comment"])
    if not comment:
        raise FormError("comment", ctx.t("err_comment_missing"))
    return {
        "matchers": [
            {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
            for m in matchers
        ],
        "startsAt": iso(starts),
        "endsAt": iso(ends),
        "createdBy": by,
        "comment": comment,
    }


# Where parse_postable's complaints belong in the form.
_FIELDS = {"startsAt": "starts", "createdBy": "by", "comment": "comment"}


def _form_field(silence_field: str, values: dict[str, str]) -> str:
    if silence_field.startswith("matchers"):
        return "matchers"
    if silence_field == "endsAt":
        return "ends" if values["ends"].strip() else "duration"
    return _FIELDS.get(silence_field, "")


async def create_silence(request: web.Request, ctx: Context) -> web.StreamResponse:
    ctx.page_path = paths.NEW_SILENCE
    values = _form_values(ctx, ctx.form)
    actions = request.app[keys.CORE].actions
    try:
        by = who(ctx)
        body = silence_body(ctx, values, by)
        silence = await actions.save_silence(body, Actor(by, VIA))
    except FormError as exc:
        return _silence_form(ctx, values, 400, exc)
    except SilenceError as exc:
        field = _form_field(exc.field, values)
        return _silence_form(ctx, values, 400, FormError(field, exc.message))
    except StoreError:
        return _store_failed(ctx)
    return _done(ctx, f"{paths.SILENCES}#{paths.silence_anchor(silence.id)}", ctx.user is None)


async def expire_silence(request: web.Request, ctx: Context) -> web.StreamResponse:
    ctx.page_path = paths.SILENCES
    silence_id = request.match_info["id"]
    actions = request.app[keys.CORE].actions
    try:
        by = who(ctx)
        await actions.expire_silence(silence_id, Actor(by, VIA))
    except FormError as exc:
        return await _silences(request, ctx, 400, exc.message, failed=silence_id)
    except SilenceNotFound:
        return await _silences(request, ctx, 404, ctx.t("err_no_silence"))
    except StoreError:
        return _store_failed(ctx)
    return _done(ctx, f"{paths.SILENCES}#{paths.silence_anchor(silence_id)}", ctx.user is None)


def setup_acting(app: web.Application) -> None:
    hooks = app[CONSOLE].hooks
    hooks.group_actions.append(group_actions)
    hooks.group_badges.append(group_badges)
    r = app.router
    group = f"/groups/{{key:{paths.GROUP_KEY}}}"
    r.add_post(f"{group}/ack", console_form(ack))
    r.add_post(f"{group}/unack", console_form(unack))
    r.add_get(paths.SILENCES, console_page(silences_page))
    r.add_get(paths.NEW_SILENCE, console_page(new_silence))
    r.add_post(paths.SILENCES, console_form(create_silence))
    r.add_post(f"{paths.SILENCES}/{{id}}/expire", console_form(expire_silence))
