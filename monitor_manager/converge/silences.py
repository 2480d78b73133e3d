"""Silences as Alertmanager's API v2 defines them, so `amtool silence add|query|expire` work.

Pure decisions on values: validating a postableSilence, a silence's state at a time, whether it
mutes a label set, what a create or update stores, the gettableSilence JSON, the `filter` query.
Storage, the HTTP handlers and the pipeline hook carry these out.

Sources (v0.25, the amtool Debian ships): prometheus/alertmanager `api/v2/openapi.yaml`,
`api/v2/api.go` (postSilencesHandler, CheckSilenceMatchesFilterLabels, SortSilences),
`api/v2/compat.go`, `silence/silence.go` (validateSilence, Set, canUpdate, expire),
`types/types.go` (CalcSilenceState).

Where this service is stricter than Alertmanager, it says so at the rule.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor_manager.clock import iso
from monitor_manager.converge.matchers import (
    Matcher,
    MatcherError,
    is_utf8,
    matches_all,
    matches_unlabelled,
)
from monitor_manager.durations import format_duration
from monitor_manager.ingest.payload import LABEL_NAME, PayloadError, parse_time

DEFAULT_MAX_DURATION = 7 * 86400.0  # `[silences] max_duration`
MAX_MATCHERS = 64
MAX_NAME = 256
MAX_VALUE = 4096
MAX_COMMENT = 4096
MAX_CREATED_BY = 256
MAX_ID = 256

INTERNAL_ALERTNAMES = (
    "HeartbeatMissing",
    "PeerDown",
    "DeliveryFailed",
    "ChannelFailing",
    "StoreFailing",
    "PeeringDisabled",
    "ClockSkew",
)
# Labels every internal alert carries with a fixed value (watchdog.internal_alert), and labels
# whose value names the broken thing and so cannot be known here.
_INTERNAL_FIXED = {"source": "monitor-manager", "severity": "critical"}
_INTERNAL_NAMING = frozenset({"heartbeat", "peer", "channel", "instance"})


class SilenceState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


# The order of GET /api/v2/silences: active, then pending, then expired.
_STATE_ORDER = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}


class SilenceError(ValueError):
    """A postableSilence Alertmanager (or this service's guard rails) would refuse.

    `field` is the path of the offending value, e.g. `matchers[2].value` ("" for the body);
    str() is "field: message", the text the API answers as a JSON string and amtool prints."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class SilenceNotFound(LookupError):
    """An update names a silence id that is not stored (Alertmanager answers 404)."""

    def __init__(self, silence_id: str) -> None:
        super().__init__(f"silence {silence_id} not found")
        self.silence_id = silence_id


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float
    origin: str = ""  # the instance where it was last changed: breaks ties between peers

    def newer_than(self, other: Silence) -> bool:
        """Peers keep the newer of two versions of a silence (the same everywhere)."""
        return (self.updated_at, self.origin) > (other.updated_at, other.origin)

    def state(self, now: float) -> SilenceState:
        # Half-open [startsAt, endsAt), as the API reports it (CalcSilenceState): a silence
        # expired "now" is expired now, not active for one more instant.
        if now < self.starts_at:
            return SilenceState.PENDING
        if now < self.ends_at:
            return SilenceState.ACTIVE
        return SilenceState.EXPIRED

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) is SilenceState.ACTIVE and matches_all(self.matchers, labels)

    def to_json(self, now: float) -> dict[str, Any]:
        """The gettableSilence: times RFC 3339 UTC with milliseconds, as go-openapi writes
        them; every matcher with both flags, as Alertmanager answers."""
        return {
            "id": self.id,
            "status": {"state": str(self.state(now))},
            "updatedAt": iso(self.updated_at),
            "comment": self.comment,
            "createdBy": self.created_by,
            "endsAt": iso(self.ends_at),
            "matchers": [
                {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
                for m in self.matchers
            ],
            "startsAt": iso(self.starts_at),
        }


@dataclass(frozen=True)
class PostableSilence:
    """A validated POST /api/v2/silences body. `id` is None for a new silence."""

    id: str | None
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str


def new_silence_id() -> str:
    return str(uuid.uuid4())


def parse_postable(
    body: Any, now: float, max_duration: float = DEFAULT_MAX_DURATION
) -> PostableSilence:
    """Validate a decoded postableSilence; SilenceError names the first offending field.

    Alertmanager's rules: matchers a non-empty list of {name, value, isRegex, isEqual}
    (isEqual true when absent), valid label names, UTF-8 values, regexes that compile; not
    every matcher may match the empty string; startsAt before endsAt; endsAt not past.
    Stricter here: createdBy and comment must not be blank (Alertmanager takes ""); a matcher
    counts as matching the empty string by what it matches, so `{team!="db"}` alone is refused
    too (Alertmanager only counts = and =~, yet that silence mutes every alert without
    team="db"); sizes are bounded; the silence may last at most `max_duration` from when it
    takes effect (max(startsAt, now): a pending silence may start far ahead)."""
    if not isinstance(body, dict):
        raise SilenceError("", f"expected a JSON object (postableSilence), got {_kind(body)}")
    silence_id = body.get("id")
    if silence_id == "":
        silence_id = None  # what go-swagger decodes an empty id to: a new silence
    if silence_id is not None:
        silence_id = _string(silence_id, "id", MAX_ID)
    matchers = _parse_matchers(body)
    starts_at = _time(body, "startsAt", "start")
    ends_at = _time(body, "endsAt", "end")
    created_by = _string(body.get("createdBy"), "createdBy", MAX_CREATED_BY)
    if any(unicodedata.category(c) == "Cc" for c in created_by):
        raise SilenceError("createdBy", "must not contain control characters")
    comment = _string(body.get("comment"), "comment", MAX_COMMENT)
    if starts_at >= ends_at:
        raise SilenceError("endsAt", "start time must be before end time")
    if ends_at <= now:
        raise SilenceError("endsAt", "end time can't be in the past")
    lasts = ends_at - max(starts_at, now)
    if lasts > max_duration:
        raise SilenceError(
            "endsAt",
            f"the silence would last {format_duration(lasts)}, "
            f"longer than silences.max_duration ({format_duration(max_duration)})",
        )
    return PostableSilence(silence_id, matchers, starts_at, ends_at, created_by, comment)


def _parse_matchers(body: dict[str, Any]) -> tuple[Matcher, ...]:
    raw = body.get("matchers")
    if raw is None:
        raise SilenceError("matchers", "is required")
    if not isinstance(raw, list):
        raise SilenceError("matchers", f"expected a list, got {_kind(raw)}")
    if not raw:
        raise SilenceError("matchers", "at least one matcher required")
    if len(raw) > MAX_MATCHERS:
        raise SilenceError("matchers", f"at most {MAX_MATCHERS} matchers, got {len(raw)}")
    out = tuple(_parse_matcher(item, f"matchers[{i}]") for i, item in enumerate(raw))
    if matches_unlabelled(out):
        raise SilenceError(
            "matchers",
            "at least one matcher must not match the empty string "
            "(this silence would mute every alert without those labels)",
        )
    return out


def _parse_matcher(item: Any, path: str) -> Matcher:
    if not isinstance(item, dict):
        raise SilenceError(path, f"expected an object (matcher), got {_kind(item)}")
    name = _string(item.get("name"), f"{path}.name", MAX_NAME)
    if not LABEL_NAME.fullmatch(name):
        raise SilenceError(f"{path}.name", f"invalid label name {name!r}")
    value = _string(item.get("value"), f"{path}.value", MAX_VALUE, allow_empty=True)
    is_regex = item.get("isRegex")
    if not isinstance(is_regex, bool):
        raise SilenceError(
            f"{path}.isRegex", "is required" if is_regex is None else "expected true or false"
        )
    is_equal = item.get("isEqual", True)
    if is_equal is None:
        is_equal = True  # null is absent to go-swagger's *bool: the API's default applies
    if not isinstance(is_equal, bool):
        raise SilenceError(f"{path}.isEqual", "expected true or false")
    try:
        return Matcher(name, value, is_regex, is_equal)
    except MatcherError as exc:
        raise SilenceError(f"{path}.value", exc.message) from None


def _string(value: Any, path: str, limit: int, allow_empty: bool = False) -> str:
    if value is None:
        raise SilenceError(path, "is required")
    if not isinstance(value, str):
        raise SilenceError(path, f"expected a string, got {_kind(value)}")
    if not allow_empty and not value.strip():
        raise SilenceError(path, "must not be empty")
    if len(value) > limit:
        raise SilenceError(path, f"at most {limit} characters, got {len(value)}")
    if not is_utf8(value):
        raise SilenceError(path, "not valid UTF-8")
    return value


def _time(body: dict[str, Any], key: str, what: str) -> float:
    value = body.get(key)
    if value is None:
        raise SilenceError(key, "is required")
    try:
        ts = parse_time(value, key)
    except PayloadError as exc:
        raise SilenceError(key, exc.message) from None
    if ts is None:
        raise SilenceError(key, f"invalid zero {what} timestamp")
    return ts


def _kind(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
            type(value), "a number"
        )
    )


