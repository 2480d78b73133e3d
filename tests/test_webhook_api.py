"""The HTTP contract (SPEC section 4), driven over loopback against the real app.

Each test builds the real application (store, pipeline, outbox, channels) on a temporary
database. With `scheduler=False` nothing runs on its own: the tests move a manual clock and call
`tick()` / `drain()` where a notification should be decided or delivered.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from builders import T0, alert_json, make_config, payload, rfc3339
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.clock import ManualClock, system_clock

WEBHOOK = "/webhook/alertmanager"
JSON_TYPE = {"Content-Type": "application/json"}
GROUP_WAIT = 30.0  # the default; the manual clock is moved past it to decide a notification
# Payloads a real Alertmanager 0.25 (Debian) sent to a test receiver.
REAL_PAYLOADS = sorted((Path(__file__).parent / "data" / "payloads").glob("*.json"))
assert REAL_PAYLOADS, "tests/data/payloads is empty"


class Stdout(io.StringIO):
    """The console channel's standard output; `broken` makes writes fail like a full disk."""

    broken = False

    def write(self, s: str) -> int:
        if self.broken:
            raise OSError(28, "No space left on device")
        return super().write(s)


@dataclass
class Service:
    client: TestClient
    stdout: Stdout
    clock: ManualClock

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            WEBHOOK, data=data, headers=JSON_TYPE if headers is None else headers
        )

    async def get(self, path: str, status: int = 200, **headers: str) -> Any:
        response = await self.client.get(path, headers=headers)
        assert response.status == status, await response.text()
        return await response.json()

    async def count(self, table: str) -> int:
        rows = await self.app[keys.STORE].query(f"SELECT COUNT(*) FROM {table}")
        return int(rows[0][0])

    async def assert_nothing_stored(self) -> None:
        assert (await self.get("/api/v1/alerts"))["alerts"] == []
        assert (await self.get("/api/v1/alert-groups"))["alert_groups"] == []
        for table in ("alerts", "alert_groups", "notifications"):
            assert await self.count(table) == 0, table

    async def decide(self) -> None:
        """Move past group_wait and let the timer job decide what is due."""
        self.clock.advance(GROUP_WAIT + 1)
        await self.app[keys.PIPELINE].tick()

    async def metrics(self) -> str:
        response = await self.client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


