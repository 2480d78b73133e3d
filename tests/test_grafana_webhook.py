"""Grafana Alerting's webhook contact point (SPEC section 13): `POST /webhook/grafana`.

Grafana cannot be installed here, so the payloads are built to Grafana's documented schema
(tests/data/grafana/README.md says which documentation and which version): the captured
example `firing.json`, and every other case derived from it. The tests drive the real app
(store, pipeline, outbox, console channel) on a temporary database with a manual clock, as
tests/test_webhook_api.py does for Alertmanager's webhook.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import io
import json
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from builders import T0, alert_json, make_config, payload
from console_app import start_console
from fake_wecom import alert as alert_view
from fake_wecom import group, message
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.channels.chat_text import neutralise, neutralise_markup, render_chat
from monitor_manager.channels.webhook import build_payload
from monitor_manager.clock import ManualClock
from monitor_manager.config import HeartbeatConfig, WatchdogConfig, parse_config
from monitor_manager.deliver.render import Renderer
from monitor_manager.ingest.grafana import MAX_LINK_CHARS, parse_grafana
from monitor_manager.ingest.payload import MAX_EXTRA_VALUE_CHARS, PayloadError, parse_payload
from monitor_manager.web.console import group_path

GRAFANA = "/webhook/grafana"
ALERTMANAGER = "/webhook/alertmanager"
JSON_TYPE = {"Content-Type": "application/json"}
FIRING = Path(__file__).parent / "data" / "grafana" / "firing.json"
README = Path(__file__).parent.parent / "README.md"
DASHBOARD = (
    "https://grafana.example.com/d/be2nq4g9ks0lcd?from=1799997063157&orgId=1&to=1800000660000"
)
PANEL = DASHBOARD + "&viewPanel=4"
VALUE = (
    "[ var='B' labels={zone=us-1} value=91.83943737541908 ], [ var='C' labels={zone=us-1} value=1 ]"
)


def firing() -> dict[str, Any]:
    """The captured example: two firing alerts of folder Infrastructure, the first with its
    dashboard, panel, silence and image links, the second with empty dashboard and panel."""
    return json.loads(FIRING.read_text())  # type: ignore[no-any-return]


def resolved(doc: dict[str, Any], at: str = "2027-01-15T16:00:30+08:00") -> dict[str, Any]:
    """`doc` as Grafana sends it when its alerts resolved."""
    doc = copy.deepcopy(doc)
    doc["status"], doc["state"] = "resolved", "ok"
    for alert in doc["alerts"]:
        alert["status"], alert["endsAt"] = "resolved", at
    return doc


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- the parser, as a value ---------------------------------------------------------------------


def test_the_captured_example_parses_to_alerts_with_their_links_and_values() -> None:
    payload = parse_grafana(firing())
    assert payload.external_url == "https://grafana.example.com/"
    assert payload.receiver == "monitor-manager" and payload.truncated_alerts == 0
    memory, cpu = payload.alerts
    assert memory.labels == {
        "alertname": "High memory usage",
        "grafana_folder": "Infrastructure",
        "team": "blue",
        "zone": "us-1",
    }
    assert memory.status == "firing" and memory.ends_at is None
    assert memory.starts_at == pytest.approx(T0 - 536.842924)  # 15:51:03.157076+08:00
    assert memory.extras == {
        "links": {
            "dashboard": DASHBOARD,
            "panel": PANEL,
            "silence": firing()["alerts"][0]["silenceURL"],
            "image": "https://grafana.example.com/public/img/attachments/OhXMNzaxjvAbm8CrjWKV.png",
        },
        "value": VALUE,
    }
    # An empty dashboardURL and panelURL (no dashboard) are no links; the silence link stays.
    assert set(cpu.extras["links"]) == {"silence"}
    assert cpu.extras["value"].startswith("[ var='B' labels={zone=eu-1}")


def test_optional_fields_may_be_missing_or_null() -> None:
    minimal = {
        "version": "1",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2027-01-15T07:00:00Z"},
            {
                **alert_json("B"),
                "dashboardURL": None,
                "panelURL": None,
                "silenceURL": None,
                "imageURL": None,
                "valueString": None,
                "values": None,
            },
        ],
        "truncatedAlerts": None,
    }
    payload = parse_grafana(minimal)
    assert [a.extras for a in payload.alerts] == [{}, {}]
    assert payload.external_url == "" and payload.truncated_alerts == 0


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "//evil.example.com/d/x",
        "/d/be2nq4g9ks0lcd",
        "grafana.example.com/d/x",
        "http://",
        "https:///d/x",
        "https://grafana.example.com/d/x\nInjected: line",
        "https://grafana.example.com/d/x y",
        "https://grafana.example.com/d/\u202ex",
        "https://grafana.example.com/d/x\x00",
        "http://[::1/d/x",
        "https://grafana.example.com/d/" + "x" * MAX_LINK_CHARS,
    ],
)
def test_a_link_that_is_not_a_plain_http_url_is_dropped_and_the_alert_kept(url: str) -> None:
    doc = firing()
    for key in ("dashboardURL", "panelURL", "silenceURL", "imageURL"):
        doc["alerts"][0][key] = url
    memory, _ = parse_grafana(doc).alerts
    assert "links" not in memory.extras
    assert memory.extras["value"] == VALUE


def test_links_keep_any_http_or_https_spelling() -> None:
    doc = firing()
    doc["alerts"][0]["dashboardURL"] = "HTTP://grafana.example.com:3000/d/x?a=1&b=%20"
    assert (
        parse_grafana(doc).alerts[0].extras["links"]["dashboard"]
        == doc["alerts"][0]["dashboardURL"]
    )


def test_a_long_value_string_is_cut_not_refused() -> None:
    doc = firing()
    doc["alerts"][0]["valueString"] = "v" * (MAX_EXTRA_VALUE_CHARS + 100)
    value = parse_grafana(doc).alerts[0].extras["value"]
    assert len(value) == MAX_EXTRA_VALUE_CHARS and value.endswith("…")


def _changed(index: int, **fields: Any) -> dict[str, Any]:
    doc = firing()
    doc["alerts"][index].update(fields)
    return doc


def _top(**fields: Any) -> dict[str, Any]:
    return {**firing(), **fields}


WRONG_TYPES = [
    ("dashboardURL a number", _changed(1, dashboardURL=5), "alerts[1].dashboardURL"),
    ("panelURL an object", _changed(0, panelURL={"url": "https://x"}), "alerts[0].panelURL"),
    ("silenceURL a list", _changed(1, silenceURL=["https://x"]), "alerts[1].silenceURL"),
    ("imageURL a boolean", _changed(0, imageURL=True), "alerts[0].imageURL"),
    ("valueString a number", _changed(0, valueString=91.8), "alerts[0].valueString"),
    ("valueString an object", _changed(1, valueString={"B": 1}), "alerts[1].valueString"),
    # What Grafana shares with Alertmanager is checked by the same code, with the same paths.
    ("status pending", _changed(1, status="pending"), "alerts[1].status"),
    ("labels a list", _changed(0, labels=["alertname"]), "alerts[0].labels"),
    ("label value a number", _changed(1, labels={"alertname": 5}), "alerts[1].labels"),
    ("startsAt not a time", _changed(1, startsAt="yesterday"), "alerts[1].startsAt"),
    ("endsAt a number", _changed(0, endsAt=0), "alerts[0].endsAt"),
    ("generatorURL a list", _changed(0, generatorURL=[]), "alerts[0].generatorURL"),
    ("annotation an object", _changed(0, annotations={"s": {}}), "alerts[0].annotations"),
    ("alert a string", _top(alerts=[firing()["alerts"][0], "x"]), "alerts[1]"),
    ("alerts an object", _top(alerts={}), "alerts"),
    ("externalURL a number", _top(externalURL=1), "externalURL"),
    ("truncatedAlerts a string", _top(truncatedAlerts="3"), "truncatedAlerts"),
    ("truncatedAlerts negative", _top(truncatedAlerts=-1), "truncatedAlerts"),
    ("truncatedAlerts a fraction", _top(truncatedAlerts=1.5), "truncatedAlerts"),
    ("truncatedAlerts a boolean", _top(truncatedAlerts=True), "truncatedAlerts"),
    ("version missing", {k: v for k, v in firing().items() if k != "version"}, "version"),
    ("version as a number", _top(version=1), "version"),
    ("version 4 (Alertmanager's)", _top(version="4"), "version"),
    ("top level an array", [firing()], None),
]


@pytest.mark.parametrize(
    ("doc", "field"), [(d, f) for _, d, f in WRONG_TYPES], ids=[n for n, _, _ in WRONG_TYPES]
)
def test_a_wrong_type_is_refused_naming_its_field(doc: Any, field: str | None) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_grafana(doc)
    assert caught.value.field == field


def test_each_webhook_names_the_other_when_sent_its_payload() -> None:
    with pytest.raises(PayloadError, match="/webhook/alertmanager"):
        parse_grafana(payload(alert_json("A")))
    with pytest.raises(PayloadError, match="/webhook/grafana"):
        parse_payload(firing())


# -- over HTTP ------------------------------------------------------------------------------------


@dataclass
class Service:
    client: TestClient
    stdout: io.StringIO
    clock: ManualClock

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    async def post(
        self, doc: Any, headers: dict[str, str] | None = None, path: str = GRAFANA
    ) -> ClientResponse:
        data = doc if isinstance(doc, bytes) else body(doc)
        return await self.client.post(path, data=data, headers=headers or JSON_TYPE)

    async def ok(self, doc: Any, path: str = GRAFANA) -> dict[str, Any]:
        response = await self.post(doc, path=path)
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status == 200, await response.text()
        return await response.json()

    async def alerts(self) -> dict[str, dict[str, Any]]:
        """Stored alerts by alertname."""
        listed = (await self.get("/api/v1/alerts"))["alerts"]
        return {a["labels"]["alertname"]: a for a in listed}

    async def count(self, table: str) -> int:
        rows = await self.app[keys.STORE].query(f"SELECT COUNT(*) FROM {table}")
        return int(rows[0][0])

    async def deliver(self, seconds: float = 31.0) -> str:
        """Past group_wait: decide what is due, deliver it, return the console's output."""
        self.clock.advance(seconds)
        await self.app[keys.PIPELINE].tick()
        await self.app[keys.OUTBOX].drain()
        return self.stdout.getvalue()