def expire(silence: Silence, now: float) -> Silence:
    """DELETE /api/v2/silence/{id}: an active silence ends now, a pending one starts and ends
    now (so it never was in effect), an expired one stays as it was (idempotent)."""
    match silence.state(now):
        case SilenceState.EXPIRED:
            return silence
        case SilenceState.ACTIVE:
            return dataclasses.replace(silence, ends_at=now, updated_at=now)
        case _:
            return dataclasses.replace(silence, starts_at=now, ends_at=now, updated_at=now)


def apply_update(
    existing: Silence | None,
    postable: PostableSilence,
    now: float,
    new_id: Callable[[], str] = new_silence_id,
) -> list[Silence]:
    """What POST /api/v2/silences stores, as Alertmanager's Silences.Set decides it.

    Returns the silences to store; the last one is the silence the answer's `silenceID` names,
    an expired predecessor (if any) comes before it. `existing` is the stored silence named by
    `postable.id`, None when there is none (SilenceNotFound if an id was given).
    - a new silence gets a new id, and starts no earlier than now;
    - a silence is updated in place when its matchers are unchanged and it is pending (the new
      start not in the past) or active (the same start, to the second); the history of what
      was muted when stays true;
    - otherwise (matchers changed, a pending one moved into the past, an active one's start
      moved, or it has expired) a new silence with a new id replaces it, and the old one is
      expired unless it already was.
    Matchers are compared as a set: Alertmanager compares the list in order, but the order
    changes nothing about what a silence mutes."""
    if existing is None:
        if postable.id is not None:
            raise SilenceNotFound(postable.id)
        return [_create(postable, now, new_id())]
    if existing.id != postable.id:
        raise ValueError(f"existing silence {existing.id} is not {postable.id}")
    if _can_update(existing, postable, now):
        # An active silence keeps its exact start: the post carries it to the millisecond.
        start = (
            existing.starts_at if existing.state(now) is SilenceState.ACTIVE else postable.starts_at
        )
        return [
            Silence(
                existing.id,
                postable.matchers,
                start,
                postable.ends_at,
                postable.created_by,
                postable.comment,
                now,
            )
        ]
    replaced = [] if existing.state(now) is SilenceState.EXPIRED else [expire(existing, now)]
    return [*replaced, _create(postable, now, new_id())]


