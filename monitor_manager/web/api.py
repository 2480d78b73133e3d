"""HTTP API: the webhooks, health, metrics and the JSON views of the state.

Every error is JSON with an `error` field. Bad input gets a 4xx and changes nothing; a store
that cannot commit gets 503, because Alertmanager retries 5xx and never 4xx.

Two webhooks, one ingest path: `/webhook/alertmanager` (Alertmanager, version "4") and
`/webhook/grafana` (Grafana Alerting's webhook contact point, version "1") differ only in the
parser that turns the body into a `Payload`; reading the body, the token, the pipeline (screen,
heartbeats, dedup, routing, convergence), durability before the answer and the answer itself
are the same code.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor_manager import keys
from monitor_manager.clock import iso
from monitor_manager.cluster.ha import MAX_ENTRIES, PROTOCOL_VERSION, EntryError, parse_message
from monitor_manager.ingest.grafana import parse_grafana
from monitor_manager.ingest.payload import Payload, PayloadError, parse_payload
from monitor_manager.reload import CLI_AGENT, RELOAD_PATH
from monitor_manager.store import StoreError
from monitor_manager.store import alerts as alert_rows
from monitor_manager.store import groups as group_rows
from monitor_manager.store import notifications as notification_rows
from monitor_manager.store.deliveries import DeliveryState
from monitor_manager.web.acting import requires_credentials, setup_acting_routes
from monitor_manager.web.bodies import BodyError, read_json, read_json_body

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/webhook/alertmanager"
GRAFANA_PATH = "/webhook/grafana"
WEBHOOK_SOURCES = {WEBHOOK_PATH: "alertmanager", GRAFANA_PATH: "grafana"}
"""Each webhook's path and the `source` label of its requests in the metrics."""
PEER_BODY_BYTES = 16 * 1024 * 1024  # MAX_ENTRIES entries of a few hundred bytes each


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason)
    except Exception:  # never leak a traceback; never crash the server
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error(500, "internal error")
    source = WEBHOOK_SOURCES.get(request.path)
    if source is not None:
        request.app[keys.METRICS].webhook_requests.labels(str(response.status), source).inc()
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    token = ""
    # Grafana's webhook contact point offers HTTP basic auth beside an Authorization header:
    # there the token is also taken as the password, whatever the user name.
    basic = request.path == GRAFANA_PATH
    if request.path in WEBHOOK_SOURCES:
        token = config.server.webhook_token
    elif request.path.startswith("/api/v1/peer/"):
        # The peer protocol can suppress pages: closed to everyone without a token.
        if not config.ha.token:
            return error(401, "the peer protocol is off: ha.token is not set on this instance")
        token = config.ha.token
    elif request.path.startswith("/api/") or request.path == RELOAD_PATH:
        token = config.server.api_token
    if token and not (
        _bearer_matches(request, token) or (basic and _basic_matches(request, token))
    ):
        if basic:
            return error(401, "missing or wrong bearer token or basic auth password")
        return error(401, "missing or wrong bearer token")
    return await handler(request)


def _bearer_matches(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Header bytes that are not UTF-8 arrive as surrogate escapes: a mismatch, not an error.
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode())