Start = Callable[..., Awaitable[Service]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Start:
    async def start(
        *, scheduler: bool = False, real_clock: bool = False, **sections: Any
    ) -> Service:
        sections["server"] = {"instance": "mm-test", **sections.get("server", {})}
        config = make_config(tmp_path, **sections)
        clock = ManualClock(T0 + 60)
        stdout = Stdout()
        app = create_app(
            config, clock=system_clock if real_clock else clock, stdout=stdout, scheduler=scheduler
        )
        return Service(await aiohttp_client(app), stdout, clock)

    return start


async def error_body(response: ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body  # type: ignore[no-any-return]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not exposed")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.05)


def four_alerts(index: int = 0, drop: str | None = None, **changes: Any) -> bytes:
    """A payload of four valid alerts, the one at `index` changed: the earlier ones are valid."""
    body = payload(*(alert_json(f"A{i}", instance=f"host{i}") for i in range(4)))
    if drop is not None:
        del body["alerts"][index][drop]
    body["alerts"][index].update(changes)
    return json.dumps(body).encode()


def top(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# -- 200 -------------------------------------------------------------------------------------


async def test_a_stored_payload_is_answered_with_accepted_and_duplicate_counts(
    start: Start,
) -> None:
    svc = await start()
    body = payload(
        alert_json("Disk", instance="a"),
        alert_json("Disk", instance="b"),
        alert_json("Disk", instance="a", replica="1"),
    )  # a replica: the same alert
    response = await svc.post(body)
    assert response.status == 200
    assert await response.json() == {"status": "ok", "accepted": 2, "duplicates": 1}
    assert await svc.count("alerts") == 2
    listed = (await svc.get("/api/v1/alerts"))["alerts"]
    assert sorted(a["labels"]["instance"] for a in listed) == ["a", "b"]


@pytest.mark.parametrize("path", REAL_PAYLOADS, ids=lambda p: p.stem)
async def test_a_real_alertmanager_payload_is_accepted_and_its_repeat_is_all_duplicates(
    start: Start, path: Path
) -> None:
    svc = await start()
    raw = path.read_bytes()
    sent = json.loads(raw)["alerts"]
    first = await svc.post(raw)
    assert first.status == 200
    assert await first.json() == {"status": "ok", "accepted": len(sent), "duplicates": 0}
    again = await svc.post(raw)
    assert await again.json() == {"status": "ok", "accepted": 0, "duplicates": len(sent)}
    listed = (await svc.get("/api/v1/alerts"))["alerts"]
    assert sorted(json.dumps(a["labels"], sort_keys=True) for a in listed) == sorted(
        json.dumps(a["labels"], sort_keys=True) for a in sent
    )
    assert {a["status"] for a in listed} == {a["status"] for a in sent}


async def test_unknown_fields_are_ignored(start: Start) -> None:
    svc = await start()
    alert = alert_json("Disk")
    alert.update(
        {
            "silenceURL": "http://am/#/silences/new",
            "extra": {"nested": [1, None]},
            "fingerprint": "not-ours-to-trust",
        }
    )
    body = payload(
        alert,
        notification_reason="new_alerts",
        routeLabels={"team": "sre"},
        somethingNewer=[{"a": 1}],
        truncatedAlerts=3,
    )
    response = await svc.post(body)
    assert await response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}
    [stored] = (await svc.get("/api/v1/alerts"))["alerts"]
    assert stored["labels"] == {"alertname": "Disk"}
    assert stored["annotations"] == alert["annotations"]
    assert stored["generatorURL"] == alert["generatorURL"]


async def test_json_with_a_charset_parameter_is_accepted(start: Start) -> None:
    svc = await start()
    response = await svc.post(
        payload(alert_json("A")), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert await response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}


async def test_an_empty_alert_list_is_accepted_with_zero_counts(start: Start) -> None:
    svc = await start()
    response = await svc.post({"version": "4", "alerts": []})
    assert await response.json() == {"status": "ok", "accepted": 0, "duplicates": 0}


# -- 400 -------------------------------------------------------------------------------------

BAD_PAYLOADS = [
    ("malformed JSON", b'{"version": "4", "alerts": [', None),
    ("trailing garbage", b'{"version": "4", "alerts": []} x', None),
    ("invalid UTF-8", b'{"version": "4", "alerts": [], "receiver": "\xff\xfe"}', None),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, None),
    ("empty body", b"", None),
    ("top level is an array", b"[]", None),
    ("top level is a string", b'"4"', None),
    ("top level is null", b"null", None),
    ("version missing", top(alerts=[]), "version"),
    ("version 3", top(version="3", alerts=[]), "version"),
    ("version as a number", top(version=4, alerts=[]), "version"),
    ("alerts missing", top(version="4"), "alerts"),
    ("alerts is an object", top(version="4", alerts={}), "alerts"),
    ("alert is a string", top(version="4", alerts=[alert_json("A"), "B"]), "alerts[1]"),
    ("status pending", four_alerts(2, status="pending"), "alerts[2].status"),
    ("status missing", four_alerts(0, drop="status"), "alerts[0].status"),
    ("labels missing", four_alerts(1, drop="labels"), "alerts[1].labels"),
    ("labels empty", four_alerts(1, labels={}), "alerts[1].labels"),
    ("labels a list", four_alerts(1, labels=["alertname"]), "alerts[1].labels"),
    (
        "label value a number",
        four_alerts(3, labels={"alertname": "A", "code": 500}),
        "alerts[3].labels",
    ),
    ("label value null", four_alerts(3, labels={"alertname": None}), "alerts[3].labels"),
    (
        "label name with a dash",
        four_alerts(3, labels={"alertname": "A", "bad-name": "x"}),
        "alerts[3].labels",
    ),
    (
        "label name starting with a digit",
        four_alerts(3, labels={"alertname": "A", "0x": "x"}),
        "alerts[3].labels",
    ),
    ("empty label name", four_alerts(3, labels={"alertname": "A", "": "x"}), "alerts[3].labels"),
    ("startsAt not a time", four_alerts(3, startsAt="yesterday"), "alerts[3].startsAt"),
    (
        "startsAt an impossible date",
        four_alerts(3, startsAt="2026-02-30T00:00:00Z"),
        "alerts[3].startsAt",
    ),
    (
        "startsAt without a zone",
        four_alerts(3, startsAt="2026-11-27T13:23:28"),
        "alerts[3].startsAt",
    ),
    ("startsAt a number", four_alerts(3, startsAt=1_800_000_000), "alerts[3].startsAt"),
    ("startsAt missing", four_alerts(3, drop="startsAt"), "alerts[3].startsAt"),
    (
        "startsAt the zero time",
        four_alerts(3, startsAt="0001-01-01T00:00:00Z"),
        "alerts[3].startsAt",
    ),
    ("endsAt not a time", four_alerts(2, endsAt="soon"), "alerts[2].endsAt"),
    ("annotations a list", four_alerts(0, annotations=["x"]), "alerts[0].annotations"),
    (
        "annotation value an object",
        four_alerts(0, annotations={"summary": {"x": 1}}),
        "alerts[0].annotations",
    ),
    ("generatorURL a number", four_alerts(3, generatorURL=5), "alerts[3].generatorURL"),
    (
        "externalURL a list",
        top(version="4", alerts=[alert_json("A")], externalURL=["x"]),
        "externalURL",
    ),
    # json.dumps writes these as the JSON escape "\ud800": valid JSON, not valid Unicode.
    (
        "lone surrogate in a label value",
        four_alerts(3, labels={"alertname": "A", "x": "\ud800"}),
        "alerts[3].labels.x",
    ),
    (
        "lone surrogate in a label name",
        four_alerts(1, labels={"alertname": "A", "\udfff": "x"}),
        "alerts[1].labels",
    ),
    (
        "lone surrogate in an annotation",
        four_alerts(2, annotations={"summary": "a\ud800b"}),
        "alerts[2].annotations.summary",
    ),
    (
        "lone surrogate in generatorURL",
        four_alerts(3, generatorURL="http://x/\udc00"),
        "alerts[3].generatorURL",
    ),
]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b, f) for _, b, f in BAD_PAYLOADS],
    ids=[name for name, _, _ in BAD_PAYLOADS],
)
async def test_bad_input_is_400_naming_the_field_and_nothing_is_stored(
    start: Start, body: bytes, field: str | None
) -> None:
    svc = await start()
    answer = await error_body(await svc.post(body), 400)
    assert answer.get("field") == field
    await svc.assert_nothing_stored()