Start = Callable[..., Awaitable[Service]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Start:
    async def start(**sections: Any) -> Service:
        sections["server"] = {"instance": "mm-test", **sections.get("server", {})}
        clock = ManualClock(T0 + 60)
        stdout = io.StringIO()
        app = create_app(
            make_config(tmp_path, **sections), clock=clock, stdout=stdout, scheduler=False
        )
        return Service(await aiohttp_client(app), stdout, clock)

    return start


async def refused(response: ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    answer: dict[str, Any] = await response.json()
    assert isinstance(answer["error"], str) and answer["error"]
    return answer


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


BY_FOLDER = {"group_by": ("grafana_folder",)}  # as Grafana's default policy groups


async def test_a_firing_notification_is_stored_deduplicated_and_paged_with_links_and_values(
    start: Start,
) -> None:
    svc = await start(convergence=BY_FOLDER)
    assert await svc.ok(firing()) == {"status": "ok", "accepted": 2, "duplicates": 0}
    # Grafana repeats the notification (repeat interval): nothing changed, nothing is sent.
    assert await svc.ok(firing()) == {"status": "ok", "accepted": 0, "duplicates": 2}
    stored = await svc.alerts()
    memory = stored["High memory usage"]
    assert memory["source"] == "https://grafana.example.com/"
    assert memory["generatorURL"].startswith("https://grafana.example.com/alerting/grafana/")
    assert memory["extras"]["links"]["dashboard"] == DASHBOARD
    assert memory["extras"]["links"]["panel"] == PANEL
    assert memory["extras"]["value"] == VALUE
    assert set(stored["High CPU usage"]["extras"]["links"]) == {"silence"}

    printed = await svc.deliver()
    assert "[FIRING:2] Infrastructure" in printed
    assert f"  Value: {VALUE}" in printed
    assert f"  Dashboard: {DASHBOARD}" in printed and f"  Panel: {PANEL}" in printed
    assert printed.count("Dashboard:") == 1  # the CPU alert has no dashboard
    [notification] = (await svc.get("/api/v1/notifications"))["notifications"]
    assert [d["state"] for d in notification["deliveries"]] == ["delivered"]


async def test_the_resolution_is_paged_with_the_value_it_resolved_at(start: Start) -> None:
    svc = await start(convergence=BY_FOLDER)
    await svc.ok(firing())
    await svc.deliver()
    done = resolved(firing())
    done["alerts"][0]["valueString"] = "[ var='B' labels={zone=us-1} value=12 ]"
    assert await svc.ok(done) == {"status": "ok", "accepted": 2, "duplicates": 0}
    stored = await svc.alerts()
    assert {a["status"] for a in stored.values()} == {"resolved"}
    assert stored["High memory usage"]["endsAt"] == "2027-01-15T08:00:30.000Z"
    printed = await svc.deliver(301)  # group_interval after the firing message
    resolved_part = printed.split("[RESOLVED]", 1)[1]
    assert "Value: [ var='B' labels={zone=us-1} value=12 ]" in resolved_part


async def test_several_alerts_with_some_left_out_are_stored_and_the_gap_logged(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    svc = await start()
    doc = firing()
    template = doc["alerts"][1]
    doc["alerts"] = [
        {**template, "labels": {**template["labels"], "zone": f"zone-{i}"}} for i in range(25)
    ]
    doc["truncatedAlerts"] = 7
    with caplog.at_level(logging.WARNING, logger="monitor_manager.web.api"):
        assert await svc.ok(doc) == {"status": "ok", "accepted": 25, "duplicates": 0}
    assert await svc.count("alerts") == 25
    [record] = [r for r in caplog.records if "left 7 alerts out" in r.getMessage()]
    assert "https://grafana.example.com/" in record.getMessage()


async def test_the_same_rule_seen_by_two_grafana_instances_is_one_alert(start: Start) -> None:
    svc = await start()
    await svc.ok(firing())
    other = firing()
    other["externalURL"] = "https://grafana-az2.example.com/"
    for alert in other["alerts"]:  # Grafana's own fingerprint is not trusted
        alert["fingerprint"] = "0000000000000000"
        alert["generatorURL"] = alert["generatorURL"].replace("grafana.", "grafana-az2.")
    assert await svc.ok(other) == {"status": "ok", "accepted": 0, "duplicates": 2}
    # ... and an Alertmanager alert with the same labels is that alert too: one ingest path.
    same = alert_json("High memory usage", grafana_folder="Infrastructure", team="blue")
    same["labels"]["zone"] = "us-1"
    assert await svc.ok(payload(same), path=ALERTMANAGER) == {
        "status": "ok",
        "accepted": 0,
        "duplicates": 1,
    }
    # Another folder is another rule: grafana_folder is part of the identity.
    moved = firing()
    for alert in moved["alerts"]:
        alert["labels"]["grafana_folder"] = "Databases"
    assert await svc.ok(moved) == {"status": "ok", "accepted": 2, "duplicates": 0}
    assert await svc.count("alerts") == 4


async def test_screening_applies_to_grafana_alerts_too(start: Start) -> None:
    svc = await start()
    doc = firing()
    doc["alerts"][1]["labels"]["source"] = "monitor-manager"  # claims an internal identity
    doc["alerts"][0]["startsAt"] = "2099-01-01T00:00:00Z"  # dated far ahead: clamped
    answer = await svc.ok(doc)
    assert answer == {"status": "ok", "accepted": 1, "duplicates": 0, "rejected": 1}
    stored = await svc.alerts()
    assert list(stored) == ["High memory usage"]
    assert stored["High memory usage"]["startsAt"] == "2027-01-15T08:01:00.000Z"  # arrival


@pytest.mark.parametrize(
    ("doc", "field"), [(d, f) for _, d, f in WRONG_TYPES], ids=[n for n, _, _ in WRONG_TYPES]
)
async def test_a_wrong_type_is_400_naming_its_field_and_stores_nothing(
    start: Start, doc: Any, field: str | None
) -> None:
    svc = await start()
    answer = await refused(await svc.post(doc), 400)
    assert answer.get("field") == field
    assert await svc.count("alerts") == 0 and await svc.count("alert_groups") == 0


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_a_body_in_another_encoding_is_400(start: Start, encoding: str) -> None:
    svc = await start()
    await refused(await svc.post(json.dumps(firing()).encode(encoding)), 400)
    assert await svc.count("alerts") == 0


async def test_body_rules_are_the_alertmanager_webhooks(start: Start) -> None:
    svc = await start(server={"max_body_bytes": 8000})
    assert len(body(firing())) < 8000
    await refused(await svc.post(body(firing()) + b" " * 8000), 413)
    await refused(await svc.post(firing(), headers={"Content-Type": "text/plain"}), 415)
    lone = body(firing()).replace(b"91.83943737541908 ]", b"\\ud800 ]", 1)
    await refused(await svc.post(lone), 400)
    assert await svc.count("alerts") == 0


async def test_a_hostile_link_never_reaches_a_message_or_the_api(start: Start) -> None:
    svc = await start()
    doc = firing()
    doc["alerts"][0]["dashboardURL"] = "javascript:alert(document.cookie)"
    doc["alerts"][0]["panelURL"] = "https://grafana.example.com/d/x\r\nBcc: victim@example.com"
    assert (await svc.ok(doc))["accepted"] == 2
    links = (await svc.alerts())["High memory usage"]["extras"]["links"]
    assert set(links) == {"silence", "image"}
    printed = await svc.deliver()
    assert "javascript:" not in printed and "Bcc:" not in printed and "Dashboard:" not in printed


# -- authentication -----------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer s3cret",
        "bearer s3cret",
        basic("grafana", "s3cret"),
        basic("", "s3cret"),
        basic("grafana", "s3cret").replace("Basic", "BASIC"),
        "basic " + base64.b64encode(b"admin:s3cret").decode(),
    ],
)
async def test_the_token_as_bearer_or_as_the_basic_auth_password_is_accepted(
    start: Start, authorization: str
) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    response = await svc.post(firing(), headers={**JSON_TYPE, "Authorization": authorization})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer wrong",
        "Bearer s3cret2",
        basic("grafana", "wrong"),
        basic("grafana", "s3cret2"),
        basic("grafana", "s3cre"),
        basic("s3cret", ""),  # the token as the user name is not the password
        basic("grafana", ""),
        "Basic " + base64.b64encode(b"s3cret").decode(),  # no colon: no password at all
        "Basic s3cret",  # not base64
        "Basic " + base64.b64encode(b"grafana:s3cret").decode() + "!",
        "Basic",
        "Token s3cret",
        "s3cret",
    ],
)
async def test_a_missing_or_wrong_credential_is_401_and_stores_nothing(
    start: Start, authorization: str | None
) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    headers = dict(JSON_TYPE)
    if authorization is not None:
        headers["Authorization"] = authorization
    await refused(await svc.post(firing(), headers=headers), 401)
    assert await svc.count("alerts") == 0