def _basic_matches(request: web.Request, token: str) -> bool:
    """HTTP basic auth whose password is `token` (any user name), compared in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        # Bytes that are not UTF-8 arrive as surrogate escapes, and are not base64 either.
        decoded = base64.b64decode(given.strip().encode("utf-8", "surrogateescape"), validate=True)
    except (binascii.Error, ValueError):
        return False
    _, colon, password = decoded.partition(b":")
    return bool(colon) and hmac.compare_digest(password, token.encode())


def _webhook(parse: Callable[[Any], Payload], recorded: bool) -> Handler:
    """A webhook handler: the body read strictly, parsed by `parse`, then the one pipeline.
    `recorded`: an accepted payload goes to `[server] record` (Alertmanager's shape, which
    `replay` reads)."""

    async def handler(request: web.Request) -> web.Response:
        app = request.app
        try:
            data, body = await read_json_body(request, app[keys.CONFIG].server.max_body_bytes)
            payload = parse(data)
        except BodyError as exc:
            return error(exc.status, exc.message, field=exc.field)
        except PayloadError as exc:
            return error(400, exc.message, field=exc.field)
        if payload.truncated_alerts:
            log.warning(
                "sender %r left %d alerts out of a notification (its max alerts setting): "
                "they never reach Monitor Manager; receiver %r, group %r",
                payload.external_url[:200],
                payload.truncated_alerts,
                payload.receiver[:100],
                payload.group_key[:200],
            )
        at = app[keys.CLOCK]()
        try:
            result = await app[keys.PIPELINE].receive(payload)
        except StoreError as exc:
            return error(503, f"the store cannot commit; retry later ({exc.reason})")
        recorder = app.get(keys.RECORDER)
        if recorded and recorder is not None:  # accepted and stored: recorded, off this path
            recorder.record(at, body, data)
        answer = {"status": "ok", "accepted": result.accepted, "duplicates": result.duplicates}
        if result.rejected:
            answer["rejected"] = result.rejected
        return web.json_response(answer)

    return handler


webhook = _webhook(parse_payload, recorded=True)
grafana_webhook = _webhook(parse_grafana, recorded=False)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "status": "ok",
            "instance": request.app[keys.CONFIG].server.instance,
            "peer_protocol": PROTOCOL_VERSION,
            "time": request.app[keys.CLOCK](),  # peers compare clocks (ClockSkew)
            # Whether it can commit (and so send): peers take no send position from an
            # instance that cannot, rather than wait for it.
            "commits": request.app[keys.STORE].healthy,
        }
    )


async def readiness(app: web.Application) -> list[str]:
    """Why this instance is not ready, [] when it is: the store takes a write and the scheduler
    runs. /readyz answers it; the outside ping (watchdog.ping_url) goes out only while it is []."""
    problems = []
    store = app[keys.STORE]
    try:
        await store.probe(app[keys.CLOCK]())
    except StoreError as exc:
        problems.append(f"store is not writable: {exc.reason}")
    else:
        if not store.healthy:
            problems.append(f"the last commit failed: {store.last_error}")
    sched = app.get(keys.SCHEDULER)
    if sched is not None and not sched.running:
        problems.append("scheduler is not running")
    return problems


async def readyz(request: web.Request) -> web.Response:
    problems = await readiness(request.app)
    if problems:
        return web.json_response({"status": "not ready", "error": "; ".join(problems)}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    try:
        await request.app[keys.OUTBOX].gauges()
    except (StoreError, sqlite3.Error):
        pass  # report the last known values
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _limit(request: web.Request, default: int = 1000, most: int = 100_000) -> int:
    raw = request.query.get("limit", str(default))
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= most:
        raise web.HTTPBadRequest(reason=f"limit must be a whole number from 1 to {most}")
    return int(raw)


async def list_alerts(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "firing", "resolved", "stale"):
        return error(400, 'status must be "firing", "resolved" or "stale"', field="status")
    limit = _limit(request, default=10_000)
    # Labels and annotations are only in the store; the order is the most recently changed.
    rows, total = await request.app[keys.STORE].read(
        lambda conn: alert_rows.listing(conn, status, limit)
    )
    return web.json_response({"alerts": [_alert_json(r) for r in rows], "total": total})


def _alert_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "fingerprint": row["fingerprint"],
        "status": row["status"],
        "labels": json.loads(row["labels"]),
        "annotations": json.loads(row["annotations"]),
        "startsAt": iso(row["starts_at"]),
        "endsAt": iso(row["ends_at"]),
        "generatorURL": row["generator_url"],
        "source": row["source"],
        "extras": json.loads(row["extras"]),
        "alert_groups": list(json.loads(row["memberships"])),
    }


async def list_alert_groups(request: web.Request) -> web.Response:
    limit = _limit(request)
    rows = await request.app[keys.STORE].read(lambda conn: group_rows.listing(conn, limit))
    await request.app[keys.PIPELINE].load()
    conv = request.app[keys.PIPELINE].convergence
    return web.json_response({"alert_groups": [_group_json(r, conv) for r in rows]})


def _group_json(row: sqlite3.Row, conv: Any) -> dict[str, Any]:
    group = conv.groups.get(row["key"])
    members = group.members if group is not None else {}
    firing = sum(1 for fp in members if conv.alerts[fp].status == "firing")
    return {
        "key": row["key"],
        "contact_group": row["contact_group"],
        "group_labels": json.loads(row["group_labels"]),
        "state": row["state"] if group is None else ("firing" if firing else "resolving"),
        "alerts": {"firing": firing, "resolved": len(members) - firing, "total": len(members)},
        "created_at": iso(row["created_at"]),
        "last_notified_at": iso(row["last_notified_at"]),
        "next_flush_at": iso(row["next_flush_at"]),
        "updated_at": iso(row["updated_at"]),
        "ack": ack.to_json() if (ack := conv.acks.current(row["key"], row["created_at"])) else None,
    }


async def show_alert_group(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    store = request.app[keys.STORE]
    row = await store.read(lambda conn: group_rows.one(conn, key))
    if row is None:
        return error(404, f"no alert group {key!r}")
    await request.app[keys.PIPELINE].load()
    conv = request.app[keys.PIPELINE].convergence
    body = _group_json(row, conv)
    group = conv.groups.get(key)
    members = group.members if group else {}
    ids = [conv.alerts[fp].id for fp in members]
    rows = await store.read(lambda conn: alert_rows.by_ids(conn, ids))
    body["members"] = [
        {**_alert_json(r), "notified": members[r["fingerprint"]]}
        for r in rows
        if r["fingerprint"] in members
    ]
    listed = await store.read(lambda conn: notification_rows.listing(conn, 20, group_key=key))
    body["notifications"] = [_notification_json(n) for n in listed]
    return web.json_response(body)


async def list_notifications(request: web.Request) -> web.Response:
    limit = _limit(request, default=100, most=10_000)
    state = request.query.get("state")
    if state is not None and state not in DeliveryState.__members__.values():
        return error(400, "unknown delivery state", field="state")
    listed = await request.app[keys.STORE].read(
        lambda conn: notification_rows.listing(conn, limit, delivery_state=state)
    )
    return web.json_response({"notifications": [_notification_json(n) for n in listed]})


def _notification_json(n: dict[str, Any]) -> dict[str, Any]:
    """A stored notification as the API shows it: times in RFC 3339."""
    return {
        **n,
        "created_at": iso(n["created_at"]),
        "deliveries": [
            {**d, **{k: iso(d[k]) for k in ("next_attempt_at", "delivered_at", "updated_at")}}
            for d in n["deliveries"]
        ],
    }


async def watchdog_state(request: web.Request) -> web.Response:
    pipeline = request.app[keys.PIPELINE]
    failures = request.app[keys.CONFIG].watchdog.peer_failures
    return web.json_response(
        {
            "heartbeats": [b.as_json() for b in pipeline.watchdog.heartbeats],
            "peers": [p.as_json(failures) for p in request.app[keys.PEERS].states.values()],
            "alertmanagers": [
                {"url": url, "last_seen": iso(at)}
                for url, at in sorted(pipeline.watchdog.sources.items())
            ],
        }
    )


async def peer_push(request: web.Request) -> web.Response:
    """A peer tells what it sent (protocol: monitor_manager/cluster/ha.py)."""
    try:
        message = parse_message(await read_json(request, PEER_BODY_BYTES))
    except BodyError as exc:
        return error(exc.status, exc.message, field=exc.field)
    except EntryError as exc:
        return error(400, str(exc), field=exc.field or None)
    ha = request.app[keys.HA]
    if message.instance not in ha.peers.states:
        return error(
            403,
            f"{message.instance[:60]!r} is not a configured peer of this instance",
            field="instance",
        )
    ops, accepted, rejected = ha.accept(message, pushed=True)
    try:
        await request.app[keys.STORE].write(ops)
    except StoreError as exc:
        return error(503, f"the store cannot commit; retry later ({exc.reason})")
    return web.json_response(
        {"version": message.version, "accepted": accepted, "rejected": rejected}
    )


async def peer_pull(request: web.Request) -> web.Response:
    raw = request.query.get("since", "0")
    try:
        since = float(raw)
    except ValueError:
        return error(400, "since must be a Unix time in seconds", field="since")
    version = 2 if request.query.get("version") == "2" else 1  # release 1 sends no version
    ha = request.app[keys.HA]
    entries = sorted(ha.log.since(since, version), key=lambda e: e.sent_at)[-MAX_ENTRIES:]
    return web.json_response(
        {"version": version, "instance": ha.instance, "entries": [e.wire(version) for e in entries]}
    )


async def reload_config(request: web.Request) -> web.Response:
    """Read the config file again and apply it (reload.py): 200 with what changed, 400 with
    every problem by key path (nothing changed), 503 when it could not happen now."""
    via = "cli" if request.headers.get("User-Agent", "").startswith(CLI_AGENT) else "api"
    from monitor_manager.web.console import current_user  # the console imports this module

    who = current_user(request) or request.query.get("by", "")[:256] or via
    outcome = await request.app[keys.RELOADER].reload(via, who)
    return web.json_response(outcome.json(), status=outcome.status)


def setup_routes(app: web.Application) -> None:
    app.middlewares.extend([errors_middleware, auth_middleware])
    r = app.router
    r.add_post(WEBHOOK_PATH, webhook)
    r.add_post(GRAFANA_PATH, grafana_webhook)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/v1/alerts", list_alerts)
    r.add_get("/api/v1/alert-groups", list_alert_groups)
    r.add_get("/api/v1/alert-groups/{key}", show_alert_group)
    r.add_get("/api/v1/notifications", list_notifications)
    r.add_get("/api/v1/watchdog", watchdog_state)
    r.add_post("/api/v1/peer/nflog", peer_push)
    r.add_post(RELOAD_PATH, requires_credentials(reload_config))
    r.add_get("/api/v1/peer/nflog", peer_pull)
    setup_acting_routes(app)
