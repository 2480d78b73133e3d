"""HTTP: acknowledging alert groups, silences (Alertmanager's API v2, as amtool uses it), the
audit of changes, and the peers' shared state.

Changes need credentials (SPEC §4, §8): with `server.api_token` set, the bearer token (the API
middleware checks it); without one, a console login or a loopback client. A signed acknowledge
link is the third credential (web.console.ack_page). Errors under /api/v2 are a JSON string,
as Alertmanager answers them: amtool prints that string and cannot read an object.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from monitor_manager import keys
from monitor_manager.act.actions import ActionError, Actor, comment_text, person
from monitor_manager.clock import iso
from monitor_manager.cluster.ha import EntryError
from monitor_manager.cluster.shared import parse_state
from monitor_manager.converge.matchers import MatcherError, parse_matcher
from monitor_manager.converge.silences import (
    SilenceError,
    SilenceNotFound,
    filter_silences,
    mutes_internal,
    sort_silences,
)
from monitor_manager.store import StoreError
from monitor_manager.store import audit as audit_rows
from monitor_manager.web.bodies import BodyError, read_json
from monitor_manager.web.wecom_callback import setup_wecom_callback

ACTION_BODY_BYTES = 64 * 1024
STATE_BODY_BYTES = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def _am_error(status: int, message: str) -> web.Response:
    """An /api/v2 error: a JSON string, as Alertmanager's (amtool prints it)."""
    return web.json_response(message, status=status)


def is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False  # a unix socket or something unknown: not trusted


def credential_problem(request: web.Request) -> str | None:
    """Why this request may not change anything (None: it may). With server.api_token set,
    the API middleware has already checked the bearer token."""
    config = request.app[keys.CONFIG]
    if config.server.api_token or is_loopback(request):
        return None
    from monitor_manager.web.console import current_user  # the console imports this module

    if current_user(request) is not None:
        return None
    return (
        "changes need credentials: set server.api_token and send it as a bearer token "
        "(or log in to the console, or use the signed link in a message); server.api_token "
        "is empty, so only loopback clients may change anything without one"
    )


def requires_credentials(handler: Handler, *, alertmanager: bool = False) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        problem = credential_problem(request)
        if problem is not None:
            return _am_error(401, problem) if alertmanager else _error(401, problem)
        return await handler(request)

    run.__name__ = handler.__name__
    return run


async def _body(request: web.Request, limit: int = ACTION_BODY_BYTES) -> Any:
    """The JSON body, or None when there is none."""
    if not request.can_read_body:
        return None
    return await read_json(request, limit)