async def test_basic_auth_stays_refused_on_the_alertmanager_webhook(start: Start) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    headers = {**JSON_TYPE, "Authorization": basic("alertmanager", "s3cret")}
    await refused(await svc.post(payload(alert_json("A")), headers=headers, path=ALERTMANAGER), 401)


@pytest.mark.parametrize("scheme", [b"Bearer", b"Basic"])
async def test_an_authorization_header_that_is_not_utf8_is_401_not_500(
    start: Start, scheme: bytes
) -> None:
    svc = await start(server={"webhook_token": "s3cret"})
    data = body(firing())
    credential = b"s3cret\xff" if scheme == b"Bearer" else base64.b64encode(b"g:s3cret") + b"\xff"
    request = (
        b"POST " + GRAFANA.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\n"
        b"Authorization: " + scheme + b" " + credential + b"\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.client.port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert await svc.count("alerts") == 0


async def test_requests_are_counted_per_source(start: Start) -> None:
    svc = await start()
    await svc.ok(firing())
    await refused(await svc.post(b"{"), 400)
    await svc.ok(payload(alert_json("A")), path=ALERTMANAGER)
    text = await (await svc.client.get("/metrics")).text()
    name = "monitor_manager_webhook_requests_total"
    assert metric(text, name, code="200", source="grafana") == 1
    assert metric(text, name, code="400", source="grafana") == 1
    assert metric(text, name, code="200", source="alertmanager") == 1
    assert metric(text, name, code="400", source="alertmanager") == 0


# -- heartbeats -----------------------------------------------------------------------------------

HEARTBEAT = {"alertname": "MonitorManagerHeartbeat", "grafana_folder": "Monitoring"}


def heartbeat(status: str = "firing") -> dict[str, Any]:
    """What Grafana sends for an always-firing rule (condition `1 > 0`) whose policy repeats it."""
    doc = firing()
    alert = doc["alerts"][1]
    alert.update(
        labels={**HEARTBEAT, "heartbeat": "grafana"},
        annotations={"summary": "Grafana evaluates rules and delivers notifications"},
        dashboardURL="",
        panelURL="",
        valueString="[ var='A' labels={} value=1 ]",
    )
    doc["alerts"] = [alert]
    doc["groupLabels"] = doc["commonLabels"] = alert["labels"]
    return resolved(doc) if status == "resolved" else doc


async def test_an_always_firing_grafana_rule_is_a_heartbeat(start: Start) -> None:
    svc = await start(
        watchdog=WatchdogConfig(
            groups=("default",),
            heartbeats=(HeartbeatConfig("grafana", HEARTBEAT, timeout=300.0),),
        )
    )
    watch = svc.app[keys.PIPELINE].watch

    async def beat() -> dict[str, Any]:
        [state] = (await svc.get("/api/v1/watchdog"))["heartbeats"]
        return state  # type: ignore[no-any-return]

    for _ in range(4):  # Grafana repeats it every repeat interval: seen each time
        assert await svc.ok(heartbeat()) == {"status": "ok", "accepted": 1, "duplicates": 0}
        svc.clock.advance(120)
        await watch()
    state = await beat()
    assert state["state"] == "ok" and state["via"] == "https://grafana.example.com/"
    assert await svc.count("alerts") == 0  # never an alert of its own, never paged
    assert "MonitorManagerHeartbeat" not in await svc.deliver(1)

    # A resolved heartbeat (Grafana stopped evaluating it) is not seen: past the timeout since
    # the last firing one, HeartbeatMissing pages the watchdog groups at once.
    await svc.ok(heartbeat("resolved"))
    svc.clock.advance(181)
    await watch()
    assert (await beat())["state"] == "missing"
    printed = await svc.deliver(1)
    assert "[FIRING:1] HeartbeatMissing" in printed and "grafana.example.com" in printed

    # The next heartbeat resolves the page.
    await svc.ok(heartbeat())
    await watch()
    assert (await beat())["state"] == "ok"
    assert "[RESOLVED] HeartbeatMissing" in await svc.deliver(301)  # after group_interval


async def test_the_readme_heartbeat_for_grafana_is_a_valid_config() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Grafana") :]
    snippet = re.search(r"```toml\n(.*?)```", section, re.S)
    assert snippet, "the Grafana section shows its [[watchdog.heartbeats]] entry"
    config = parse_config(tomllib.loads(snippet.group(1)), env={"MM_WEBHOOK_TOKEN": "t"})
    [beat] = config.watchdog.heartbeats
    assert "grafana_folder" in beat.match  # what Grafana adds to every alert
    assert beat.timeout >= 2 * beat.resend_interval


# -- the console and the API ---------------------------------------------------------------------


async def test_the_console_group_page_shows_the_links_and_the_value(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    console = await start_console(aiohttp_client, tmp_path, convergence=BY_FOLDER)
    doc = firing()
    doc["alerts"][1]["panelURL"] = "javascript:alert(1)"
    response = await console.client.post(GRAFANA, data=body(doc), headers=JSON_TYPE)
    assert response.status == 200, await response.text()
    await console.decide()
    (key,) = console.group_keys()
    html = await console.page(group_path(key))
    escaped_dashboard = DASHBOARD.replace("&", "&amp;")
    assert f'href="{escaped_dashboard}"' in html
    assert f'href="{PANEL.replace("&", "&amp;")}"' in html
    assert "silence in Grafana" in html and "image ↗" in html
    assert "value=91.83943737541908" in html and "var=&#39;B&#39;" in html
    assert "javascript:" not in html
    zh = await console.page(group_path(key), Cookie="mm_lang=zh")
    assert "仪表板 ↗" in zh and "面板 ↗" in zh


# -- every message template -------------------------------------------------------------------

PLAIN = ("text.txt", "wechat.txt", "dingtalk.txt", "feishu.txt")
MARKDOWN = ("wechat.md", "dingtalk.md", "feishu.md", "feishu_post.txt")


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("template", [*PLAIN, *MARKDOWN, "email.html"])
def test_every_message_template_shows_the_value_and_the_dashboard_and_panel_links(
    language: str, template: str
) -> None:
    grafana = dataclasses.replace(
        alert_view(1),
        links={"dashboard": DASHBOARD, "panel": PANEL, "silence": "https://grafana.example.com/s"},
        value=VALUE,
    )
    renderer = Renderer(language)
    msg = message(group("g1", grafana, alert_view(2)))
    if template == "email.html":
        text = renderer.render(template, msg)
        assert f'href="{DASHBOARD.replace("&", "&amp;")}"' in text
        assert f'href="{PANEL.replace("&", "&amp;")}"' in text
        assert "var=&#39;B&#39; labels={zone=us-1} value=91.83943737541908" in text
        return
    neutraliser = neutralise_markup if template.startswith(("dingtalk", "feishu")) else neutralise
    text = render_chat(renderer, (template,), msg, neutraliser)
    if template in PLAIN:
        assert DASHBOARD in text and PANEL in text
    else:
        assert f"]({DASHBOARD})" in text and f"]({PANEL})" in text
    assert "labels={zone=us-1} value=91.83943737541908" in text  # brackets neutralised in chat
    assert text.count(DASHBOARD) == 2  # the panel link starts with the dashboard's: no other
    assert "grafana.example.com/s" not in text  # the silence link is the console's


def test_chat_messages_make_the_links_safe_like_any_url() -> None:
    hostile = dataclasses.replace(
        alert_view(1),
        links={"dashboard": "javascript:alert(1)", "panel": "https://g.example.com/d/x)[y](z"},
        value="<@all> [click](javascript:alert(1))",
    )
    text = render_chat(Renderer("en"), ("wechat.md",), message(group("g1", hostile)))
    assert "](javascript:" not in text and "Dashboard" not in text  # no link but http(s)
    assert "[Panel](https://g.example.com/d/x%29%5By%5D%28z)" in text  # cannot end the link
    assert "<@all>" not in text and "[click]" not in text  # the value is alert text


def test_the_webhook_channels_document_carries_the_extras() -> None:
    grafana = dataclasses.replace(alert_view(1), links={"dashboard": DASHBOARD}, value=VALUE)
    doc = build_payload(message(group("g1", grafana, alert_view(2))), "title", "text")
    first, second = doc["alertGroups"][0]["alerts"]
    assert first["extras"] == {"links": {"dashboard": DASHBOARD}, "value": VALUE}
    assert second["extras"] == {}
