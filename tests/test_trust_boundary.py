"""The trust boundary (SPEC section 12): one test per finding of the attack on release 1.

Each test is named for what it proves; each failed on release 1 (tests/data/release1.tar.gz
is that code, and the two slow tests at the end run it).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from builders import T0, alert_json, incoming, make_config, payload, rfc3339
from fake_wecom import (
    AGENT_ID,
    CORP_ID,
    SECRET,
    FakeWeCom,
    alert,
    group,
    message,
)
from harness import Harness, OutboxHarness
from monitor_manager import cli, keys
from monitor_manager.app import create_app
from monitor_manager.channels.base import ChannelContext
from monitor_manager.channels.console import ConsoleChannel, ConsoleSettings
from monitor_manager.channels.email import EmailChannel, EmailSettings
from monitor_manager.channels.wechat import WechatChannel, WechatSettings
from monitor_manager.channels.wechat_robot import WechatRobotChannel, WechatRobotSettings
from monitor_manager.clock import ManualClock
from monitor_manager.cluster.ha import Entry, HighAvailability
from monitor_manager.cluster.legacy_keys import fingerprint_v1, group_key_v1
from monitor_manager.config import PeerConfig, load_config
from monitor_manager.converge.alerts import fingerprint
from monitor_manager.converge.convergence import group_key
from monitor_manager.deliver.render import MAX_SUBJECT_CHARS, Renderer
from monitor_manager.ingest.payload import _KNOWN_NAMES, _parse_time_cached
from monitor_manager.metrics import Metrics
from monitor_manager.store import StoreError
from monitor_manager.watch.peers import Peers
from monitor_manager.web import bodies
from processes import MAIL_TO_ONCALL, ServeProcess, free_port, http
from release1 import unpack_release1
from smtp_server import SMTPTestServer

WEBHOOK = "/webhook/alertmanager"
PEER = "/api/v1/peer/nflog"
JSON_TYPE = {"Content-Type": "application/json"}
TOKEN = "peer-secret-token"


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Callable[..., Any]:
    async def start(**sections: Any) -> TestClient:
        sections["server"] = {"instance": "mm-a", **sections.get("server", {})}
        app = create_app(
            make_config(tmp_path, **sections),
            clock=ManualClock(T0 + 60),
            stdout=io.StringIO(),
            scheduler=False,
        )
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return start


def peered(token: str = TOKEN) -> dict[str, Any]:
    return {"peers": (PeerConfig("mm-b", "http://127.0.0.1:9"),), "ha": {"token": token}}


def labelled(alert: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    alert["labels"].update(labels)
    return alert


async def count(client: TestClient, table: str) -> int:
    return int((await client.app[keys.STORE].query(f"SELECT COUNT(*) FROM {table}"))[0][0])


async def answer(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


# -- 1. the peer protocol ------------------------------------------------------------------


def test_peers_without_a_token_fail_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mm.toml"
    path.write_text('[[peers]]\nname = "mm-b"\nurl = "http://127.0.0.1:9096"\n')
    assert cli.check_config(str(path)) == 1
    assert "ha.token: must be set when peers are configured" in capsys.readouterr().err
    load_config(path)  # ... while the config still loads: serve starts with peering off


async def test_without_a_token_the_peer_api_is_closed_and_peering_is_off_and_paged(
    start: Callable[..., Any],
) -> None:
    client = await start(**peered(token=""))
    for method in ("GET", "POST"):
        response = await client.request(
            method, PEER, json={"version": 2}, headers={"Authorization": "Bearer "}
        )
        assert "ha.token is not set" in (await answer(response, 401))["error"]
    assert not client.app[keys.HA].enabled
    await client.app[keys.PIPELINE].watch()
    firing = (await (await client.get("/api/v1/alerts?status=firing")).json())["alerts"]
    assert [a["labels"]["alertname"] for a in firing] == ["PeeringDisabled"]


async def test_a_forged_or_future_dated_entry_suppresses_no_page(start: Callable[..., Any]) -> None:
    client = await start(**peered())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    key = group_key("default", {"alertname": "Disk"})
    entry = {
        "contact_group": "default",
        "group_key": key,
        "channel": "console",
        "content_hash": "0" * 32,
        "sent_at": 1e300,
        "instance": "mm-b",
        "v1_group_key": "",
        "v1_content_hash": "",
    }
    response = await client.post(
        PEER,
        json={"version": 2, "instance": "mm-evil", "entries": [{**entry, "instance": "mm-evil"}]},
        headers=auth,
    )
    assert (await answer(response, 403))["field"] == "instance"
    now = client.app[keys.CLOCK]()
    bad = [
        entry,  # dated in the future
        {**entry, "sent_at": now, "instance": "mm-c"},  # not the sender
        {**entry, "sent_at": now, "contact_group": "nobody"},
        {**entry, "sent_at": now, "group_key": "x" * 16},
    ]
    response = await client.post(
        PEER, json={"version": 2, "instance": "mm-b", "entries": bad}, headers=auth
    )
    assert await answer(response, 200) == {"version": 2, "accepted": 0, "rejected": 4}
    assert await count(client, "nflog") == 0 and client.app[keys.HA].log.entries == {}
    # The page still goes out, as nothing was logged.
    await client.post(WEBHOOK, json=payload(alert_json("Disk")))
    client.app[keys.CLOCK].advance(31)  # type: ignore[attr-defined]
    await client.app[keys.PIPELINE].tick()
    await client.app[keys.OUTBOX].drain()
    rows = await client.app[keys.STORE].query("SELECT state, note FROM deliveries")
    assert [(r["state"], r["note"]) for r in rows] == [("delivered", "")]


async def test_an_entry_from_a_peer_that_is_down_does_not_suppress_a_send(tmp_path: Path) -> None:
    config = make_config(tmp_path, **peered())
    clock = ManualClock(T0)
    peers = Peers(config, None, clock, Metrics(), lambda labels: False)
    ha = HighAvailability(config, peers, None, clock, Metrics())
    mine = Entry("default", "0123456789abcdef", "console", "a" * 32, T0, "mm-a")
    ha.record([Entry("default", "0123456789abcdef", "console", "a" * 32, T0, "mm-b")])
    assert ha.sent_by_peer(mine, decided_at=T0 - 1) == "mm-b"
    peers.states["mm-b"].failures = 1  # it stopped answering: its word proves nothing now
    assert ha.sent_by_peer(mine, decided_at=T0 - 1) is None


# -- 2. strict UTF-8 JSON, validated before any state changes --------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
async def test_a_body_in_another_encoding_is_400_and_stores_nothing(
    start: Callable[..., Any], encoding: str
) -> None:
    client = await start()
    body = json.dumps(payload(alert_json("Disk", summary="x"))).encode(encoding)
    await answer(await client.post(WEBHOOK, data=body, headers=JSON_TYPE), 400)
    assert await count(client, "alerts") == 0


async def test_a_lone_surrogate_is_400_before_memory_changes(start: Callable[..., Any]) -> None:
    client = await start()
    body = payload(alert_json("Genuine"), alert_json("Bad", instance="\ud800"))
    response = await client.post(WEBHOOK, data=json.dumps(body).encode(), headers=JSON_TYPE)
    assert (await answer(response, 400))["field"] == "alerts[1].labels.instance"
    # The genuine alert was not half-taken: sent alone it is new, not a duplicate.
    response = await client.post(WEBHOOK, json=payload(alert_json("Genuine")))
    assert await answer(response, 200) == {"status": "ok", "accepted": 1, "duplicates": 0}


async def test_bad_requests_never_cost_good_ones_their_commit(start: Callable[..., Any]) -> None:
    client = await start()
    good = [json.dumps(payload(alert_json("Good", instance=f"i{i}"))).encode() for i in range(60)]
    bad = [
        json.dumps(payload(alert_json("Bad", instance=f"b{i}", summary="\udc00"))).encode()
        for i in range(10)
    ]
    bad += [json.dumps(payload(alert_json("Bad16"))).encode("utf-16") for _ in range(5)]
    bodies_ = good + bad
    order = sorted(range(len(bodies_)), key=lambda i: (i * 7919) % len(bodies_))
    responses = await asyncio.gather(
        *(client.post(WEBHOOK, data=bodies_[i], headers=JSON_TYPE) for i in order)
    )
    statuses = {i: r.status for i, r in zip(order, responses, strict=True)}
    assert [statuses[i] for i in range(60)] == [200] * 60
    assert all(statuses[i] == 400 for i in range(60, len(bodies_)))
    assert await count(client, "alerts") == 60


async def test_an_exception_inside_ingest_makes_memory_reload_from_the_store(
    start: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start()
    pipeline = client.app[keys.PIPELINE]
    real = pipeline.convergence.ingest

    def broken(alerts: Any, *args: Any, **kwargs: Any) -> Any:
        real(alerts, *args, **kwargs)  # memory changed ...
        raise RuntimeError("a bug after memory changed")  # ... and nothing is written

    monkeypatch.setattr(pipeline.convergence, "ingest", broken)
    assert (await client.post(WEBHOOK, json=payload(alert_json("Phantom")))).status == 500
    monkeypatch.undo()
    response = await client.post(WEBHOOK, json=payload(alert_json("Phantom")))
    assert await answer(response, 200) == {"status": "ok", "accepted": 1, "duplicates": 0}


# -- 3. other 500s ------------------------------------------------------------------------------


async def test_an_invalid_gzip_body_is_a_json_400(start: Callable[..., Any]) -> None:
    client = await start()
    response = await client.post(
        WEBHOOK, data=b"\x1f\x8b not gzip at all", headers={**JSON_TYPE, "Content-Encoding": "gzip"}
    )
    assert "Content-Encoding" in (await answer(response, 400))["error"]
    zipped = gzip.compress(json.dumps(payload(alert_json("Zipped"))).encode())
    response = await client.post(
        WEBHOOK, data=zipped, headers={**JSON_TYPE, "Content-Encoding": "gzip"}
    )
    assert (await answer(response, 200))["accepted"] == 1


async def test_an_encoding_we_do_not_take_is_a_json_415(start: Callable[..., Any]) -> None:
    client = await start()
    response = await client.post(
        WEBHOOK, data=b"{}", headers={**JSON_TYPE, "Content-Encoding": "br"}
    )
    await answer(response, 415)


async def test_deep_nesting_on_the_peer_push_is_a_json_400(start: Callable[..., Any]) -> None:
    client = await start(**peered())
    body = b"[" * 100_000 + b"]" * 100_000
    response = await client.post(
        PEER, data=body, headers={**JSON_TYPE, "Authorization": f"Bearer {TOKEN}"}
    )
    assert "nested too deeply" in (await answer(response, 400))["error"]


# -- 4. sizes that cost others ------------------------------------------------------------------


HUGE = "磁盘" * 650_000  # 3.9 MB of UTF-8


@pytest.mark.parametrize("kind", ["app-text", "app-markdown", "robot-text", "robot-markdown"])
async def test_a_huge_summary_takes_at_most_five_wecom_parts_ending_with_a_link(
    fake_wecom: FakeWeCom, ctx: ChannelContext, kind: str
) -> None:
    endpoint, msgtype = kind.split("-")
    many = message(group("g1", *(alert(i, summary=HUGE[:4000] + str(i)) for i in range(10))))
    if endpoint == "app":
        ch: Any = WechatChannel(
            "wecom",
            WechatSettings(
                CORP_ID, AGENT_ID, SECRET, api_url=fake_wecom.api_url, msgtype=cast(Any, msgtype)
            ),
            ctx,
        )
    else:
        ch = WechatRobotChannel(
            "robot",
            WechatRobotSettings(webhook_url=fake_wecom.robot_url(), msgtype=cast(Any, msgtype)),
            ctx,
        )
    for sent in (message(group("g1", alert(1, summary=HUGE))), many):
        before = len(fake_wecom.accepted)
        await ch.send(sent)
        parts = [a.content for a in fake_wecom.accepted[before:]]
        assert len(parts) <= 5
        assert sum(len(p.encode()) for p in parts) < 5 * 4096
    assert len(parts) == 5 and "more bytes left out" in parts[-1]
    assert many.groups[0].url in parts[-1]


def test_a_huge_alertname_gives_a_short_subject_and_a_small_mail(tmp_path: Path) -> None:
    name = "A" * 100_000
    big = message(group("g1", alert(1, labels={"alertname": name})))
    renderer = Renderer("en")
    assert len(renderer.subject(big)) <= MAX_SUBJECT_CHARS
    ctx = ChannelContext(session=None, renderer=renderer, clock=lambda: T0, stdout=io.StringIO())
    mail = EmailChannel("mail", EmailSettings(host="127.0.0.1", from_="mm@example.com"), ctx)
    composed = mail._compose(big, [])
    assert len(str(composed["Subject"])) <= MAX_SUBJECT_CHARS
    assert len(composed.as_bytes()) < 30_000


async def test_the_store_and_the_api_keep_the_full_text(start: Callable[..., Any]) -> None:
    client = await start()
    long_text = "x" * 100_000
    long_alert = {**alert_json("Long"), "annotations": {"summary": long_text}}
    await client.post(WEBHOOK, json=payload(long_alert))
    [stored] = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    assert stored["annotations"]["summary"] == long_text


# -- 5. memory and disk grown by rejected or unauthenticated input ------------------------------


async def test_rejected_times_and_long_label_names_are_not_kept(start: Callable[..., Any]) -> None:
    client = await start()
    cached = _parse_time_cached.cache_info().currsize
    for i in range(20):
        body = payload(
            {**alert_json("T"), "startsAt": "2026-01-01T00:00:00." + "0" * 100_000 + f"{i}Z"}
        )
        await answer(await client.post(WEBHOOK, json=body), 400)
    assert _parse_time_cached.cache_info().currsize == cached
    long_name = "n" * 5000
    await answer(
        await client.post(WEBHOOK, json=payload(labelled(alert_json("L"), {long_name: "v"}))), 200
    )
    assert long_name not in _KNOWN_NAMES


async def test_alertmanager_urls_are_bounded_in_memory_and_in_the_store(
    start: Callable[..., Any],
) -> None:
    client = await start()
    for i in range(100):
        body = {**payload(alert_json("A")), "alerts": [], "externalURL": f"http://am{i}:9093"}
        await answer(await client.post(WEBHOOK, json=body), 200)
    await client.app[keys.PIPELINE].watch()
    watchdog = client.app[keys.PIPELINE].watchdog
    assert len(watchdog.sources) == 64 and "http://am99:9093" in watchdog.sources
    assert await count(client, "alertmanagers") == 64
    body = {**payload(alert_json("A")), "externalURL": "http://am/" + "x" * 5000}
    assert (await answer(await client.post(WEBHOOK, json=body), 400))["field"] == "externalURL"


# -- 6. slow bodies ---------------------------------------------------------------------------


async def test_a_body_that_stalls_is_cut_off_with_a_json_408(
    start: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies, "BODY_TIMEOUT", 0.5)
    client = await start()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ver'
    )
    await writer.drain()
    started = time.monotonic()
    head = await asyncio.wait_for(reader.read(4096), timeout=10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b'"error"' in head
    assert time.monotonic() - started < 5


# -- 7. a delivery stuck in `sending` -------------------------------------------------------------


async def test_a_delivery_whose_outcome_cannot_be_recorded_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = await OutboxHarness(make_config(tmp_path, convergence={"group_wait": 1.0})).start()
    try:
        assert box.store is not None
        real_write = box.store.write
        failed: list[bool] = []

        async def write(ops: list[Any]) -> None:
            recording = [op for op in ops if not callable(op) and op[1][:1] == ("delivered",)]
            if not failed and recording:
                failed.append(True)
                raise StoreError("the disk is full")
            await real_write(ops)

        monkeypatch.setattr(box.store, "write", write)
        await box.push(incoming("Stuck"))
        rows = await box.step(2)
        assert failed and [r["state"] for r in rows] == ["sending"]
        rows = await box.step(1)  # the sweep hands it back, the next pass sends it
        rows = await box.step(1)
        assert [r["state"] for r in rows] == ["delivered"]
        assert box.stdout.getvalue().count("[FIRING:1] Stuck") == 2  # at least once
    finally:
        await box.stop()


# -- 8. identity collisions ----------------------------------------------------------------------


def test_label_values_holding_release_1_separators_are_different_identities() -> None:
    forged = {"instance": "db-1\xffseverity\xffcritical"}
    real = {"instance": "db-1", "severity": "critical"}
    assert fingerprint_v1(forged) == fingerprint_v1(real)  # the hole release 1 had
    assert fingerprint(forged) != fingerprint(real)
    g_forged = {"alertname": "X\x00cluster\xffprod"}
    g_real = {"alertname": "X", "cluster": "prod"}
    assert group_key_v1("sre", g_forged) == group_key_v1("sre", g_real)
    assert group_key("sre", g_forged) != group_key("sre", g_real)
    assert group_key("a", {"b": "c"}) != group_key("ab", {}) != group_key("", {"ab": ""})


async def test_a_forged_label_value_cannot_resolve_a_real_alert(start: Callable[..., Any]) -> None:
    client = await start(convergence={"group_by": ("...",)})
    await client.post(WEBHOOK, json=payload(alert_json("Db", instance="db-1", severity="critical")))
    forged = alert_json("Db", "resolved", ends=T0 + 30, instance="db-1\xffseverity\xffcritical")
    response = await client.post(
        WEBHOOK, data=json.dumps(payload(forged)).encode(), headers=JSON_TYPE
    )
    assert await answer(response, 200) == {"status": "ok", "accepted": 1, "duplicates": 0}
    firing = (await (await client.get("/api/v1/alerts?status=firing")).json())["alerts"]
    assert [a["labels"]["instance"] for a in firing] == ["db-1"]


# -- 9. impersonation and injection ---------------------------------------------------------------


async def test_a_webhook_alert_claiming_an_internal_identity_is_dropped_and_counted(
    start: Callable[..., Any],
) -> None:
    client = await start()
    fake = alert_json("PeerDown", source="monitor-manager", peer="mm-b", severity="critical")
    response = await client.post(WEBHOOK, json=payload(fake, alert_json("Real")))
    assert await answer(response, 200) == {
        "status": "ok",
        "accepted": 1,
        "duplicates": 0,
        "rejected": 1,
    }
    listed = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    assert [a["labels"]["alertname"] for a in listed] == ["Real"]
    metrics = await (await client.get("/metrics")).text()
    assert 'monitor_manager_alerts_rejected_total{reason="internal_identity"} 1.0' in metrics


@pytest.mark.parametrize("kind", ["app", "robot"])
async def test_wecom_text_messages_neutralise_mentions_and_links_from_alerts(
    fake_wecom: FakeWeCom, ctx: ChannelContext, kind: str
) -> None:
    hostile = alert(
        1,
        summary='<@all> see <a href="http://evil.example/">the runbook</a>',
        labels={"team": "<@zhangsan>"},
    )
    if kind == "app":
        ch: Any = WechatChannel(
            "wecom",
            WechatSettings(CORP_ID, AGENT_ID, SECRET, api_url=fake_wecom.api_url, msgtype="text"),
            ctx,
        )
    else:
        ch = WechatRobotChannel(
            "robot", WechatRobotSettings(webhook_url=fake_wecom.robot_url(), msgtype="text"), ctx
        )  # type: ignore[arg-type]
    await ch.send(message(group("g1", hostile)))
    [sent] = fake_wecom.contents()
    assert "<@" not in sent and "<a " not in sent and "＜@all＞" in sent


async def test_console_output_carries_no_terminal_control_sequences() -> None:
    out = io.StringIO()
    ctx = ChannelContext(session=None, renderer=Renderer("en"), clock=lambda: T0, stdout=out)
    hostile = alert(
        1,
        summary="\x1b]0;pwned\x07\x1b[2J\rfake line\x00\u202eevil",
        labels={"instance": "a\nFIRING: forged"},
    )
    await ConsoleChannel("console", ConsoleSettings(), ctx).send(message(group("g1", hostile)))
    text = out.getvalue()
    assert not any(c in text for c in "\x1b\x07\r\x00\u202e")
    assert "\\x1b[2J" in text and "a\\x0aFIRING: forged" in text


async def test_a_time_far_in_the_future_is_clamped_to_its_arrival(
    start: Callable[..., Any],
) -> None:
    client = await start()
    now = client.app[keys.CLOCK]()
    late = {**alert_json("Future"), "startsAt": "9999-12-30T00:00:00Z"}
    response = await client.post(WEBHOOK, json=payload(late, alert_json("Now")))
    assert await answer(response, 200) == {"status": "ok", "accepted": 2, "duplicates": 0}
    stored = {
        a["labels"]["alertname"]: a
        for a in (await (await client.get("/api/v1/alerts")).json())["alerts"]
    }
    assert stored["Future"]["startsAt"] == rfc3339(now)
    resolved = alert_json("Future", "resolved", starts=now, ends=now + 1)
    response = await client.post(WEBHOOK, json=payload(resolved))
    assert (await answer(response, 200))["accepted"] == 1  # it does not fire for ever


async def test_an_alert_nobody_resends_is_closed_as_stale_never_as_resolved(tmp_path: Path) -> None:
    h = await Harness(
        make_config(tmp_path, convergence={"group_wait": 1.0, "stale_after": 72 * 3600.0})
    ).start()
    try:
        await h.receive(incoming("Quiet", instance="a"), incoming("Chatty", instance="b"))
        first = await h.run_until(10)
        assert [d.message.status for d in first] == ["firing", "firing"]
        for hours in (24, 48, 70, 96):  # Chatty is re-sent (a duplicate), Quiet never
            await h.run_until(hours * 3600, step=600)
            await h.receive(incoming("Chatty", instance="b"))
        decided = [d for d in await h.run_until(100 * 3600, step=600) if d.message.kind == "group"]
        stale = [d for d in h.decided if d.message.status == "stale"]
        assert [d.names for d in stale] == [["Quiet"]]
        assert 72 * 3600 <= stale[0].at <= 73 * 3600 + 120
        text = Renderer("en").render("text.txt", stale[0].message)
        assert "No longer reported (1)" in text and "last reported" in text
        assert Renderer("en").subject(stale[0].message).startswith("[STALE] Quiet")
        assert not any(d.message.status == "resolved" for d in h.decided)
        assert all(d.names != ["Chatty"] or d.message.status == "firing" for d in decided)
        [row] = await h.rows("SELECT status FROM alerts WHERE labels LIKE '%Quiet%'")
        assert row["status"] == "stale"
        await h.receive(incoming("Quiet", instance="a"))  # reported again: it fires again
        again = await h.run_until(100 * 3600 + 30)
        assert [(d.names, d.message.status) for d in again] == [(["Quiet"], "firing")]
    finally:
        await h.stop()


# -- 10. secrets ----------------------------------------------------------------------------------


def test_check_config_never_prints_a_value_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "MM_SMTP_PASSWORD": "s3cret-smtp-pass",
        "MM_TLS": "sslmode-secret",
        "MM_FROM": "no-address-secret",
        "MM_WAIT": "30 secret seconds",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "mm.toml"
    path.write_text(
        '[convergence]\ngroup_wait = "${MM_WAIT}"\n'
        '[channels.mail]\ntype = "email"\nhost = "h"\npassword = "${MM_SMTP_PASSWORD}"\n'
        'tls = "${MM_TLS}"\nfrom = "${MM_FROM}"\nport = "${MM_SMTP_PASSWORD}"\n'
        '[channels.robot]\ntype = "wechat_robot"\nwebhook_url = 12345678\n'
        '[[contact_groups]]\nname = "default"\nchannels = ["mail", "robot"]\n'
    )
    assert cli.check_config(str(path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") >= 5, err
    for value in [*secrets.values(), "12345678"]:
        assert value not in err


async def test_store_failures_are_answered_with_fixed_reasons(start: Callable[..., Any]) -> None:
    client = await start()
    await client.app[keys.STORE].run(lambda c: c.execute("PRAGMA query_only = ON"))
    body = await answer(await client.post(WEBHOOK, json=payload(alert_json("A"))), 503)
    assert body["error"] == "the store cannot commit; retry later (the store is read-only)"
    ready = await answer(await client.get("/readyz"), 503)
    assert "readonly database" not in ready["error"] and "read-only" in ready["error"]


# -- a rolling upgrade from release 1 ----------------------------------------------------------


CLUSTER = (
    """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
