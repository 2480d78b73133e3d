"""Property tests for the webhooks: whatever arrives, the answer is never a 500; a 4xx leaves
the store exactly as it was; a 200 accounts for every alert in the payload. Grafana's webhook
(`/webhook/grafana`) shares the ingest path: it gets the random JSON and the mutations too.

One real app per test function; the examples share it and its store (nothing is reset), and each
example compares a snapshot of the store taken just before its request with one taken after.
Inputs that need a specific shape to matter (integer literals over 4300 digits, non-UTF-8
headers, bodies that arrive in pieces) have deterministic tests in test_webhook_api.py.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from builders import alert_json, make_config, payload, rfc3339
from monitor_manager import keys
from monitor_manager.app import create_app

WEBHOOK = "/webhook/alertmanager"
GRAFANA = "/webhook/grafana"
JSON_TYPE = {"Content-Type": "application/json"}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# -- strategies ------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
times = st.floats(min_value=1.0, max_value=4e9).map(rfc3339)
alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": st.dictionaries(label_names, st.text(max_size=20), min_size=1, max_size=4),
        "annotations": st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=3),
        "startsAt": times,
        "endsAt": st.just("0001-01-01T00:00:00Z") | times,
        "generatorURL": st.text(max_size=30),
    },
    optional={"fingerprint": st.text(max_size=16)},
)
valid_payloads = st.builds(
    lambda items, url: {**payload(alert_json("Seed")), "alerts": items, "externalURL": url},
    st.lists(alerts, max_size=5),
    st.sampled_from(["http://am-az1:9093", "", "http://am-az2"]),
)
# Grafana's payload: Alertmanager's with version "1" and more fields, its URLs hostile or not.
urls = st.sampled_from(
    [
        "",
        "https://grafana.example.com/d/abc?from=1&to=2&viewPanel=4",
        "http://grafana:3000/alerting/silence/new?matcher=a%3Db",
        "javascript:alert(1)",
        "//evil.example.com/",
        "https://grafana.example.com/d/x\nBcc: x",
        "data:text/html,<b>",
    ]
) | st.text(max_size=30)
grafana_alerts = st.builds(
    lambda alert, extra: {**alert, **extra},
    alerts,
    st.fixed_dictionaries(
        {},
        optional={
            "dashboardURL": urls,
            "panelURL": urls,
            "silenceURL": urls,
            "imageURL": urls,
            "valueString": st.text(max_size=60),
            "values": st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False)),
            "orgId": st.integers(0, 3),
        },
    ),
)
valid_grafana_payloads = st.builds(
    lambda items, url, truncated: {
        **payload(alert_json("Seed")),
        "version": "1",
        "alerts": items,
        "externalURL": url,
        "orgId": 1,
        "title": "[FIRING] x",
        "state": "alerting",
        "message": "**Firing**",
        "truncatedAlerts": truncated,
    },
    st.lists(grafana_alerts, max_size=5),
    st.sampled_from(["https://grafana.example.com/", "", "http://grafana-az2:3000/"]),
    st.integers(0, 3),
)
# Close enough to a payload that validation goes past the top level.
payload_like = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["4", 4, "3", None]),
        "alerts": st.lists(alerts | json_values, max_size=4) | json_values,
    },
    optional={"externalURL": json_values, "receiver": json_values, "groupKey": json_values},
)


@st.composite
def rfc3339_shaped(draw: st.DrawFn) -> str:
    """Strings in the shape of RFC 3339, each field ranging a little past its valid values."""
    year = draw(st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = (
        draw(st.integers(0, 25)),
        draw(st.integers(0, 60)),
        draw(st.integers(0, 61)),
    )
    fraction = draw(st.sampled_from(["", ".5", ".123456789", ".000000000000000000001"]))
    zone = draw(
        st.sampled_from(["Z", "z"])
        | st.builds(
            "{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 59)
        )
    )
    sep = draw(st.sampled_from("Tt "))
    return (
        f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    )


def deep(depth: int, container: type) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if container is list else {"k": value}
    return value


WEIRD = [
    "",
    " ",
    "\x00",
    "\n",
    "\\",
    '"',
    "\u202e",
    "\ufeff",
    "\ud800",
    "\udfff",
    "🔥" * 50,
    "a" * 20_000,
    "NaN",
    "null",
    "4",
    "firing",
    "resolved",
    "__name__",
    "bad-name",
    "{{ 7 * 7 }}",
    "0001-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-27T13:23:60Z",
    "2026-11-27T25:00:00Z",
    "2026-11-27T13:23:28.123456789012345678Z",
    "9999-12-31T23:59:59Z",
    "2026-11-27T13:23:28+23:59",
    "2026-11-27T13:23:28+24:00",
    "0000-01-01T00:00:00Z",
    0,
    -1,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**300,
    -(10**300),
    1e308,
    -1e308,
    5e-324,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    True,
    False,
    None,
    [],
    {},
    deep(60, list),
    deep(60, dict),
    [[[]]] * 10,
    {"labels": {"alertname": "x"}},
]
# Copied: a mutation may later insert into a drawn value, and WEIRD must stay as written.
weird_values = st.sampled_from(WEIRD).map(copy.deepcopy) | json_values


def node_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below `value` (dict keys and list indexes), parents before children."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    out: list[tuple[Any, ...]] = []
    for key, child in items:
        out.append((*prefix, key))
        out += node_paths(child, (*prefix, key))
    return out


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(data: st.DataObject, doc: dict[str, Any]) -> None:
    """Drop a key, replace a value (often by one of another type), or insert one: anywhere."""
    paths = node_paths(doc)
    how = data.draw(st.sampled_from(["drop", "replace", "insert"]) if paths else st.just("insert"))
    if how == "insert":
        containers = [()] + [p for p in paths if isinstance(at(doc, p), (dict, list))]
        target = at(doc, data.draw(st.sampled_from(containers)))
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=12) | st.sampled_from(list(doc)))] = data.draw(
                weird_values
            )
        else:
            target.insert(data.draw(st.integers(0, len(target))), data.draw(weird_values))
        return
    path = data.draw(st.sampled_from(paths))
    parent = at(doc, path[:-1])
    if how == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(weird_values)


def splice(doc: dict[str, Any], where: int, junk: bytes) -> bytes:
    """A valid payload's bytes with random bytes inserted somewhere."""
    raw = json.dumps(doc).encode()
    where %= len(raw) + 1
    return raw[:where] + junk + raw[where:]