async def test_the_raw_utf8_of_a_lone_surrogate_is_400_too(start: Start) -> None:
    svc = await start()
    # Not UTF-8 at all (json.loads would decode these bytes with "surrogatepass" to U+D800).
    body = four_alerts(3, labels={"alertname": "A", "x": "SURROGATE"}).replace(
        b"SURROGATE", b"\xed\xa0\x80"
    )
    answer = await error_body(await svc.post(body), 400)
    assert "not UTF-8" in answer["error"]
    await svc.assert_nothing_stored()


async def test_an_integer_literal_too_long_for_python_is_400_not_500(start: Start) -> None:
    svc = await start()
    body = four_alerts(3).replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": ' + b"9" * 5000)
    await error_body(await svc.post(body), 400)
    await svc.assert_nothing_stored()


async def test_an_invalid_later_alert_leaves_earlier_state_untouched(start: Start) -> None:
    svc = await start()
    assert (await svc.post(payload(alert_json("A0")))).status == 200
    bad = payload(
        alert_json("A0", "resolved", ends=T0 + 10),
        alert_json("B"),
        {**alert_json("C"), "startsAt": "never"},
    )
    answer = await error_body(await svc.post(bad), 400)
    assert answer["field"] == "alerts[2].startsAt"
    listed = (await svc.get("/api/v1/alerts"))["alerts"]
    assert [(a["labels"]["alertname"], a["status"]) for a in listed] == [("A0", "firing")]
    assert await svc.count("alerts") == 1
    # Memory was not touched either: the resolution is news when it comes on its own.
    resolved = await svc.post(payload(alert_json("A0", "resolved", ends=T0 + 10)))
    assert await resolved.json() == {"status": "ok", "accepted": 1, "duplicates": 0}


