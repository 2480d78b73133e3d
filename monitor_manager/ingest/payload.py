"""Ingest, step one: validate an Alertmanager webhook payload (version "4"), then screen it.

The body arrives decoded by `bodies.decode_json` (strict UTF-8, no lone surrogates), so every
string here is storable. Unknown fields are ignored (Alertmanager 0.32 adds
notification_reason, 0.34 routeLabels). A problem raises `PayloadError` naming the offending
path, e.g. `alerts[3].startsAt`; nothing about a payload is stored unless all of it is valid.

`parse_envelope` is what every Alertmanager-shaped sender shares (the version aside): Grafana
Alerting's webhook (ingest/grafana.py) is read by it too, with a reader for what Grafana adds
to each alert (`Extras`), so both senders get one set of rules, field paths and limits.

`screen()` then handles alert-level oddities without costing the other alerts of the payload
their place (Alertmanager does not retry a 4xx, so rejecting a payload would lose the good
alerts in its group): a time beyond now plus a skew is clamped to the time received, and an
alert that claims an internal alert's identity is dropped and counted.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

MIN_TIME = -62135596800.0 + 86400  # 0001-01-02T00:00:00Z
MAX_TIME = 253402214400.0  # 9999-12-31T00:00:00Z
ZERO_TIME_YEAR = 1  # Go's zero time, "0001-01-01T00:00:00Z": a firing alert's endsAt
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_KNOWN_NAMES: set[str] = set()  # label names already found valid: they repeat in every alert
_CACHED_NAME_CHARS = 64  # longer names are checked every time, never kept
MAX_TIME_CHARS = 64  # an RFC 3339 time with nanoseconds and an offset has 35
MAX_URL_CHARS = 2048  # externalURL: kept per Alertmanager, so bounded
FUTURE_SKEW = 300.0  # seconds a sender's clock may run ahead before its times are clamped
INTERNAL_SOURCE = ("source", "monitor-manager")  # the label every internal alert carries
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class PayloadError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Extras(TypedDict, total=False):
    """What a sender adds to an alert beyond Alertmanager's fields (Grafana Alerting does),
    stored as JSON in the alert's row and shown in messages and the console. Bounded: at most
    the four named links, each an absolute http(s) URL (ingest/grafana.py checks them), and
    one value string of at most MAX_EXTRA_VALUE_CHARS."""

    links: dict[str, str]  # "dashboard" | "panel" | "silence" | "image" -> http(s) URL
    value: str  # the values that made it fire or resolve, as the sender wrote them


MAX_EXTRA_VALUE_CHARS = 4096

ExtrasReader = Callable[[dict[str, Any], int], Extras]
"""Reads a sender's per-alert additions from the raw alert at index i (PayloadError naming
`alerts[i].<key>` on a wrong type)."""


@dataclass(frozen=True, slots=True)
class IncomingAlert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str
    extras: Extras = field(default_factory=Extras)


@dataclass(frozen=True, slots=True)
class Payload:
    alerts: list[IncomingAlert]
    external_url: str
    receiver: str
    group_key: str
    truncated_alerts: int = 0  # alerts the sender left out (Grafana's max_alerts): logged


def parse_time(value: Any, path: str) -> float | None:
    """RFC 3339 with any fraction (Go sends nanoseconds) to epoch seconds; zero time → None."""
    if not isinstance(value, str):
        raise PayloadError(f"expected an RFC 3339 timestamp string, got {kind(value)}", path)
    if len(value) > MAX_TIME_CHARS:  # nor is it cached: rejected input must not grow memory
        raise PayloadError(f"{value[:40]!r}... is too long for an RFC 3339 timestamp", path)
    try:
        return _parse_time_cached(value)
    except PayloadError as exc:
        raise PayloadError(exc.message, path) from None


@functools.lru_cache(maxsize=4096)
def _parse_time_cached(value: str) -> float | None:
    # Alerts of one rule evaluation share their times, and Alertmanager re-sends them: most
    # timestamps in a busy stream have been seen moments before.
    path = ""
    m = _RFC3339.fullmatch(value)
    if not m:
        raise PayloadError(f"{value[:40]!r} is not an RFC 3339 timestamp", path)
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if year == ZERO_TIME_YEAR:
        return None
    try:
        tz = dt.UTC
        if m.group(9):
            offset = dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
            tz = dt.timezone(offset if m.group(9) == "+" else -offset)
        if second > 60:
            raise ValueError("second must be in 0..60")
        # A leap second (60) is read as 59: close enough for alert times.
        stamp = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    except ValueError as exc:
        raise PayloadError(f"{value[:40]!r} is not a valid time: {exc}", path) from None
    fraction = m.group(7)
    ts = stamp.timestamp() + (float("0." + fraction[:9]) if fraction else 0.0)
    if not MIN_TIME <= ts <= MAX_TIME:  # the UTC time must be representable everywhere
        raise PayloadError(f"{value[:40]!r} is out of range", path)
    return ts


def parse_payload(data: Any) -> Payload:
    """A decoded Alertmanager webhook body as a Payload, or PayloadError naming the offending
    field. Only version "4" is taken."""
    if isinstance(data, dict) and data.get("version") == "1":
        raise PayloadError(
            "version \"1\" is Grafana Alerting's webhook payload: point Grafana's contact point "
            'at /webhook/grafana; this endpoint takes Alertmanager\'s (version "4")',
            "version",
        )
    return parse_envelope(data, "4")


def parse_envelope(data: Any, version: str, extras: ExtrasReader | None = None) -> Payload:
    """An Alertmanager-shaped body of `version` as a Payload, or PayloadError naming the
    offending field; `extras` reads what the sender adds to each alert."""
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {kind(data)}")
    sent = data.get("version")
    if sent != version:
        raise PayloadError(f'unsupported payload version {sent!r}, expected "{version}"', "version")
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError(f"expected an array of alerts, got {kind(raw_alerts)}", "alerts")
    alerts = [parse_alert(a, i, extras) for i, a in enumerate(raw_alerts)]
    external_url = optional_str(data, "externalURL", "externalURL")
    if len(external_url) > MAX_URL_CHARS:
        raise PayloadError(f"longer than {MAX_URL_CHARS} characters", "externalURL")
    return Payload(
        alerts=alerts,
        external_url=external_url,
        receiver=optional_str(data, "receiver", "receiver"),
        group_key=optional_str(data, "groupKey", "groupKey"),
    )


def parse_alert(raw: Any, i: int, extras: ExtrasReader | None = None) -> IncomingAlert:
    """The alert at index `i` of a payload, or PayloadError naming `alerts[i]...`."""
    # Paths are built only for errors: this runs for every alert of every payload.
    if not isinstance(raw, dict):
        raise PayloadError(f"expected an alert object, got {kind(raw)}", f"alerts[{i}]")
    status = raw.get("status")
    if status != "firing" and status != "resolved":
        raise PayloadError(
            f'status must be "firing" or "resolved", got {status!r}', f"alerts[{i}].status"
        )
    labels = _string_map(raw.get("labels"), i, "labels", required=True)
    if not labels:
        raise PayloadError("an alert needs at least one label", f"alerts[{i}].labels")
    for name in labels:
        if name not in _KNOWN_NAMES:
            if not LABEL_NAME.fullmatch(name):
                raise PayloadError(
                    f"{name[:40]!r} is not a valid label name", f"alerts[{i}].labels"
                )
            if len(_KNOWN_NAMES) < 10_000 and len(name) <= _CACHED_NAME_CHARS:
                _KNOWN_NAMES.add(name)
    annotations = _string_map(raw.get("annotations"), i, "annotations", required=False)
    if "startsAt" not in raw:
        raise PayloadError("missing", f"alerts[{i}].startsAt")
    starts_at = parse_time(raw["startsAt"], f"alerts[{i}].startsAt")
    if starts_at is None:
        raise PayloadError("startsAt cannot be the zero time", f"alerts[{i}].startsAt")
    ends = raw.get("endsAt")
    ends_at = parse_time(ends, f"alerts[{i}].endsAt") if ends is not None else None
    generator_url = optional_str(raw, "generatorURL", f"alerts[{i}].generatorURL")
    if extras is None:
        return IncomingAlert(status, labels, annotations, starts_at, ends_at, generator_url)
    return IncomingAlert(
        status, labels, annotations, starts_at, ends_at, generator_url, extras(raw, i)
    )


def _string_map(value: Any, i: int, key: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(
            f"expected an object of strings, got {kind(value)}", f"alerts[{i}].{key}"
        )
    for name, item in value.items():
        if type(item) is not str:
            raise PayloadError(
                f"value of {name[:40]!r} must be a string, got {kind(item)}", f"alerts[{i}].{key}"
            )
    return value


def optional_str(data: dict[str, Any], key: str, path: str) -> str:
    """`data[key]` as a string, "" when absent or null; PayloadError at `path` otherwise."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"expected a string, got {kind(value)}", path)
    return value