# -- the properties ----------------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    app = create_app(make_config(tmp_path), scheduler=False, stdout=io.StringIO())
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def snapshot(client: TestClient) -> list[list[tuple[Any, ...]]]:
    store = client.app[keys.STORE]
    return [
        [tuple(row) for row in await store.query(sql)]
        for sql in (
            "SELECT * FROM alerts ORDER BY fingerprint",
            "SELECT * FROM alert_groups ORDER BY key",
        )
    ]


async def post_and_check(
    client: TestClient, body: bytes, path: str = WEBHOOK
) -> tuple[int, dict[str, Any]]:
    """POST body; check the properties; return the status and the answer."""
    before = await snapshot(client)
    response = await client.post(path, data=body, headers=JSON_TYPE)
    event(f"status {response.status}")
    assert response.status < 500, await response.text()
    assert response.content_type == "application/json"
    answer = await response.json()
    if response.status >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"]
        assert await snapshot(client) == before, "a rejected request changed the store"
    else:
        assert response.status == 200
        sent = json.loads(body)["alerts"]  # the same decoding the server did
        assert answer["status"] == "ok"
        assert answer["accepted"] + answer["duplicates"] + answer.get("rejected", 0) == len(sent)
        await assert_stored(client, sent)
    for view in ("/api/v1/alerts", "/api/v1/alert-groups", "/api/v1/notifications"):
        seen = await client.get(view)
        assert seen.status == 200, (view, await seen.text())
    return response.status, answer


async def assert_stored(client: TestClient, sent: list[dict[str, Any]]) -> None:
    """Every alert of an accepted payload is in the store, by its identity (internal-looking
    ones are rejected by design)."""
    rows = await client.app[keys.STORE].query("SELECT labels FROM alerts")
    stored = {json.dumps(json.loads(r[0]), sort_keys=True) for r in rows}
    for alert in sent:
        labels = {
            k: v for k, v in alert["labels"].items() if k not in ("replica", "prometheus_replica")
        }
        if alert["labels"].get("source") != "monitor-manager":
            assert json.dumps(labels, sort_keys=True) in stored, labels


@FUZZ
@given(value=json_values | payload_like)
@example(value={"version": "4", "alerts": []})
@example(value={"version": "4", "alerts": [{"status": "firing", "labels": {"a": "\ud800"}}]})
async def test_random_json_never_gets_a_500(client: TestClient, value: Any) -> None:
    await post_and_check(client, json.dumps(value).encode())


@FUZZ
@given(
    body=st.binary(max_size=400)
    | st.builds(splice, valid_payloads, st.integers(min_value=0), st.binary(min_size=1, max_size=8))
)
@example(body=b"\xff\xfe{\x00}")
@example(body=b"\xed\xa0\x80")
@example(body=b"[" * 50_000)
async def test_random_bytes_never_get_a_500(client: TestClient, body: bytes) -> None:
    await post_and_check(client, body)


@settings(FUZZ, max_examples=250)
@given(doc=valid_payloads, data=st.data())
async def test_mutated_payloads_never_get_a_500_and_a_4xx_changes_nothing(
    client: TestClient, doc: dict[str, Any], data: st.DataObject
) -> None:
    status, _ = await post_and_check(client, json.dumps(doc).encode())
    assert status == 200  # the seed is valid
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data, doc)
    await post_and_check(client, json.dumps(doc).encode())