# -- 401 -------------------------------------------------------------------------------------

WRONG_AUTHORIZATION = [
    None,
    "Bearer wrong",
    "Bearer s3cret2",
    "Bearer s3cre",
    "Bearer",
    "Bearer ",
    "s3cret",
    "Basic " + base64.b64encode(b"alertmanager:s3cret").decode(),
    "Basic s3cret",
    "Token s3cret",
]


@pytest.mark.parametrize("authorization", WRONG_AUTHORIZATION)
async def test_the_webhook_refuses_a_missing_or_wrong_token(
    start: Start, authorization: str | None
) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    headers = dict(JSON_TYPE)
    if authorization is not None:
        headers["Authorization"] = authorization
    await error_body(await svc.post(payload(alert_json("A")), headers=headers), 401)
    await svc.assert_nothing_stored()


@pytest.mark.parametrize("authorization", ["Bearer s3cret", "bearer s3cret"])
async def test_the_webhook_accepts_the_right_bearer_token(start: Start, authorization: str) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    response = await svc.post(
        payload(alert_json("A")), headers={**JSON_TYPE, "Authorization": authorization}
    )
    assert await response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}


async def test_an_authorization_header_that_is_not_utf8_is_401_not_500(start: Start) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    body = json.dumps(payload(alert_json("A"))).encode()
    request = (
        b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer s3cret\xff\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.client.port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    await svc.assert_nothing_stored()


async def test_the_api_token_protects_the_api_but_not_health_or_metrics(start: Start) -> None:
    svc = await start(server={"webhook_token": "hook-t", "api_token": "api-t"})
    for path in (
        "/api/v1/alerts",
        "/api/v1/alert-groups",
        "/api/v1/notifications",
        "/api/v1/alert-groups/0123456789abcdef",
    ):
        for wrong in ({}, {"Authorization": "Bearer hook-t"}, {"Authorization": "Basic api-t"}):
            await error_body(await svc.client.get(path, headers=wrong), 401)
        right = await svc.client.get(path, headers={"Authorization": "Bearer api-t"})
        assert right.status in (200, 404)  # an unknown alert group is a 404 once authorised
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await svc.client.get(path)).status == 200, path
    # The two tokens are not interchangeable.
    hook = {**JSON_TYPE, "Authorization": "Bearer api-t"}
    await error_body(await svc.post(payload(alert_json("A")), headers=hook), 401)
    hook["Authorization"] = "Bearer hook-t"
    assert (await svc.post(payload(alert_json("A")), headers=hook)).status == 200


async def test_without_a_webhook_token_the_webhook_is_open_even_with_an_api_token(
    start: Start,
) -> None:
    svc = await start(server={"api_token": "api-t"})
    assert (await svc.post(payload(alert_json("A")))).status == 200


# -- 413 -------------------------------------------------------------------------------------

LIMIT = 2000


def padded(size: int) -> bytes:
    """A valid one-alert payload padded with trailing whitespace to exactly `size` bytes."""
    body = json.dumps(payload(alert_json("A"))).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def test_a_body_over_max_body_bytes_is_413_and_one_at_the_limit_is_accepted(
    start: Start,
) -> None:
    svc = await start(server={"max_body_bytes": LIMIT})
    await error_body(await svc.post(padded(LIMIT + 1)), 413)
    await svc.assert_nothing_stored()
    response = await svc.post(padded(LIMIT))
    assert await response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}