def kind(value: Any) -> str:
    """The JSON type of a decoded value, as error messages name it."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


@dataclass(slots=True)
class Screened:
    """What `screen` kept, and what it changed: `rejected` alerts were dropped, `clamped`
    ones kept with their times moved back to when they arrived."""

    alerts: list[IncomingAlert]
    rejected: int = 0
    clamped: int = 0


def claims_internal_identity(labels: Mapping[str, str]) -> bool:
    """Only the service raises its own alerts: a sender's alert labelled as one is dropped."""
    return labels.get(INTERNAL_SOURCE[0]) == INTERNAL_SOURCE[1]


def screen(alerts: list[IncomingAlert], now: float) -> Screened:
    """Alert-level oddities, settled per alert (the payload itself was valid)."""
    out = Screened([])
    latest = now + FUTURE_SKEW
    for alert in alerts:
        if claims_internal_identity(alert.labels):
            out.rejected += 1
            continue
        if alert.starts_at > latest or (
            alert.ends_at is not None and alert.ends_at > latest and alert.status == "resolved"
        ):
            # A time far ahead would keep the alert firing (or its episode open) for ever.
            out.clamped += 1
            alert = IncomingAlert(
                alert.status,
                alert.labels,
                alert.annotations,
                min(alert.starts_at, now),
                None if alert.ends_at is None else min(alert.ends_at, now),
                alert.generator_url,
                alert.extras,
            )
        out.alerts.append(alert)
    return out