@FUZZ
@given(value=json_values | payload_like.map(lambda p: {**p, "version": "1"}))
@example(value={"version": "1", "alerts": [{"status": "firing", "labels": {"a": "b"}}]})
async def test_random_json_to_the_grafana_webhook_never_gets_a_500(
    client: TestClient, value: Any
) -> None:
    await post_and_check(client, json.dumps(value).encode(), GRAFANA)


@settings(FUZZ, max_examples=150)
@given(doc=valid_grafana_payloads, data=st.data())
async def test_mutated_grafana_payloads_never_get_a_500_and_a_4xx_changes_nothing(
    client: TestClient, doc: dict[str, Any], data: st.DataObject
) -> None:
    status, _ = await post_and_check(client, json.dumps(doc).encode(), GRAFANA)
    assert status == 200  # the seed is valid, whatever its links say
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data, doc)
    await post_and_check(client, json.dumps(doc).encode(), GRAFANA)


@FUZZ
@given(
    starts=rfc3339_shaped(), ends=rfc3339_shaped(), status=st.sampled_from(["firing", "resolved"])
)
@example(starts="9999-12-31T23:59:59-23:59", ends="0001-01-01T00:00:00Z", status="firing")
@example(starts="2026-11-27T13:23:28Z", ends="9999-12-31T23:59:59-23:59", status="resolved")
async def test_any_rfc3339_shaped_time_is_accepted_or_a_400_naming_it(
    client: TestClient, starts: str, ends: str, status: str
) -> None:
    alert = {**alert_json("Timed", status), "startsAt": starts, "endsAt": ends}
    code, answer = await post_and_check(client, json.dumps(payload(alert)).encode())
    if code != 200:
        assert (code, answer["field"]) in ((400, "alerts[0].startsAt"), (400, "alerts[0].endsAt"))


# -- hostile bodies among good ones ------------------------------------------------------------


def _strings(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every string value and (as (path, key)) every object key in `doc`."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*path, ("key", key)))
            out += _strings(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _strings(value, (*path, i))
    elif isinstance(doc, str):
        out.append(path)
    return out


@st.composite
def hostile(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A valid payload made hostile: another encoding, a lone surrogate in any string or key,
    broken gzip, or deep nesting."""
    how = draw(
        st.sampled_from(["utf-16", "utf-16-be", "utf-32", "surrogate", "bad-gzip", "nested"])
    )
    headers = dict(JSON_TYPE)
    if how.startswith("utf"):
        return json.dumps(doc).encode(how), headers
    if how == "bad-gzip":
        raw = gzip.compress(json.dumps(doc).encode())
        cut = draw(st.integers(1, len(raw) - 1))
        return raw[:cut] + b"\x00garbage", {**headers, "Content-Encoding": "gzip"}
    if how == "nested":
        depth = draw(st.integers(1_000, 20_000))
        return b'{"version": "4", "alerts": ' + b"[" * depth + b"]" * depth + b"}", headers
    doc = copy.deepcopy(doc)
    path = draw(st.sampled_from(_strings(doc)))
    surrogate = draw(st.sampled_from(["\ud800", "\udfff", "\udbff"]))
    if isinstance(path[-1], tuple):
        parent = at(doc, path[:-1])
        key = path[-1][1]
        parent[key + surrogate] = parent.pop(key)
    else:
        at(doc, path[:-1])[path[-1]] = at(doc, path) + surrogate
    return json.dumps(doc).encode(), headers


@settings(FUZZ, max_examples=40)
@given(docs=st.lists(valid_payloads, min_size=2, max_size=6), data=st.data())
async def test_hostile_bodies_among_good_ones_cost_the_good_ones_nothing(
    client: TestClient, docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    requests: list[tuple[bytes, dict[str, str], dict[str, Any] | None]] = []
    for doc in docs:
        requests.append((json.dumps(doc).encode(), dict(JSON_TYPE), doc))
        body, headers = data.draw(hostile(doc))
        requests.append((body, headers, None))
    if data.draw(st.booleans()):  # a good body may come gzipped too
        doc = docs[0]
        requests.append(
            (
                gzip.compress(json.dumps(doc).encode()),
                {**JSON_TYPE, "Content-Encoding": "gzip"},
                doc,
            )
        )

    async def post(body: bytes, headers: dict[str, str]) -> Any:
        try:
            return await asyncio.wait_for(client.post(WEBHOOK, data=body, headers=headers), 10)
        except TimeoutError:
            raise AssertionError(f"no answer: {headers} {body[:300]!r}") from None

    responses = await asyncio.gather(*(post(body, headers) for body, headers, _ in requests))
    for (_, _, good), response in zip(requests, responses, strict=True):
        assert response.status < 500, await response.text()
        if good is not None:
            assert response.status == 200, await response.text()
            await assert_stored(client, good["alerts"])
        else:
            assert response.status == 400, await response.text()