async def pieces(body: bytes, size: int = 500) -> Any:
    """A body sent with chunked transfer encoding (no Content-Length), arriving piece by piece."""
    for i in range(0, len(body), size):
        yield body[i : i + size]
        await asyncio.sleep(0.005)


async def test_a_chunked_body_over_max_body_bytes_is_413(start: Start) -> None:
    svc = await start(server={"max_body_bytes": LIMIT})
    response = await svc.client.post(WEBHOOK, data=pieces(padded(3 * LIMIT)), headers=JSON_TYPE)
    assert "Content-Length" not in response.request_info.headers
    await error_body(response, 413)
    await svc.assert_nothing_stored()


async def test_a_large_valid_payload_under_the_limit_is_read_whole(start: Start) -> None:
    svc = await start()  # the default limit, 4 MiB
    alerts = [alert_json(f"A{i}", description="d" * 3000) for i in range(300)]
    body = json.dumps(payload(*alerts)).encode()
    assert 500_000 < len(body) < svc.app[keys.CONFIG].server.max_body_bytes
    response = await svc.client.post(WEBHOOK, data=io.BytesIO(body), headers=JSON_TYPE)
    assert response.status == 200, await response.text()
    assert await response.json() == {"status": "ok", "accepted": 300, "duplicates": 0}


async def test_a_compressed_body_that_inflates_past_the_limit_is_413(start: Start) -> None:
    import gzip

    svc = await start(server={"max_body_bytes": 100_000})
    bomb = gzip.compress(padded(50_000_000))
    assert len(bomb) < 100_000
    response = await svc.client.post(
        WEBHOOK, data=bomb, headers={**JSON_TYPE, "Content-Encoding": "gzip"}
    )
    await error_body(response, 413)
    await svc.assert_nothing_stored()


# -- 415 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
async def test_a_body_that_is_not_declared_json_is_415(
    start: Start, content_type: str | None
) -> None:
    svc = await start()
    body = json.dumps(payload(alert_json("A"))).encode()
    if content_type is None:
        response = await svc.client.post(WEBHOOK, data=body, skip_auto_headers=["Content-Type"])
        assert "Content-Type" not in response.request_info.headers
    else:
        response = await svc.post(body, headers={"Content-Type": content_type})
    await error_body(response, 415)
    await svc.assert_nothing_stored()


# -- 503 -------------------------------------------------------------------------------------


async def fill_the_disk(svc: Service) -> None:
    """Let SQLite grow no further: any write that needs a new page fails with SQLITE_FULL."""
    store = svc.app[keys.STORE]
    pages = (await store.query("PRAGMA page_count"))[0][0]
    await store.run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))


async def free_the_disk(svc: Service) -> None:
    await svc.app[keys.STORE].run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))


def bulky_payload(n: int = 20) -> dict[str, Any]:
    return payload(*(alert_json(f"Bulky{i}", description="d" * 1500) for i in range(n)))


async def test_a_store_that_cannot_commit_answers_503_and_the_retry_is_accepted_in_full(
    start: Start,
) -> None:
    svc = await start()
    await fill_the_disk(svc)
    await error_body(await svc.post(bulky_payload()), 503)
    for table in ("alerts", "alert_groups"):
        assert await svc.count(table) == 0, table
    text = await svc.metrics()
    assert metric(text, "monitor_manager_webhook_requests_total", code="503") == 1
    assert metric(text, "monitor_manager_store_commit_failures_total") >= 1

    await free_the_disk(svc)
    # Alertmanager retries the same payload: every alert is news, not a duplicate.
    retry = await svc.post(bulky_payload())
    assert await retry.json() == {"status": "ok", "accepted": 20, "duplicates": 0}
    assert await svc.count("alerts") == 20
    await svc.decide()
    notifications = (await svc.get("/api/v1/notifications"))["notifications"]
    assert sum(n["alerts"] for n in notifications) == 20
    await svc.app[keys.OUTBOX].drain()
    assert svc.stdout.getvalue().count("[FIRING:1]") == 20