def _can_update(existing: Silence, postable: PostableSilence, now: float) -> bool:
    if _matcher_set(existing.matchers) != _matcher_set(postable.matchers):
        return False
    match existing.state(now):
        case SilenceState.ACTIVE:
            return int(existing.starts_at // 1) == int(postable.starts_at // 1) and (
                postable.ends_at > now
            )
        case SilenceState.PENDING:
            return postable.starts_at >= now
        case _:
            return False


def _matcher_set(matchers: Iterable[Matcher]) -> list[tuple[str, str, bool, bool]]:
    return sorted((m.name, m.value, m.is_regex, m.is_equal) for m in matchers)


def _create(postable: PostableSilence, now: float, silence_id: str) -> Silence:
    return Silence(
        silence_id,
        postable.matchers,
        max(postable.starts_at, now),
        postable.ends_at,
        postable.created_by,
        postable.comment,
        now,
    )


def filter_silences(silences: Iterable[Silence], filters: Sequence[Matcher]) -> list[Silence]:
    """GET /api/v2/silences?filter=...: a silence is listed when each filter matcher equals one
    of its matchers (same name, same operator, same value): `filter=alertname="X"` finds the
    silences written with alertname="X", not every silence that would mute an alert named X
    (CheckSilenceMatchesFilterLabels)."""
    wanted = [(f.name, f.value, f.is_regex, f.is_equal) for f in filters]
    out = []
    for silence in silences:
        own = set(_matcher_set(silence.matchers))
        if all(w in own for w in wanted):
            out.append(silence)
    return out


def sort_silences(silences: Iterable[Silence], now: float) -> list[Silence]:
    """The order Alertmanager lists silences in: active ones ending soonest first, then
    pending ones starting soonest, then expired ones most recently ended (SortSilences)."""

    def key(s: Silence) -> tuple[int, float]:
        state = s.state(now)
        when = {
            SilenceState.ACTIVE: s.ends_at,
            SilenceState.PENDING: s.starts_at,
            SilenceState.EXPIRED: -s.ends_at,
        }[state]
        return _STATE_ORDER[state], when

    return sorted(silences, key=key)


def muting(silences: Iterable[Silence], labels: Mapping[str, str], now: float) -> list[Silence]:
    """The silences that mute an alert with these labels now (none: it is notified)."""
    return [s for s in silences if s.mutes(labels, now)]


def mutes_internal(
    silence: Silence, internal_alertnames: Iterable[str] = INTERNAL_ALERTNAMES
) -> bool:
    """True when the silence could mute one of Monitor Manager's own alerts (HeartbeatMissing,
    PeerDown, ...): a flag for listings and the console, not a security decision.

    Internal alerts carry alertname, source="monitor-manager", severity="critical", and a label
    naming the broken thing (heartbeat, peer, channel or instance) whose value is not known
    here. For some internal alertname N, every matcher must be able to match:
    - on alertname: N; on source or severity: the fixed value;
    - on heartbeat, peer, channel or instance: assumed possible (any value may occur);
    - on any other label: the empty string (internal alerts do not carry it).
    This over-approximates (`peer="x"` is taken as possible on HeartbeatMissing too), which is
    the safe side for a warning."""

    def could_match(m: Matcher, alertname: str) -> bool:
        if m.name == "alertname":
            return m.matches_value(alertname)
        if m.name in _INTERNAL_FIXED:
            return m.matches_value(_INTERNAL_FIXED[m.name])
        if m.name in _INTERNAL_NAMING:
            return True
        return m.matches_value("")

    return any(all(could_match(m, name) for m in silence.matchers) for name in internal_alertnames)
