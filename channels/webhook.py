"""Outbound webhook: `type = "webhook"` POSTs each notification as JSON to `url`.

For ticket systems and home-grown tools. The body is a documented, versioned schema
(`"version": "1"`, see `build_payload` and the README); a receiver is a program, so label and
annotation values go out whole (JSON is escaped by construction) unless the body would pass
MAX_BODY_BYTES: then values are cut as in chat messages (Renderer.bounded: 1024 characters and
a note) and the rendered `text` to MAX_TEXT_BYTES, then alerts and alert groups past the first
are left out and counted, and `"truncated": true` says so. The store, the API and the console
keep everything.

Signing (optional `secret`): every request carries `X-Monitor-Manager-Timestamp` (Unix seconds)
and, with a secret, `X-Monitor-Manager-Signature: sha256=<hex>`, the HMAC-SHA256 under the
secret of `timestamp + "." + body` (the raw body bytes). A receiver recomputes it over the bytes
it read, compares in constant time, and refuses a timestamp more than five minutes from its own
clock, so a captured request cannot be replayed later; within the window, the body's `id` (the
notification) lets it drop a repeat. Delivery is at least once: a receiver should treat the
same `id` twice as one notification.

Outcomes: 2xx delivered; 408, 429 and 5xx retried, at least as late as `Retry-After` asks
(seconds or an HTTP date, at most an hour); redirects are not followed (a configuration error:
configure the final URL); every other status is permanent. Connection errors and timeouts are
retried.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import jinja2

from monitor_manager import __version__
from monitor_manager.channels.base import Channel, ChannelError, redact
from monitor_manager.clock import iso
from monitor_manager.durations import Duration
from monitor_manager.models import AlertView, GroupView, Message

SCHEMA_VERSION = "1"
# Below the 1 MiB that common receivers take by default (nginx's client_max_body_size).
MAX_BODY_BYTES = 1_000_000
MAX_TEXT_BYTES = 65536  # the rendered `text` of a document that had to be cut
MAX_RETRY_AFTER = 3600.0  # a receiver cannot park a delivery for longer than this at a time
TIMESTAMP_HEADER = "X-Monitor-Manager-Timestamp"
SIGNATURE_HEADER = "X-Monitor-Manager-Signature"
RETRIED = frozenset({408, 429})
TEMPLATES = ("webhook.txt", "text.txt")  # the `text` field; the first found renders it

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
# Headers this channel sets, or that describe the connection or the body rather than the
# request: hop-by-hop headers (RFC 9110 section 7.6.1), Host, the body's length and type.
_REFUSED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        TIMESTAMP_HEADER.lower(),
        SIGNATURE_HEADER.lower(),
    }
)


@dataclass(frozen=True)
class WebhookSettings:
    url: str = field(repr=False)  # may carry a token in its query
    secret: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    timeout: Duration = 10.0

    def __post_init__(self) -> None:
        # Messages name header names only: values may be credentials.
        url = urllib.parse.urlsplit(self.url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("url must be an http(s) URL")
        for name, value in self.headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"headers: {name!r} is not a valid header name")
            if name.lower() in _REFUSED_HEADERS:
                raise ValueError(
                    f"headers: {name} is set by the channel or describes the connection, and "
                    "cannot be configured"
                )
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"headers: the value of {name} contains a line break")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


class WebhookChannel(Channel):
    Settings: ClassVar[builtins.type] = WebhookSettings
    type: ClassVar[str] = "webhook"

    settings: WebhookSettings

    async def send(self, message: Message) -> str:
        session = self.ctx.session
        where = f"webhook {_origin(self.settings.url)}"
        if session is None:
            raise ChannelError(f"{where}: no HTTP session", permanent=True)
        body = self.body(message)
        timestamp = str(int(self.ctx.clock()))
        headers = {
            **self.settings.headers,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"monitor-manager/{__version__}",
            TIMESTAMP_HEADER: timestamp,
        }
        if self.settings.secret:
            headers[SIGNATURE_HEADER] = "sha256=" + sign(self.settings.secret, timestamp, body)
        secrets = (self.settings.url, self.settings.secret, *self.settings.headers.values())
        try:
            async with session.post(
                self.settings.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
                location = resp.headers.get("Location", "")
                snippet = (await resp.content.read(200)).decode("utf-8", "replace").strip()
        except TimeoutError:
            raise ChannelError(f"{where}: no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            reason = redact(f"{where}: {type(exc).__name__}: {exc}", *secrets)
            raise ChannelError(reason) from None
        if 200 <= status < 300:
            return ""
        reason = redact(f"{where}: HTTP {status}" + (f": {snippet}" if snippet else ""), *secrets)
        if status in RETRIED or status >= 500:
            raise ChannelError(reason, retry_after=parse_retry_after(retry_after, self.ctx.clock()))
        if 300 <= status < 400:
            moved = _origin(location) if location else "elsewhere"
            raise ChannelError(
                f"{reason} (redirects to {moved}: configure the final URL)", permanent=True
            )
        raise ChannelError(reason, permanent=True)

    def body(self, message: Message) -> bytes:
        """The request body: the whole payload, or one cut to MAX_BODY_BYTES."""
        title, text = self._rendered(message)
        data = _encode(build_payload(message, title, text))
        if len(data) <= MAX_BODY_BYTES:
            return data
        bounded = self.ctx.renderer.bounded(message)  # values cut as in chat messages
        text = _cut(text, MAX_TEXT_BYTES)
        keep = max((len(g.alerts) for g in message.groups), default=0)
        groups = len(message.groups)
        while True:
            data = _encode(
                build_payload(bounded, title, text, keep_alerts=keep, keep_groups=groups)
            )
            if len(data) <= MAX_BODY_BYTES or (keep == 0 and groups <= 1):
                return data
            if keep:
                keep //= 2
            else:
                groups //= 2

    def _rendered(self, message: Message) -> tuple[str, str]:
        """The subject line and the plain text, from the templates (overridable)."""
        for name in TEMPLATES:
            try:
                text = self.ctx.renderer.render(name, message).strip()
                return self.ctx.renderer.subject(message), text
            except jinja2.TemplateNotFound as exc:
                if exc.name != name:
                    raise ChannelError(f"template error: {exc}", permanent=True) from None
            except jinja2.TemplateError as exc:
                raise ChannelError(f"template error: {exc}", permanent=True) from None
        raise ChannelError(f"no template {' or '.join(TEMPLATES)}", permanent=True)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 under `secret` of `timestamp + "." + body`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds a `Retry-After` value (delta-seconds or an HTTP date) asks to wait, at most
    MAX_RETRY_AFTER; None when absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def build_payload(
    message: Message,
    title: str,
    text: str,
    *,
    keep_alerts: int | None = None,
    keep_groups: int | None = None,
) -> dict[str, Any]:
    """The JSON document (schema version 1) for `message`; `keep_*` leave out alerts per group
    and groups past the first ones (counted in `alertsOmitted`/`alertGroupsOmitted`)."""
    groups = message.groups[:keep_groups] if keep_groups is not None else message.groups
    truncated = keep_alerts is not None or keep_groups is not None
    return {
        "version": SCHEMA_VERSION,
        "id": message.id,
        "kind": message.kind,
        "status": message.status,
        "title": title,
        "text": text,
        "contactGroup": message.contact_group,
        "recipients": [
            {k: v for k, v in dataclasses.asdict(m).items() if v} for m in message.recipients
        ],
        "instance": message.instance,
        "createdAt": iso(message.created_at),
        "counts": {
            "alertGroups": len(message.groups),
            "firing": message.firing_count,
            "resolved": message.resolved_count,
            "stale": message.stale_count,
        },
        "links": {"monitorManager": message.external_url},
        # an escalation step ({"step", "from", "unacknowledged_for"}) or "ack" announced
        "escalation": message.extra.get("escalation"),
        "announce": message.extra.get("announce"),
        "alertGroups": [_group(g, keep_alerts) for g in groups],
        "alertGroupsOmitted": len(message.groups) - len(groups),
        "truncated": truncated,
    }


def _group(g: GroupView, keep_alerts: int | None) -> dict[str, Any]:
    alerts = g.alerts[:keep_alerts] if keep_alerts is not None else g.alerts
    return {
        "key": g.key,
        "status": g.status,
        "title": g.title,
        "groupLabels": g.group_labels,
        "commonLabels": g.common_labels,
        "commonAnnotations": g.common_annotations,
        "url": g.url,
        "ackURL": g.ack_url,  # the signed acknowledge link ("" once acknowledged or resolved)
        "ack": {**g.ack, "at": iso(g.ack["at"])} if g.ack else None,
        "counts": {"firing": len(g.firing), "resolved": len(g.resolved), "stale": len(g.stale)},
        "alerts": [_alert(a) for a in alerts],
        "alertsOmitted": len(g.alerts) - len(alerts),
    }


def _alert(a: AlertView) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "status": a.status,
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": iso(a.starts_at),
        "endsAt": iso(a.ends_at),
        "generatorURL": a.generator_url,
        "extras": extras(a),
    }


def extras(a: AlertView) -> dict[str, Any]:
    """What the alert's sender added (Grafana: links by name, the value string), as
    /api/v1/alerts shows it; {} for Alertmanager's alerts."""
    out: dict[str, Any] = {}
    if a.links:
        out["links"] = a.links
    if a.value:
        out["value"] = a.value
    return out


def _cut(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"\n… {len(data) - limit} more bytes left out"


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: enough to name it, never its path or query (tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a Location header is anyone's text
        return "an unreadable URL"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host