async def test_after_a_503_the_alerts_view_shows_nothing_that_was_not_stored(start: Start) -> None:
    svc = await start()
    await fill_the_disk(svc)
    await error_body(await svc.post(bulky_payload()), 503)
    assert (await svc.get("/api/v1/alerts"))["alerts"] == []


async def test_readyz_is_503_while_the_store_cannot_write(start: Start) -> None:
    svc = await start()
    await fill_the_disk(svc)
    await error_body(await svc.post(bulky_payload()), 503)
    body = await svc.get("/readyz", status=503)
    assert "store" in body["error"] or "commit" in body["error"]  # the reason
    await free_the_disk(svc)
    assert (await svc.post(bulky_payload())).status == 200
    assert await svc.get("/readyz") == {"status": "ready"}


# -- health, readiness, metrics --------------------------------------------------------------


async def test_healthz_names_the_instance(start: Start) -> None:
    svc = await start()
    body = await svc.get("/healthz")
    # The time is the service's clock (peers compare theirs with it: ClockSkew).
    assert body == {
        "status": "ok",
        "instance": "mm-test",
        "peer_protocol": 2,
        "time": svc.clock.now,
        "commits": True,
    }


async def test_readyz_is_200_when_healthy_and_503_with_the_reason_without_scheduler(
    start: Start,
) -> None:
    svc = await start(scheduler=True, real_clock=True)
    assert await svc.get("/readyz") == {"status": "ready"}
    scheduler = svc.app[keys.SCHEDULER]
    scheduler.shutdown(wait=False)
    try:
        body = await svc.get("/readyz", status=503)
        assert "scheduler" in body["error"]
    finally:
        scheduler.start()  # the app's own shutdown stops it again


async def test_metrics_move_with_a_webhook_and_a_delivery(start: Start) -> None:
    svc = await start()
    text = await svc.metrics()
    for name in ("process_cpu_seconds_total", "python_info", "python_gc_objects_collected_total"):
        assert name in text
    assert metric(text, "monitor_manager_alerts_received_total", status="firing") == 0
    assert (
        metric(text, "monitor_manager_notifications_total", channel="console", result="delivered")
        == 0
    )
    assert metric(text, "monitor_manager_outbox_pending") == 0
    assert metric(text, "monitor_manager_delivery_latency_seconds_count", channel="console") == 0

    await svc.post(
        payload(
            alert_json("A", instance="a"),
            alert_json("A", instance="b"),
            alert_json("B", "resolved", ends=T0 + 5),
        )
    )
    await svc.post(b"{")
    text = await svc.metrics()
    assert metric(text, "monitor_manager_alerts_received_total", status="firing") == 2
    assert metric(text, "monitor_manager_alerts_received_total", status="resolved") == 1
    assert metric(text, "monitor_manager_webhook_requests_total", code="200") == 1
    assert metric(text, "monitor_manager_webhook_requests_total", code="400") == 1

    await svc.decide()  # group A fires; B resolved before anyone heard of it
    svc.clock.advance(7)
    text = await svc.metrics()
    assert metric(text, "monitor_manager_outbox_pending") == 1
    assert metric(text, "monitor_manager_outbox_oldest_pending_seconds") == pytest.approx(7)

    await svc.app[keys.OUTBOX].drain()
    text = await svc.metrics()
    assert (
        metric(text, "monitor_manager_notifications_total", channel="console", result="delivered")
        == 1
    )
    assert metric(text, "monitor_manager_outbox_pending") == 0
    assert metric(text, "monitor_manager_outbox_oldest_pending_seconds") == 0
    assert metric(text, "monitor_manager_delivery_latency_seconds_count", channel="console") == 1
    assert metric(
        text, "monitor_manager_delivery_latency_seconds_sum", channel="console"
    ) == pytest.approx(7)


