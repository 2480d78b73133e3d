"""Silences: Alertmanager API v2 validation, states, update semantics, the JSON amtool reads.

The last tests run the real amtool 0.25 (Debian's prometheus-alertmanager) against a small
aiohttp server on 127.0.0.1 that answers with these functions.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor_manager.clock import iso
from monitor_manager.converge.matchers import Matcher, parse_matcher, parse_matchers
from monitor_manager.converge.silences import (
    DEFAULT_MAX_DURATION,
    PostableSilence,
    Silence,
    SilenceError,
    SilenceNotFound,
    SilenceState,
    apply_update,
    expire,
    filter_silences,
    mutes_internal,
    muting,
    new_silence_id,
    parse_postable,
    sort_silences,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600.0


def body(**changes: Any) -> dict[str, Any]:
    """A valid postableSilence as amtool sends it, starting at T0 for an hour."""
    out: dict[str, Any] = {
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": True},
        ],
        "startsAt": iso(T0),
        "endsAt": iso(T0 + HOUR),
        "createdBy": "alice",
        "comment": "disk replacement",
    }
    out.update(changes)
    return out


def silence(
    matchers: str = '{alertname="DiskFull"}',
    start: float = T0,
    end: float = T0 + HOUR,
    sid: str = "s1",
) -> Silence:
    return Silence(sid, tuple(parse_matchers(matchers)), start, end, "alice", "why", start)


def postable(
    matchers: str = '{alertname="DiskFull"}',
    start: float = T0,
    end: float = T0 + HOUR,
    sid: str | None = "s1",
    comment: str = "why",
) -> PostableSilence:
    return PostableSilence(sid, tuple(parse_matchers(matchers)), start, end, "bob", comment)


# ------------------------------------------------------------------------------ validation


def test_parse_postable_reads_what_amtool_sends() -> None:
    p = parse_postable(body(), now=T0)
    assert p == PostableSilence(
        None,
        (Matcher("alertname", "DiskFull"), Matcher("instance", "db-.*", True)),
        T0,
        T0 + HOUR,
        "alice",
        "disk replacement",
    )


@pytest.mark.parametrize("is_equal", [{}, {"isEqual": None}])
def test_an_absent_is_equal_defaults_to_true_as_the_api_does(is_equal: dict[str, Any]) -> None:
    p = parse_postable(
        body(matchers=[{"name": "a", "value": "b", "isRegex": False, **is_equal}]), now=T0
    )
    assert p.matchers == (Matcher("a", "b", False, True),)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"id": ""}, None),
        ({"id": None}, None),
        ({"id": "8c8c1c2e-0f0a-4c5f-a0ad-0f1e7a2c6b6d"}, "8c8c1c2e-0f0a-4c5f-a0ad-0f1e7a2c6b6d"),
    ],
)
def test_an_empty_id_means_a_new_silence(changes: dict[str, Any], expected: str | None) -> None:
    assert parse_postable(body(**changes), now=T0).id == expected


def test_unknown_fields_of_a_gettable_silence_are_ignored() -> None:
    p = parse_postable(body(status={"state": "active"}, updatedAt=iso(T0)), now=T0)
    assert p.created_by == "alice"


def _matcher(
    name: Any = "a", value: Any = "b", is_regex: Any = False, is_equal: Any = True
) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": is_regex, "isEqual": is_equal}


def _without(key: str) -> dict[str, Any]:
    out = body()
    del out[key]
    return out


def _matcher_without(key: str) -> dict[str, Any]:
    m = _matcher()
    del m[key]
    return body(matchers=[m])


OK = _matcher("alertname", "X")

INVALID: list[tuple[str, Any, str, str]] = [
    # (case, body, field, message)
    ("not an object", [], "", "expected a JSON object"),
    ("no matchers", _without("matchers"), "matchers", "is required"),
    ("matchers null", body(matchers=None), "matchers", "is required"),
    ("matchers not a list", body(matchers={"a": "b"}), "matchers", "expected a list"),
    ("matchers empty", body(matchers=[]), "matchers", "at least one matcher required"),
    ("65 matchers", body(matchers=[OK] * 65), "matchers", "at most 64 matchers"),
    ("matcher not an object", body(matchers=[OK, "a=b"]), "matchers[1]", "expected an object"),
    ("name missing", _matcher_without("name"), "matchers[0].name", "is required"),
    (
        "name not a string",
        body(matchers=[_matcher(name=1)]),
        "matchers[0].name",
        "expected a string",
    ),
    ("name empty", body(matchers=[_matcher(name="")]), "matchers[0].name", "must not be empty"),
    (
        "name invalid",
        body(matchers=[OK, _matcher(name="1a")]),
        "matchers[1].name",
        "invalid label name",
    ),
    (
        "name with a colon",
        body(matchers=[_matcher(name="job:x")]),
        "matchers[0].name",
        "invalid label name",
    ),
    (
        "name too long",
        body(matchers=[_matcher(name="a" * 257)]),
        "matchers[0].name",
        "at most 256 characters",
    ),
    ("value missing", _matcher_without("value"), "matchers[0].value", "is required"),
    (
        "value not a string",
        body(matchers=[_matcher(value=5)]),
        "matchers[0].value",
        "expected a string",
    ),
    (
        "value too long",
        body(matchers=[_matcher(value="v" * 4097)]),
        "matchers[0].value",
        "at most 4096 characters",
    ),
    (
        "value lone surrogate",
        body(matchers=[_matcher(value="\ud800")]),
        "matchers[0].value",
        "not valid UTF-8",
    ),
    ("isRegex missing", _matcher_without("isRegex"), "matchers[0].isRegex", "is required"),
    (
        "isRegex a string",
        body(matchers=[_matcher(is_regex="true")]),
        "matchers[0].isRegex",
        "expected true or false",
    ),
    (
        "isEqual a number",
        body(matchers=[_matcher(is_equal=1)]),
        "matchers[0].isEqual",
        "expected true or false",
    ),
    (
        "bad regex",
        body(matchers=[OK, _matcher(value="(", is_regex=True)]),
        "matchers[1].value",
        "invalid regular expression",
    ),
    (
        "regex RE2 refuses",
        body(matchers=[_matcher(value="(?=x)y", is_regex=True)]),
        "matchers[0].value",
        "lookahead",
    ),
    (
        "only an empty equality",
        body(matchers=[_matcher(value="")]),
        "matchers",
        "must not match the empty string",
    ),
    (
        "only regexes matching empty",
        body(
            matchers=[
                _matcher(value=".*", is_regex=True),
                _matcher(name="b", value="x|", is_regex=True),
            ]
        ),
        "matchers",
        "must not match the empty string",
    ),
    (
        "only a negative equality",
        body(matchers=[_matcher(is_equal=False)]),
        "matchers",
        "must not match the empty string",
    ),
    (
        "only a negative regex",
        body(matchers=[_matcher(value=".+", is_regex=True, is_equal=False)]),
        "matchers",
        "must not match the empty string",
    ),
    ("startsAt missing", _without("startsAt"), "startsAt", "is required"),
    ("startsAt a number", body(startsAt=T0), "startsAt", "RFC 3339"),
    ("startsAt not a time", body(startsAt="tomorrow"), "startsAt", "not an RFC 3339"),
    (
        "startsAt zero",
        body(startsAt="0001-01-01T00:00:00Z"),
        "startsAt",
        "invalid zero start timestamp",
    ),
    ("endsAt missing", _without("endsAt"), "endsAt", "is required"),
    ("endsAt invalid date", body(endsAt="2027-02-30T00:00:00Z"), "endsAt", "not a valid time"),
    ("endsAt zero", body(endsAt="0001-01-01T00:00:00Z"), "endsAt", "invalid zero end timestamp"),
    ("createdBy missing", _without("createdBy"), "createdBy", "is required"),
    ("createdBy empty", body(createdBy=""), "createdBy", "must not be empty"),
    ("createdBy blank", body(createdBy="  "), "createdBy", "must not be empty"),
    ("createdBy not a string", body(createdBy=["a"]), "createdBy", "expected a string"),
    ("createdBy too long", body(createdBy="a" * 257), "createdBy", "at most 256"),
    (
        "createdBy control character",
        body(createdBy="alice\x1b[31m"),
        "createdBy",
        "control characters",
    ),
    ("createdBy newline", body(createdBy="alice\nbob"), "createdBy", "control characters"),
    ("comment missing", _without("comment"), "comment", "is required"),
    ("comment empty", body(comment=""), "comment", "must not be empty"),
    ("comment too long", body(comment="c" * 4097), "comment", "at most 4096"),
    ("id not a string", body(id=7), "id", "expected a string"),
    ("id too long", body(id="i" * 257), "id", "at most 256"),
    (
        "start equals end",
        body(endsAt=iso(T0)),
        "endsAt",
        "start time must be before end time",
    ),
    (
        "start after end",
        body(startsAt=iso(T0 + 10), endsAt=iso(T0)),
        "endsAt",
        "start time must be before end time",
    ),
    (
        "end in the past",
        body(startsAt=iso(T0 - 2 * HOUR), endsAt=iso(T0 - 1)),
        "endsAt",
        "end time can't be in the past",
    ),
    (
        "end is now",
        body(startsAt=iso(T0 - HOUR), endsAt=iso(T0)),
        "endsAt",
        "end time can't be in the past",
    ),
    (
        "longer than max_duration",
        body(endsAt=iso(T0 + DEFAULT_MAX_DURATION + 1)),
        "endsAt",
        "longer than silences.max_duration (7d)",
    ),
]


@pytest.mark.parametrize(
    ("raw", "field", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_every_validation_error_names_its_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(SilenceError) as info:
        parse_postable(raw, now=T0)
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value) == (f"{field}: {info.value.message}" if field else info.value.message)


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("a negative matcher beside a positive one", body(matchers=[_matcher(is_equal=False), OK])),
        ("a regex that needs a value", body(matchers=[_matcher(value=".+", is_regex=True)])),
        (
            "a pending silence far ahead lasting a day",
            body(startsAt=iso(T0 + 30 * 86400), endsAt=iso(T0 + 31 * 86400)),
        ),
        (
            "started long ago, ends within max_duration from now",
            body(startsAt=iso(T0 - 30 * 86400), endsAt=iso(T0 + DEFAULT_MAX_DURATION)),
        ),
        ("exactly max_duration", body(endsAt=iso(T0 + DEFAULT_MAX_DURATION))),
        ("a comment with line breaks", body(comment="line 1\nline 2")),
        ("a non-ASCII author", body(createdBy="张三")),
        ("64 matchers", body(matchers=[OK] * 64)),
        ("an offset time", body(startsAt="2027-01-15T16:00:00+08:00")),
    ],
)
def test_what_alertmanager_accepts_is_accepted(case: str, raw: dict[str, Any]) -> None:
    parse_postable(raw, now=T0)


def test_max_duration_is_the_configured_guard_rail() -> None:
    raw = body(endsAt=iso(T0 + 2 * HOUR))
    assert parse_postable(raw, now=T0, max_duration=2 * HOUR).ends_at == T0 + 2 * HOUR
    with pytest.raises(SilenceError, match=r"last 2h, longer than silences.max_duration \(1h\)"):
        parse_postable(raw, now=T0, max_duration=HOUR)


# ------------------------------------------------------------------------------ state, muting


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (T0 - 1, SilenceState.PENDING),
        (T0, SilenceState.ACTIVE),
        (T0 + HOUR - 0.001, SilenceState.ACTIVE),
        (T0 + HOUR, SilenceState.EXPIRED),
        (T0 + 2 * HOUR, SilenceState.EXPIRED),
    ],
)
def test_state_moves_pending_active_expired(now: float, state: SilenceState) -> None:
    assert silence().state(now) is state
    assert silence().to_json(now)["status"] == {"state": state.value}


@pytest.mark.parametrize(
    ("labels", "now", "muted"),
    [
        ({"alertname": "DiskFull", "instance": "db-1"}, T0 + 1, True),
        ({"alertname": "DiskFull", "instance": "web-1"}, T0 + 1, False),
        ({"alertname": "DiskFull"}, T0 + 1, False),  # missing label: "" does not match db-.*
        ({"alertname": "DiskFull", "instance": "db-1"}, T0 - 1, False),  # pending
        ({"alertname": "DiskFull", "instance": "db-1"}, T0 + HOUR, False),  # expired
    ],
)
def test_a_silence_mutes_matching_alerts_while_active(
    labels: dict[str, str], now: float, muted: bool
) -> None:
    s = silence('{alertname="DiskFull", instance=~"db-.*"}')
    assert s.mutes(labels, now) is muted
    assert muting([s, silence('{alertname="Other"}', sid="s2")], labels, now) == (
        [s] if muted else []
    )


def test_to_json_is_alertmanagers_gettable_silence() -> None:
    s = Silence(
        "6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11",
        (
            Matcher("alertname", "DiskFull"),
            Matcher("env", "prod|stage", True, False),
            Matcher("team", "db", False, False),
            Matcher("job", "node.*", True),
        ),
        T0 + 0.0125,
        T0 + HOUR + 0.9999,
        "alice",
        "disk",
        T0 - 5.5,
    )
    assert s.to_json(T0 + 1) == {
        "id": "6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11",
        "status": {"state": "active"},
        "updatedAt": "2027-01-15T07:59:54.500Z",
        "comment": "disk",
        "createdBy": "alice",
        "endsAt": "2027-01-15T09:00:00.999Z",  # truncated, as Go formats milliseconds
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "env", "value": "prod|stage", "isRegex": True, "isEqual": False},
            {"name": "team", "value": "db", "isRegex": False, "isEqual": False},
            {"name": "job", "value": "node.*", "isRegex": True, "isEqual": True},
        ],
        "startsAt": "2027-01-15T08:00:00.012Z",
    }
    json.dumps(s.to_json(T0))  # plain JSON types only


def test_to_json_round_trips_through_parse_postable() -> None:
    s = silence('{alertname="X", env!~"dev|test"}', start=T0 + 60, end=T0 + HOUR)
    p = parse_postable(s.to_json(T0), now=T0)
    assert (p.id, p.matchers, p.starts_at, p.ends_at, p.created_by, p.comment) == (
        s.id,
        s.matchers,
        s.starts_at,
        s.ends_at,
        s.created_by,
        s.comment,
    )


def test_new_silence_ids_are_uuid4_strings() -> None:
    ids = {new_silence_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 36 and i[14] == "4" for i in ids)


# ------------------------------------------------------------------------------ expire, update


@pytest.mark.parametrize(
    ("now", "starts_at", "ends_at"),
    [
        (T0 + 10, T0, T0 + 10),  # active: ends now
        (T0 - 10, T0 - 10, T0 - 10),  # pending: starts and ends now, so it never muted
        (T0 + 2 * HOUR, T0, T0 + HOUR),  # expired: unchanged
    ],
)
def test_expire_follows_alertmanager(now: float, starts_at: float, ends_at: float) -> None:
    s = silence()
    out = expire(s, now)
    assert (out.starts_at, out.ends_at) == (starts_at, ends_at)
    assert out.state(now) is SilenceState.EXPIRED
    assert out.updated_at == (s.updated_at if now > T0 + HOUR else now)


def _ids() -> Callable[[], str]:
    n = iter(range(1, 100))
    return lambda: f"new-{next(n)}"


# (case, existing, postable, now, expected [(id, starts_at, ends_at, matchers)])
UPDATES: list[
    tuple[str, Silence | None, PostableSilence, float, list[tuple[str, float, float, str]]]
] = [
    (
        "new silence gets a new id",
        None,
        postable(sid=None, start=T0 + 60),
        T0,
        [("new-1", T0 + 60, T0 + HOUR, '{alertname="DiskFull"}')],
    ),
    (
        "new silence starting in the past starts now",
        None,
        postable(sid=None, start=T0 - 60),
        T0,
        [("new-1", T0, T0 + HOUR, '{alertname="DiskFull"}')],
    ),
    (
        "active, later end: in place",
        silence(),
        postable(start=T0 + 0.0004, end=T0 + 3 * HOUR),
        T0 + 60,
        [("s1", T0, T0 + 3 * HOUR, '{alertname="DiskFull"}')],
    ),
    (
        "active, earlier end: in place",
        silence(),
        postable(end=T0 + 120),
        T0 + 60,
        [("s1", T0, T0 + 120, '{alertname="DiskFull"}')],
    ),
    (
        "active, matchers reordered: in place",
        silence('{a="1", b="2"}'),
        postable('{b="2", a="1"}'),
        T0 + 60,
        [("s1", T0, T0 + HOUR, '{b="2", a="1"}')],
    ),
    (
        "active, matchers changed: old expired, new id",
        silence(),
        postable('{alertname="DiskFull", env="prod"}'),
        T0 + 60,
        [
            ("s1", T0, T0 + 60, '{alertname="DiskFull"}'),
            ("new-1", T0 + 60, T0 + HOUR, '{alertname="DiskFull", env="prod"}'),
        ],
    ),
    (
        "active, operator changed: new id",
        silence(),
        postable('{alertname!="DiskFull", a="b"}'),
        T0 + 60,
        [
            ("s1", T0, T0 + 60, '{alertname="DiskFull"}'),
            ("new-1", T0 + 60, T0 + HOUR, '{alertname!="DiskFull", a="b"}'),
        ],
    ),
    (
        "active, start moved: new id",
        silence(),
        postable(start=T0 + 30),
        T0 + 60,
        [
            ("s1", T0, T0 + 60, '{alertname="DiskFull"}'),
            ("new-1", T0 + 60, T0 + HOUR, '{alertname="DiskFull"}'),
        ],
    ),
    (
        "pending, new start still ahead: in place",
        silence(start=T0 + HOUR, end=T0 + 2 * HOUR),
        postable(start=T0 + 2 * HOUR, end=T0 + 3 * HOUR),
        T0,
        [("s1", T0 + 2 * HOUR, T0 + 3 * HOUR, '{alertname="DiskFull"}')],
    ),
    (
        "pending, start moved to now: in place",
        silence(start=T0 + HOUR, end=T0 + 2 * HOUR),
        postable(start=T0, end=T0 + 2 * HOUR),
        T0,
        [("s1", T0, T0 + 2 * HOUR, '{alertname="DiskFull"}')],
    ),
    (
        "pending, start moved into the past: old never in effect, new id",
        silence(start=T0 + HOUR, end=T0 + 2 * HOUR),
        postable(start=T0 - 60, end=T0 + 2 * HOUR),
        T0,
        [
            ("s1", T0, T0, '{alertname="DiskFull"}'),
            ("new-1", T0, T0 + 2 * HOUR, '{alertname="DiskFull"}'),
        ],
    ),
    (
        "expired: a new id, the old one untouched",
        silence(start=T0 - 2 * HOUR, end=T0 - HOUR),
        postable(start=T0, end=T0 + HOUR),
        T0,
        [("new-1", T0, T0 + HOUR, '{alertname="DiskFull"}')],
    ),
]


@pytest.mark.parametrize(
    ("existing", "post", "now", "expected"), [c[1:] for c in UPDATES], ids=[c[0] for c in UPDATES]
)
def test_apply_update_follows_alertmanagers_set(
    existing: Silence | None,
    post: PostableSilence,
    now: float,
    expected: list[tuple[str, float, float, str]],
) -> None:
    out = apply_update(existing, post, now, new_id=_ids())
    assert [(s.id, s.starts_at, s.ends_at, s.matchers) for s in out] == [
        (i, start, end, tuple(parse_matchers(ms))) for i, start, end, ms in expected
    ]
    assert all(s.updated_at == now for s in out)
    current = out[-1]
    assert (current.created_by, current.comment) == (post.created_by, post.comment)


def test_an_update_changes_author_and_comment_in_place() -> None:
    [out] = apply_update(silence(), postable(comment="extended: still replacing"), T0 + 60)
    assert (out.id, out.created_by, out.comment) == ("s1", "bob", "extended: still replacing")


def test_updating_an_unknown_id_is_not_found() -> None:
    with pytest.raises(SilenceNotFound, match="silence nope not found"):
        apply_update(None, postable(sid="nope"), T0)


def test_the_existing_silence_must_be_the_one_named() -> None:
    with pytest.raises(ValueError, match="is not"):
        apply_update(silence(sid="other"), postable(sid="s1"), T0)


# ------------------------------------------------------------------------------ listing


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], ["eq", "re", "two", "neg"]),
        (['alertname="DiskFull"'], ["eq", "two"]),
        (["alertname=DiskFull"], ["eq", "two"]),  # unquoted is the same matcher
        (['alertname="Disk.*"'], []),  # compared as written, not evaluated
        (['alertname=~"Disk.*"'], ["re"]),
        (['alertname!="DiskFull"'], ["neg"]),
        (['alertname="DiskFull"', 'env="prod"'], ["two"]),  # every filter must be found
        (['env="prod"', 'alertname="DiskFull"'], ["two"]),
        (['env="stage"'], []),
        (['instance="x"'], []),  # a silence without that label is not listed
    ],
)
def test_filter_finds_silences_written_with_those_matchers(
    filters: list[str], expected: list[str]
) -> None:
    silences = [
        silence('{alertname="DiskFull"}', sid="eq"),
        silence('{alertname=~"Disk.*"}', sid="re"),
        silence('{env="prod", alertname="DiskFull"}', sid="two"),
        silence('{alertname!="DiskFull", a="b"}', sid="neg"),
    ]
    found = filter_silences(silences, [parse_matcher(f) for f in filters])
    assert [s.id for s in found] == expected


def test_silences_are_listed_active_then_pending_then_expired() -> None:
    silences = [
        silence(start=T0 - 3 * HOUR, end=T0 - 2 * HOUR, sid="expired-earlier"),
        silence(start=T0 + 2 * HOUR, end=T0 + 3 * HOUR, sid="pending-later"),
        silence(start=T0 - HOUR, end=T0 + 2 * HOUR, sid="active-later"),
        silence(start=T0 - 2 * HOUR, end=T0 - HOUR, sid="expired-recent"),
        silence(start=T0 + HOUR, end=T0 + 3 * HOUR, sid="pending-sooner"),
        silence(start=T0 - HOUR, end=T0 + HOUR, sid="active-sooner"),
    ]
    assert [s.id for s in sort_silences(silences, T0)] == [
        "active-sooner",
        "active-later",
        "pending-sooner",
        "pending-later",
        "expired-recent",
        "expired-earlier",
    ]


@pytest.mark.parametrize(
    ("matchers", "flagged"),
    [
        ('{alertname="HeartbeatMissing"}', True),
        ('{alertname=~"Peer.*"}', True),
        ('{alertname="PeerDown", peer="az2"}', True),
        ('{peer="az2"}', True),  # only PeerDown carries peer: it mutes that one
        ('{source="monitor-manager"}', True),
        ('{severity="critical", channel="wecom"}', True),
        ('{alertname=~".+"}', True),
        ('{alertname!="DiskFull"}', True),
        ('{alertname="DiskFull"}', False),
        ('{alertname="HeartbeatMissing", cluster="batch"}', False),  # internal alerts lack cluster
        ('{alertname="HeartbeatMissing", cluster!="batch"}', True),
        ('{severity="warning"}', False),
        ('{source="prometheus"}', False),
        ('{instance=~"db-.*"}', True),  # StoreFailing names the instance
        ('{cluster="batch"}', False),
        ('{alertname="PeerDown", severity!="critical"}', False),
    ],
)
def test_silences_that_could_mute_internal_alerts_are_flagged(matchers: str, flagged: bool) -> None:
    assert mutes_internal(silence(matchers)) is flagged


def test_the_internal_alertnames_can_be_given() -> None:
    s = silence('{alertname="ClockSkew"}')
    assert mutes_internal(s)  # release 2's ClockSkew is internal
    assert not mutes_internal(s, ["HeartbeatMissing", "PeerDown"])
    assert mutes_internal(s, ["HeartbeatMissing", "ClockSkew"])


# ------------------------------------------------------------------------------ real amtool

AMTOOL_TIMEOUT = 30.0


class FakeAlertmanager:
    """The silences API of Alertmanager v2 built from these functions, recording requests."""

    def __init__(self, silences: list[Silence]) -> None:
        self.silences = silences
        self.posted: list[Any] = []
        self.queries: list[list[str]] = []
        self.expired: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/silences", self.get)
        app.router.add_post("/api/v2/silences", self.post)
        app.router.add_get("/api/v2/silence/{id}", self.get_one)
        app.router.add_delete("/api/v2/silence/{id}", self.delete)
        return app

    async def get(self, request: web.Request) -> web.Response:
        self.queries.append(request.query.getall("filter", []))
        try:
            filters = [parse_matcher(f) for f in request.query.getall("filter", [])]
        except ValueError as exc:
            return web.json_response(str(exc), status=400)
        now = time.time()
        found = sort_silences(filter_silences(self.silences, filters), now)
        return web.json_response([s.to_json(now) for s in found])

    async def get_one(self, request: web.Request) -> web.Response:
        found = [s for s in self.silences if s.id == request.match_info["id"]]
        if not found:
            return web.json_response("silence not found", status=404)
        return web.json_response(found[0].to_json(time.time()))

    async def post(self, request: web.Request) -> web.Response:
        raw = await request.json()
        self.posted.append(copy.deepcopy(raw))
        now = time.time()
        try:
            p = parse_postable(raw, now)
        except SilenceError as exc:
            return web.json_response(str(exc), status=400)
        existing = next((s for s in self.silences if s.id == p.id), None)
        out = apply_update(existing, p, now)
        self.silences = [s for s in self.silences if s.id not in {o.id for o in out}] + out
        return web.json_response({"silenceID": out[-1].id})

    async def delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        self.expired.append(sid)
        self.silences = [expire(s, time.time()) if s.id == sid else s for s in self.silences]
        return web.Response()


Amtool = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def fake_am() -> FakeAlertmanager:
    now = time.time()
    return FakeAlertmanager(
        [
            Silence(
                "6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11",
                (
                    Matcher("alertname", "DiskFull"),
                    Matcher("env", 'prod|st"age', True, False),
                    Matcher("team", "db", False, False),
                    Matcher("job", "node.*", True),
                ),
                now - 60.1234,
                now + HOUR,
                "alice",
                "disk\nreplacement",
                now - 60.1234,
            ),
            Silence(
                "0b1c2d3e-4f50-4612-8a7b-8c9d0e1f2a3b",
                (Matcher("alertname", "Other"),),
                now + HOUR,
                now + 2 * HOUR,
                "bob",
                "later",
                now - 1,
            ),
        ]
    )


@pytest.fixture
async def amtool(fake_am: FakeAlertmanager) -> Any:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail(
            "amtool is not installed: install the Debian package prometheus-alertmanager",
            pytrace=False,
        )
    server = TestServer(fake_am.app(), host="127.0.0.1")
    await server.start_server()

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            path,
            f"--alertmanager.url=http://127.0.0.1:{server.port}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), AMTOOL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    yield run
    await server.close()


async def test_amtool_reads_the_gettable_silences_unchanged(
    amtool: Amtool, fake_am: FakeAlertmanager
) -> None:
    # amtool decodes into its models and encodes them again: a field it did not understand,
    # or a time it parsed differently, would show here.
    code, out, err = await amtool("silence", "query", "-o", "json")
    assert code == 0, err
    now = time.time()
    assert json.loads(out) == [s.to_json(now) for s in sort_silences(fake_am.silences, now)]


async def test_amtool_lists_the_silences_with_matchers_in_display_form(amtool: Amtool) -> None:
    code, out, err = await amtool("silence", "query", "-o", "extended")
    assert code == 0, err
    assert '{alertname="DiskFull",env!~"prod|st\\"age",team!="db",job=~"node.*"}' in out
    assert "alice" in out


@pytest.mark.parametrize(
    "texts",
    [
        ['alertname="DiskFull"', 'env=~"prod|st\\"age"', "team!=db", "job!~node.*"],
        ["alertname=X", 'q="x, y"', 'n="line\\nbreak"', 'b="back\\\\slash"', 'd="\\d+"'],
        ["alertname=X", ' s = "spaced" ', 'u="中文"', "e=", "t=trailing\\"],
    ],
)
async def test_amtool_add_sends_what_parse_matcher_reads(
    amtool: Amtool, fake_am: FakeAlertmanager, texts: list[str]
) -> None:
    code, out, err = await amtool(
        "silence", "add", *texts, "--comment=maintenance", "--author=alice", "--duration=2h"
    )
    assert code == 0, err
    [raw] = fake_am.posted
    p = parse_postable(raw, time.time())
    assert list(p.matchers) == [parse_matcher(t) for t in texts]
    assert (p.created_by, p.comment) == ("alice", "maintenance")
    assert 2 * HOUR - 5 < p.ends_at - p.starts_at <= 2 * HOUR
    assert out.strip() == fake_am.silences[-1].id


async def test_amtool_add_assumes_alertname_for_a_bare_word(
    amtool: Amtool, fake_am: FakeAlertmanager
) -> None:
    code, _, err = await amtool("silence", "add", "DiskFull", "--comment=x")
    assert code == 0, err
    assert parse_postable(fake_am.posted[0], time.time()).matchers == (
        Matcher("alertname", "DiskFull"),
    )


async def test_amtool_prints_the_field_of_a_refused_silence(
    amtool: Amtool, fake_am: FakeAlertmanager
) -> None:
    code, _, err = await amtool("silence", "add", "team!=db", "--comment=x")
    assert code != 0
    assert "matchers: at least one matcher must not match the empty string" in err
    assert len(fake_am.silences) == 2


async def test_amtool_query_filters_as_alertmanager_does(
    amtool: Amtool, fake_am: FakeAlertmanager
) -> None:
    code, out, err = await amtool("silence", "query", "-q", "DiskFull", "team!=db")
    assert code == 0, err
    assert out.split() == ["6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11"]
    assert fake_am.queries == [["alertname=DiskFull", "team!=db"]]  # the bare word named
    code, out, err = await amtool("silence", "query", "-q", 'team="db"')
    assert (code, out) == (0, "")


async def test_amtool_expire_ends_a_silence(amtool: Amtool, fake_am: FakeAlertmanager) -> None:
    sid = "6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11"
    code, _, err = await amtool("silence", "expire", sid)
    assert code == 0, err
    assert fake_am.expired == [sid]
    assert fake_am.silences[0].state(time.time()) is SilenceState.EXPIRED
    code, out, err = await amtool("silence", "query", "-q")
    assert out.split() == ["0b1c2d3e-4f50-4612-8a7b-8c9d0e1f2a3b"]  # the pending one
    code, out, err = await amtool("silence", "query", "-q", "--expired")
    assert out.split() == [sid]


async def test_amtool_update_extends_an_active_silence_in_place(
    amtool: Amtool, fake_am: FakeAlertmanager
) -> None:
    # amtool reads the silence (times at millisecond precision) and posts it back with its id.
    sid = "6f4a0b9e-1c8e-4a8e-9a36-0e0f9c0f1a11"
    before = fake_am.silences[0]
    code, out, err = await amtool(
        "silence", "update", "-o", "json", sid, "--duration=3h", "--comment=takes longer"
    )  # -q prints a pointer in 0.25
    assert code == 0, err
    assert [s["id"] for s in json.loads(out)] == [sid]
    after = next(s for s in fake_am.silences if s.id == sid)
    assert (after.starts_at, after.matchers, after.comment) == (
        before.starts_at,
        before.matchers,
        "takes longer",
    )
    assert after.ends_at == pytest.approx(before.starts_at + 3 * HOUR, abs=0.001)
    assert len(fake_am.silences) == 2