# -- acknowledgements --------------------------------------------------------------------------
async def ack_group(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
    except BodyError as exc:
        return _error(exc.status, exc.message, exc.field)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return _error(400, 'expected a JSON object: {"by": NAME, "comment": TEXT}')
    actions = request.app[keys.CORE].actions
    try:
        by = person(body.get("by") or _console_user(request), "by")
        comment = comment_text(body.get("comment"))
        ack, new = await actions.acknowledge(request.match_info["key"], Actor(by, "api"), comment)
    except ActionError as exc:
        return _error(exc.status, exc.message, exc.field)
    except StoreError as exc:
        return _error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.json_response({"key": ack.group_key, "ack": ack.to_json(), "acknowledged_now": new})


async def unack_group(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
    except BodyError as exc:
        return _error(exc.status, exc.message, exc.field)
    body = body if isinstance(body, dict) else {}
    actions = request.app[keys.CORE].actions
    try:
        by = person(
            body.get("by") or request.query.get("by") or _console_user(request) or "api", "by"
        )
        await actions.unacknowledge(request.match_info["key"], Actor(by, "api"))
    except ActionError as exc:
        return _error(exc.status, exc.message, exc.field)
    except StoreError as exc:
        return _error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.json_response({"key": request.match_info["key"], "ack": None})


def _console_user(request: web.Request) -> str | None:
    from monitor_manager.web.console import current_user

    return current_user(request)


# -- silences (Alertmanager API v2) ------------------------------------------------------------
def _silence_json(silence: Any, now: float) -> dict[str, Any]:
    body: dict[str, Any] = silence.to_json(now)
    if mutes_internal(silence):
        # Allowed (planned maintenance of an AZ) but flagged; amtool ignores unknown fields.
        body["mutesInternalAlerts"] = True
    return body


async def list_silences(request: web.Request) -> web.Response:
    try:
        filters = [parse_matcher(f) for f in request.query.getall("filter", [])]
    except MatcherError as exc:
        return _am_error(400, f"bad filter: {exc.message}")
    pipeline = request.app[keys.PIPELINE]
    await pipeline.load()
    now = request.app[keys.CLOCK]()
    found = sort_silences(
        filter_silences(pipeline.convergence.muting.silences.values(), filters), now
    )
    return web.json_response([_silence_json(s, now) for s in found])


async def get_silence(request: web.Request) -> web.Response:
    pipeline = request.app[keys.PIPELINE]
    await pipeline.load()
    silence = pipeline.convergence.muting.silences.get(request.match_info["id"])
    if silence is None:
        return _am_error(404, "silence not found")
    return web.json_response(_silence_json(silence, request.app[keys.CLOCK]()))


def _via(request: web.Request) -> str:
    # amtool is Go's HTTP client; anything else through this API is "api".
    return "amtool" if request.headers.get("User-Agent", "").startswith("Go-http") else "api"


async def post_silence(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
    except BodyError as exc:
        return _am_error(exc.status, exc.message)
    actions = request.app[keys.CORE].actions
    created_by = body.get("createdBy") if isinstance(body, dict) else None
    actor = Actor(created_by if isinstance(created_by, str) else "", _via(request))
    try:
        silence = await actions.save_silence(body, actor)
    except SilenceError as exc:
        return _am_error(400, str(exc))
    except SilenceNotFound as exc:
        return _am_error(404, str(exc))
    except StoreError as exc:
        return _am_error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.json_response({"silenceID": silence.id})


async def delete_silence(request: web.Request) -> web.Response:
    actions = request.app[keys.CORE].actions
    who = _console_user(request) or request.query.get("by", "")[:256] or _via(request)
    try:
        await actions.expire_silence(request.match_info["id"], Actor(who, _via(request)))
    except SilenceNotFound:
        return _am_error(404, "silence not found")
    except StoreError as exc:
        return _am_error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.Response(status=200)


# -- audit -------------------------------------------------------------------------------------
async def list_audit(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        return _error(400, "limit must be a whole number from 1 to 10000", "limit")
    rows = await request.app[keys.STORE].read(lambda conn: audit_rows.listing(conn, int(raw)))
    return web.json_response({"audit": [{**r, "at": iso(r["at"])} for r in rows]})


# -- peers' shared state (cluster/shared.py) ---------------------------------------------------
async def peer_state_push(request: web.Request) -> web.Response:
    try:
        sender, shared = parse_state(await read_json(request, STATE_BODY_BYTES))
    except BodyError as exc:
        return _error(exc.status, exc.message, exc.field)
    except EntryError as exc:
        return _error(400, str(exc), exc.field or None)
    core = request.app[keys.CORE]
    if sender not in core.peers.states:
        return _error(403, f"{sender[:60]!r} is not a configured peer of this instance", "instance")
    await core.pipeline.load()
    ops, accepted, rejected = core.shared.accept(sender, shared)
    try:
        await core.store.write(ops)
    except StoreError as exc:
        return _error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.json_response({"version": 2, "accepted": accepted, "rejected": rejected})


async def peer_state_pull(request: web.Request) -> web.Response:
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        return _error(400, "since must be a Unix time in seconds", "since")
    core = request.app[keys.CORE]
    await core.pipeline.load()
    body = core.shared.since(since).wire(core.config.server.instance)
    return web.Response(text=json.dumps(body), content_type="application/json")


def setup_acting_routes(app: web.Application) -> None:
    r = app.router
    key = "/api/v1/alert-groups/{key}/ack"
    r.add_post(key, requires_credentials(ack_group))
    r.add_delete(key, requires_credentials(unack_group))
    r.add_get("/api/v2/silences", list_silences)
    r.add_post("/api/v2/silences", requires_credentials(post_silence, alertmanager=True))
    r.add_get("/api/v2/silence/{id}", get_silence)
    r.add_delete("/api/v2/silence/{id}", requires_credentials(delete_silence, alertmanager=True))
    r.add_get("/api/v1/audit", list_audit)
    r.add_post("/api/v1/peer/state", peer_state_push)
    r.add_get("/api/v1/peer/state", peer_state_pull)
    setup_wecom_callback(app)  # members acknowledge by replying to the WeCom app