# -- the JSON API ------------------------------------------------------------------------------


async def test_the_alerts_view_filters_by_status(start: Start) -> None:
    svc = await start()
    await svc.post(
        payload(alert_json("A", instance="a", starts=T0), alert_json("A", instance="b", starts=T0))
    )
    await svc.post(payload(alert_json("A", "resolved", starts=T0, ends=T0 + 30, instance="b")))
    everything = (await svc.get("/api/v1/alerts"))["alerts"]
    assert len(everything) == 2
    [firing] = (await svc.get("/api/v1/alerts?status=firing"))["alerts"]
    [resolved] = (await svc.get("/api/v1/alerts?status=resolved"))["alerts"]
    assert firing["labels"] == {"alertname": "A", "instance": "a"}
    assert firing["annotations"] == {"summary": "A summary", "description": "details"}
    assert firing["startsAt"] == rfc3339(T0) and firing["endsAt"] is None
    assert firing["status"] == "firing"
    assert len(firing["fingerprint"]) >= 8
    assert resolved["labels"]["instance"] == "b" and resolved["endsAt"] == rfc3339(T0 + 30)
    groups = (await svc.get("/api/v1/alert-groups"))["alert_groups"]
    assert firing["alert_groups"] == [groups[0]["key"]]


@pytest.mark.parametrize(
    "query", ["status=pending", "status=", "status=FIRING", "limit=0", "limit=abc", "limit=-1"]
)
async def test_a_bad_query_parameter_is_400(start: Start, query: str) -> None:
    svc = await start()
    await error_body(await svc.client.get(f"/api/v1/alerts?{query}"), 400)


@pytest.mark.parametrize(
    "query", ["limit=%C2%B2", "limit=" + "9" * 5000], ids=["superscript two", "5000 digits"]
)
async def test_a_limit_that_isdigit_but_not_an_int_is_400_not_500(start: Start, query: str) -> None:
    svc = await start()
    await error_body(await svc.client.get(f"/api/v1/alerts?{query}"), 400)


async def test_a_timestamp_past_year_9999_in_utc_never_breaks_the_views(start: Start) -> None:
    svc = await start()
    far = {**alert_json("Far"), "startsAt": "9999-12-31T23:59:59-23:59"}
    response = await svc.post(payload(far))  # year 10000 in UTC: no time can hold it
    assert response.status == 400
    assert (await response.json())["field"] == "alerts[0].startsAt"
    assert (await svc.client.get("/api/v1/alerts")).status == 200
    assert (await svc.client.get("/api/v1/alert-groups")).status == 200


async def test_the_alert_group_views_show_key_labels_state_counts_and_last_notified(
    start: Start,
) -> None:
    svc = await start(convergence={"group_by": ("alertname",)})
    await svc.post(
        payload(alert_json("A", instance="a"), alert_json("A", instance="b"), alert_json("B"))
    )
    groups = (await svc.get("/api/v1/alert-groups"))["alert_groups"]
    by_name = {g["group_labels"]["alertname"]: g for g in groups}
    assert set(by_name) == {"A", "B"}
    a = by_name["A"]
    assert a["contact_group"] == "default"
    assert a["state"] == "firing"
    assert a["alerts"] == {"firing": 2, "resolved": 0, "total": 2}
    assert a["last_notified_at"] is None

    await svc.decide()
    one = await svc.get(f"/api/v1/alert-groups/{a['key']}")
    assert one["key"] == a["key"] and one["last_notified_at"] is not None
    assert sorted(m["labels"]["instance"] for m in one["members"]) == ["a", "b"]
    assert [n["alerts"] for n in one["notifications"]] == [2]
    missing = await svc.client.get("/api/v1/alert-groups/ffffffffffffffff")
    assert "ffffffffffffffff" in (await error_body(missing, 404))["error"]