[storage]
path = "%(me)s.db"
[convergence]
group_by = ["alertname"]
group_wait = "1s"
"""
    + MAIL_TO_ONCALL
    + """[watchdog]
peer_interval = "300ms"
peer_timeout = "500ms"
peer_failures = 10
[ha]
peer_wait = "2s"
token = "%(token)s"
[[peers]]
name = "%(other)s"
url = "http://127.0.0.1:%(other_port)d"
"""
)


@pytest.fixture
def release1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_release1(tmp_path_factory.mktemp("code"))


@pytest.mark.slow
@pytest.mark.parametrize("old_first", [True, False], ids=["release1-sends", "release2-sends"])
def test_a_release_1_and_a_release_2_instance_side_by_side_send_one_mail(
    tmp_path: Path, smtp_server: SMTPTestServer, release1: Path, old_first: bool
) -> None:
    # Instances take turns by name: mm-a sends first, mm-b waits and looks at the log.
    ports = {"mm-a": free_port(), "mm-b": free_port()}
    old, new = ("mm-a", "mm-b") if old_first else ("mm-b", "mm-a")
    procs = {}
    for me, other in (("mm-a", "mm-b"), ("mm-b", "mm-a")):
        text = CLUSTER % {
            "me": me,
            "other": other,
            "other_port": ports[other],
            "smtp": smtp_server.port,
            "token": TOKEN,
        }
        procs[me] = ServeProcess(
            tmp_path, text, name=me, port=ports[me], code=release1 if me == old else None
        )
    try:
        for proc in procs.values():
            proc.launch()
        for proc in procs.values():
            proc.wait_healthy()
        time.sleep(1.0)  # a few probes: release 2 learns which protocol its peer speaks
        for proc in procs.values():
            status, _ = http("POST", f"{proc.url}{WEBHOOK}", payload(alert_json("Upgrade")))
            assert status == 200
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline and len(smtp_server.messages) < 2:
            time.sleep(0.2)
        subjects = [m["Subject"] for m in smtp_server.messages]
        assert subjects == ["[FIRING:1] Upgrade"], (subjects, procs[new].logs())
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.mark.slow
def test_a_store_written_by_release_1_is_migrated_to_the_new_keys(
    tmp_path: Path, release1: Path
) -> None:
    text = (
        '[server]\nlisten = "127.0.0.1:{port}"\ninstance = "mm"\n'
        '[storage]\npath = "mm.db"\n[convergence]\ngroup_wait = "1s"\n'
        'group_by = ["alertname", "cluster"]\n'
    )
    old = ServeProcess(tmp_path, text, name="old", code=release1).start()
    labels = {"cluster": "prod\xffx", "instance": "a"}
    try:
        for name in ("Kept", "Gone"):
            status, _ = http(
                "POST", f"{old.url}{WEBHOOK}", payload(labelled(alert_json(name), labels))
            )
            assert status == 200
        old.wait_for(lambda: "[FIRING:1] Kept" in old.stdout.read_text(), what="a message")
        http(
            "POST",
            f"{old.url}{WEBHOOK}",
            payload(labelled(alert_json("Gone", "resolved", ends=T0 + 1), labels)),
        )
    finally:
        old.terminate()
    new = ServeProcess(tmp_path, text, name="old").start()  # same config, same store
    try:
        groups = http("GET", f"{new.url}/api/v1/alert-groups")[1]["alert_groups"]
        kept = group_key("default", {"alertname": "Kept", "cluster": "prod\xffx"})
        assert kept in {g["key"] for g in groups}
        listed = http("GET", f"{new.url}/api/v1/alerts")[1]["alerts"]
        fps = {a["labels"]["alertname"]: a["fingerprint"] for a in listed}
        assert fps["Kept"] == fingerprint({"alertname": "Kept", **labels})
        shown = http("GET", f"{new.url}/api/v1/alert-groups/{kept}")[1]
        assert [m["fingerprint"] for m in shown["members"]] == [fps["Kept"]]
        assert shown["notifications"][0]["alert_group"] == kept
        status, body = http(
            "POST", f"{new.url}{WEBHOOK}", payload(labelled(alert_json("Kept"), labels))
        )
        assert (status, body["duplicates"]) == (200, 1)  # the same alert, under its new key
    finally:
        new.stop()


# HTTPS between AZs (peers over https, certificates that do not verify): tests/test_tls.py


async def test_bytes_after_a_complete_gzip_body_are_a_400(start: Callable[..., Any]) -> None:
    client = await start()
    zipped = gzip.compress(json.dumps(payload(alert_json("Tail"))).encode())
    response = await client.post(
        WEBHOOK, data=zipped + b"garbage", headers={**JSON_TYPE, "Content-Encoding": "gzip"}
    )
    await answer(response, 400)
    assert await count(client, "alerts") == 0