async def test_the_notifications_view_follows_each_delivery_through_retry_to_delivered(
    start: Start,
) -> None:
    svc = await start()
    outbox = svc.app[keys.OUTBOX]
    await svc.post(payload(alert_json("A")))
    await svc.decide()

    async def delivery() -> dict[str, Any]:
        [notification] = (await svc.get("/api/v1/notifications"))["notifications"]
        assert notification["alerts"] == 1 and notification["status"] == "firing"
        [only] = notification["deliveries"]
        assert only["channel"] == "console"
        return only  # type: ignore[no-any-return]

    assert (await delivery())["state"] == "pending" and (await delivery())["attempts"] == 0
    svc.stdout.broken = True
    await outbox.drain()
    d = await delivery()
    assert (d["state"], d["attempts"]) == ("retrying", 1)
    assert "No space left on device" in d["last_error"]
    svc.stdout.broken = False
    svc.clock.advance(10)  # past the first backoff (retry_initial 5 s, jittered down)
    await outbox.drain()
    d = await delivery()
    assert (d["state"], d["attempts"], d["last_error"]) == ("delivered", 2, "")
    assert d["delivered_at"] is not None
    assert len((await svc.get("/api/v1/notifications?state=delivered"))["notifications"]) == 1
    assert (await svc.get("/api/v1/notifications?state=failed"))["notifications"] == []
    await error_body(await svc.client.get("/api/v1/notifications?state=lost"), 400)


async def test_the_notifications_view_shows_a_delivery_that_failed_for_good(start: Start) -> None:
    svc = await start(delivery={"give_up_after": 1.0})
    await svc.post(payload(alert_json("A")))
    await svc.decide()
    svc.stdout.broken = True
    await svc.app[keys.OUTBOX].drain()
    [notification] = (await svc.get("/api/v1/notifications?state=failed"))["notifications"]
    [d] = notification["deliveries"]
    assert (d["state"], d["attempts"]) == ("failed", 1)
    assert "No space left on device" in d["last_error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing-here", 404),
        ("GET", "/api/v1/nothing-here", 404),
        ("POST", "/api/v1/alerts", 405),
        ("GET", WEBHOOK, 405),
    ],
)
async def test_an_unknown_endpoint_is_a_json_error(
    start: Start, method: str, path: str, status: int
) -> None:
    svc = await start()
    await error_body(await svc.client.request(method, path), status)


# -- concurrency and the whole road ------------------------------------------------------------


async def test_concurrent_webhooks_are_all_stored_with_fewer_commits_than_requests(
    start: Start,
) -> None:
    svc = await start()
    store = svc.app[keys.STORE]
    before = store.commits
    responses = await asyncio.gather(
        *(svc.post(payload(alert_json("Concurrent", instance=f"host{i}"))) for i in range(50))
    )
    assert [r.status for r in responses] == [200] * 50
    for r in responses:
        assert await r.json() == {"status": "ok", "accepted": 1, "duplicates": 0}
    assert await svc.count("alerts") == 50
    assert len((await svc.get("/api/v1/alerts"))["alerts"]) == 50
    assert store.commits - before < 50  # group commit shared transactions


async def test_a_posted_payload_reaches_the_console_and_is_recorded_delivered(start: Start) -> None:
    svc = await start(scheduler=True, real_clock=True, convergence={"group_wait": 0.2})
    raw = next(p for p in REAL_PAYLOADS if p.stem == "real_alertmanager_payload").read_bytes()
    response = await svc.post(raw)
    assert await response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}

    async def printed() -> bool:
        return "[FIRING:1] E2EAlwaysFiring" in svc.stdout.getvalue()

    async def delivered() -> bool:
        notifications = (await svc.get("/api/v1/notifications"))["notifications"]
        return [d["state"] for n in notifications for d in n["deliveries"]] == ["delivered"]

    await eventually(printed)
    await eventually(delivered)
    assert "E2EAlwaysFiring summary: an ordinary rule that fires" in svc.stdout.getvalue()
