"""The daily report (`[report]`): its figures, its text in both languages and every channel's
format, its size (one WeCom message), its schedule, and its key in the notification log."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils

from builders import T0, incoming, make_config
from harness import OutboxHarness
from monitor_manager.app import create_app
from monitor_manager.channels import REGISTRY, ChannelContext
from monitor_manager.channels.text_parts import utf8_len
from monitor_manager.clock import ManualClock, iso
from monitor_manager.cluster.ha import Entry, PeerMessage
from monitor_manager.config import (
    Config,
    parse_config,
)
from monitor_manager.deliver.outbox import Outbox, log_entry, log_key
from monitor_manager.deliver.render import Renderer
from monitor_manager.metrics import Metrics
from monitor_manager.models import Message, map_text
from monitor_manager.store import migrations
from monitor_manager.store.deliveries import Delivery
from monitor_manager.store.notifications import content_hash
from monitor_manager.watch.report import (
    Reporter,
    build,
    last_fire,
    stored_figures,
    trigger_of,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
WECOM_LIMIT = 2048  # bytes of one WeCom application message (and a robot's text message)


def report_config(tmp_path: Path, **report: Any) -> Config:
    return make_config(
        tmp_path,
        report={"schedule": "0 9 * * *", "time_zone": "Asia/Shanghai", **report},
        server={"instance": "mm-az1", "external_url": "http://mm-az1.example.com:9095"},
    )


# -- the figures, from the store -------------------------------------------------------------------


def test_stored_figures_count_the_period_and_leave_internal_alerts_and_peers_sends_out(
    tmp_path: Path,
) -> None:
    db = sqlite_utils.Database(tmp_path / "f.db")
    migrations.apply(db)
    start, end = T0, T0 + 86400
    alerts = [
        # alertname, status, starts_at, ends_at, source
        ("Disk", "firing", start + 10, None, "am"),
        ("Disk", "resolved", start + 20, start + 30, "am"),  # started and resolved: both
        ("Disk", "resolved", start - 500, start + 40, "am"),  # resolved only
        ("Load", "firing", start - 10, None, "am"),  # before the period: not counted
        ("Load", "firing", end + 1, None, "am"),  # after it
        ("Net", "firing", start + 50, None, "am"),
        ("HeartbeatMissing", "firing", start + 60, None, "monitor-manager"),  # internal
    ]
    for i, (name, status, starts, ends, source) in enumerate(alerts):
        db.execute(
            "INSERT INTO alerts (id, fingerprint, labels, annotations, status, starts_at, "
            "ends_at, source, updated_at, memberships, seen_at) "
            "VALUES (?, ?, ?, '{}', ?, ?, ?, ?, ?, '{}', ?)",
            (
                i,
                f"{i:016x}",
                json.dumps({"alertname": name}),
                status,
                starts,
                ends,
                source,
                end,
                end,
            ),
        )
    deliveries = [
        # channel, state, delivered_at, updated_at, superseded_by, note
        ("mail", "delivered", start + 1, start + 1, None, ""),
        ("mail", "delivered", start + 2, start + 2, None, "never reached x: refused"),
        ("mail", "delivered", start + 3, start + 3, 7, ""),  # superseded: not sent
        ("mail", "delivered", start + 4, start + 4, None, "not sent here: peer mm-b already"),
        ("mail", "failed", None, start + 5, None, ""),
        ("mail", "delivered", start - 1, start - 1, None, ""),  # the day before
        ("wecom", "retrying", None, start + 6, None, ""),  # neither yet
    ]
    for i, (channel, state, delivered, updated, by, note) in enumerate(deliveries):
        db.execute(
            "INSERT INTO deliveries (id, notification_id, channel, state, created_at, updated_at, "
            "delivered_at, superseded_by, note) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
            (i, channel, state, updated, updated, delivered, by, note),
        )
    db.conn.commit()
    figures = stored_figures(db.conn, start, end)
    assert figures == {
        "started": 3,
        "resolved": 2,
        "noisiest": [("Disk", 3), ("Net", 1)],
        "channels": {"mail": (2, 1), "wecom": (0, 0)},
    }


# -- the text --------------------------------------------------------------------------------------


async def test_the_report_after_a_day_of_traffic(tmp_path: Path) -> None:
    config = report_config(tmp_path)
    harness = OutboxHarness(config)
    harness.clock.now = dt.datetime(2027, 1, 14, 9, 0, tzinfo=SHANGHAI).timestamp()
    await harness.start()
    try:
        now = harness.clock.now
        await harness.push(
            incoming("HighLatency", starts=now, cluster="prod", instance="web1"),
            incoming("HighLatency", starts=now, cluster="prod", instance="web2"),
            incoming("DiskFull", starts=now, cluster="prod", instance="db1"),
        )
        await harness.step(60)  # group_wait: both groups go out through the console
        await harness.push(
            incoming(
                "DiskFull", "resolved", starts=now, ends=now + 120, cluster="prod", instance="db1"
            )
        )
        await harness.step(600)
        # The next morning at 09:00:20 Shanghai time: the report for the day before.
        harness.clock.now = dt.datetime(2027, 1, 15, 9, 0, 20, tzinfo=SHANGHAI).timestamp()
        reporter = Reporter(config, harness.core, harness.clock)  # type: ignore[arg-type]
        [message] = await reporter.send()
        await harness.outbox.drain()
    finally:
        await harness.stop()
    report = message.extra["report"]
    assert message.kind == "report" and message.contact_group == "default"
    assert report["period_end"] == "2027-01-15T01:00:00.000Z"
    printed = harness.stdout.getvalue().split("-" * 72)[-2].strip()
    assert printed == "\n".join(
        [
            "[REPORT] Monitor Manager daily report 2027-01-15",
            "Monitor Manager daily report, 2027-01-14 09:00 – 2027-01-15 09:00 CST (mm-az1)",
            "",
            "Alerts: 3 started firing, 1 resolved; 2 firing now",
            "Notifications (sent / failed):",
            "  console: 3 / 0",
            "Noisiest alert names (alerts started or resolved):",
            "  1. HighLatency: 2",
            "  2. DiskFull: 1",
            "Open alert groups: 1 (default 1)",
            "Heartbeats: none configured",
            "Peers: none (a single instance)",
            "Console: http://mm-az1.example.com:9095",
        ]
    )


def worst_case(language: str) -> tuple[Config, Message]:
    """A report as long as the bounds let it be: every list full, every name long and in
    three-byte characters, every count ten digits."""
    long_cjk = "监控告警名称" * 20
    channel_names = [f"channel-{'x' * 50}-{i}" for i in range(8)]
    config = parse_config(
        {
            "server": {
                "instance": "实例" * 40,
                "external_url": "https://monitor-manager.az1.example.com/" + "p" * 59,  # 100
            },
            "report": {"schedule": "0 9 * * *", "language": language},
            "channels": {name: {"type": "console"} for name in channel_names},
            "contact_groups": [
                {"name": f"{long_cjk}{i}", "channels": channel_names} for i in range(5)
            ],
            "routing": {"default_groups": [f"{long_cjk}0"]},
            "watchdog": {
                "heartbeats": [
                    {"name": f"{long_cjk}{i}", "match": {"alertname": f"DMS{i}"}, "timeout": "15m"}
                    for i in range(5)
                ]
            },
            "peers": [
                {"name": f"{long_cjk}{i}", "url": f"http://10.0.0.{i}:9095"} for i in range(5)
            ],
            "ha": {"token": "t"},
        },
        env={},
    )
    big = 9_999_999_999
    alerts = {f"fp{i}": SimpleNamespace(status="firing") for i in range(10)}
    groups = {
        f"g{i}": SimpleNamespace(contact_group=f"{long_cjk}{i}", members={f"fp{i}": "firing"})
        for i in range(5)
    }
    core = SimpleNamespace(
        pipeline=SimpleNamespace(
            convergence=SimpleNamespace(alerts=alerts, groups=groups, internal=set()),
            watchdog=SimpleNamespace(
                heartbeats=[
                    SimpleNamespace(config=b, state="missing") for b in config.watchdog.heartbeats
                ]
            ),
        ),
        peers=SimpleNamespace(states={p.name: SimpleNamespace(failures=99) for p in config.peers}),
    )
    stored = {
        "started": big,
        "resolved": big,
        "noisiest": [(f"{long_cjk}{i}", big) for i in range(10)],
        "channels": {name: (big, big) for name in channel_names},
    }
    content = build(config, core, stored, T0, T0)  # type: ignore[arg-type]
    message = Message(
        1,
        "report",
        f"{long_cjk}0",
        (),
        (),
        T0,
        "mm-az1",
        config.server.base_url,
        {"report": content},
    )
    return config, message


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_longest_report_is_one_wecom_message_in_every_format(language: str) -> None:
    config, message = worst_case(language)
    renderer = Renderer("en", zone=dt.UTC)  # the report's own language wins
    ctx = ChannelContext(None, renderer, ManualClock(T0), io.StringIO())
    kinds: dict[str, dict[str, Any]] = {
        "wechat": {"corp_id": "ww1", "agent_id": 1, "secret": "s"},
        "wechat_robot": {"webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"},
    }
    for kind, settings in kinds.items():
        for msgtype in ("markdown", "text"):
            values = {**settings, "msgtype": msgtype}
            channel: Any = REGISTRY[kind](kind, REGISTRY[kind].Settings(**values), ctx)
            # WeCom application messages split at 2048 bytes: one part means one message.
            split = channel._contents if kind == "wechat" else channel.contents
            [content] = split(message)
            assert utf8_len(content) <= WECOM_LIMIT, (kind, msgtype, utf8_len(content), content)
            assert "Monitor Manager" in content  # robots' keyword
            assert ("日报" in content) == (language == "zh")
            assert "…" in content and "10." in content  # names cut, ten listed
            assert "p" * 59 in content  # the link, at its longest
    for name in ("subject.txt", "text.txt", "email.html"):
        text = renderer.render(name, message)
        assert ("日报" in text) == (language == "zh"), name


def test_alert_names_in_a_report_are_neutralised_for_chat() -> None:
    _, message = worst_case("en")
    report = dict(message.extra["report"], noisiest=[{"name": "<@all> [x](http://e)", "count": 1}])
    hostile = dataclasses.replace(message, extra={"report": report})
    mapped = map_text(hostile, lambda v: v.replace("<", "＜").replace("[", "［"))
    assert mapped.extra["report"]["noisiest"][0]["name"] == "＜@all> ［x](http://e)"
    assert hostile.extra["report"]["noisiest"][0]["name"] == "<@all> [x](http://e)"  # a copy


# -- the schedule ------------------------------------------------------------------------------


def test_the_schedule_fires_in_its_zone_with_crontab_weekdays(tmp_path: Path) -> None:
    config = report_config(tmp_path, schedule="30 8 * * 1-5")  # weekdays at 08:30
    trigger = trigger_of(config)
    saturday = dt.datetime(2027, 1, 16, 12, 0, tzinfo=SHANGHAI)
    fire = trigger.get_next_fire_time(None, saturday)
    assert fire == dt.datetime(2027, 1, 18, 8, 30, tzinfo=SHANGHAI)  # Monday, not Sunday
    assert fire.astimezone(dt.UTC).hour == 0 and fire.astimezone(dt.UTC).minute == 30
    # The period a run reports on is the fire time before it, however late it ran.
    monday_late = dt.datetime(2027, 1, 18, 8, 59, 59, tzinfo=SHANGHAI).timestamp()
    assert last_fire(trigger, monday_late, SHANGHAI) == fire.timestamp()
    friday = dt.datetime(2027, 1, 15, 8, 30, tzinfo=SHANGHAI).timestamp()
    assert last_fire(trigger, monday_late - 3600, SHANGHAI) == friday  # over the weekend
    every_minute = trigger_of(report_config(tmp_path, schedule="* * * * *"))
    assert last_fire(every_minute, T0 + 59.9, SHANGHAI) == T0  # T0 is on a minute


async def test_a_run_long_after_its_time_sends_nothing(tmp_path: Path) -> None:
    config = report_config(tmp_path)
    harness = OutboxHarness(config)
    harness.clock.now = dt.datetime(2027, 1, 15, 10, 30, tzinfo=SHANGHAI).timestamp()
    await harness.start()
    try:
        reporter = Reporter(config, harness.core, harness.clock)  # type: ignore[arg-type]
        assert await reporter.send() == []  # 90 minutes after 09:00: past the grace
        harness.clock.now -= 3600
        assert len(await reporter.send()) == 1
    finally:
        await harness.stop()


async def test_the_app_schedules_the_report_job(tmp_path: Path, aiohttp_client: Any) -> None:
    app = create_app(report_config(tmp_path, schedule="0 9 * * 1"), clock=ManualClock(T0))
    client = await aiohttp_client(app)
    try:
        from monitor_manager import keys

        job = app[keys.SCHEDULER].get_job("report")
        fire = job.trigger.get_next_fire_time(None, dt.datetime(2027, 1, 15, 12, tzinfo=SHANGHAI))
        assert fire == dt.datetime(2027, 1, 18, 9, 0, tzinfo=SHANGHAI)
        assert job.misfire_grace_time == 3600 and job.coalesce
    finally:
        await client.close()
    app = create_app(make_config(tmp_path), clock=ManualClock(T0))
    client = await aiohttp_client(app)
    try:
        assert app[keys.SCHEDULER].get_job("report") is None  # no schedule: no report
    finally:
        await client.close()


def test_report_settings_are_checked(tmp_path: Path) -> None:
    from monitor_manager.config import ConfigError, config_warnings

    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "report": {
                    "schedule": "0 9 * *",
                    "time_zone": "Asia/Nowhere",
                    "groups": ["nobody"],
                    "language": "fr",
                }
            }
        )
    problems = "\n".join(caught.value.problems)
    assert "report.schedule:" in problems and "expected 5 fields" in problems
    assert 'report.time_zone: unknown time zone "Asia/Nowhere"' in problems
    assert 'report.groups: contact group "nobody" does not exist' in problems
    assert "report.language:" in problems
    quiet = parse_config({"report": {"groups": ["default"]}})
    assert any(w.startswith("report.schedule: empty") for w in config_warnings(quiet))


# -- once by the cluster ---------------------------------------------------------------------------


def report_message(instance: str, period_end: str, started: int) -> Message:
    content = {"period_end": period_end, "alerts": {"started": started}, "language": "en"}
    return Message(3, "report", "sre", (), (), T0, instance, "", {"report": content})


def test_every_instance_computes_the_same_log_entry_for_a_period() -> None:
    a = report_message("mm-a", iso(T0) or "", 10)
    b = report_message("mm-b", iso(T0) or "", 12)  # other figures: the same report
    later = report_message("mm-a", iso(T0 + 86400) or "", 10)
    assert content_hash(a) == content_hash(b) != content_hash(later)
    row = Delivery(1, 3, "mail", 0, T0, a, None, content_hash(a))
    assert log_key(row) == "report"
    entry = log_entry(row, T0, "mm-a")
    assert (entry.group_key, entry.v1_group_key, entry.v1_content_hash) == ("report", "", "")
    assert entry.as_v1() is None  # never told to a release-1 peer


async def test_a_peers_report_entry_is_accepted_and_suppresses_ours(tmp_path: Path) -> None:
    config = dataclasses.replace(
        make_config(tmp_path, ha={"token": "t"}),
        peers=(
            parse_config(
                {"peers": [{"name": "mm-b", "url": "http://127.0.0.1:1"}], "ha": {"token": "t"}},
                env={},
            ).peers
        ),
    )
    harness = OutboxHarness(config)
    await harness.start()
    try:
        ha = harness.core.ha  # type: ignore[union-attr]
        message = report_message("mm-a", iso(T0) or "", 10)
        theirs = Entry("default", "report", "console", content_hash(message), T0, "mm-b")
        ops, accepted, rejected = ha.accept(PeerMessage(2, "mm-b", [theirs]), pushed=True)
        assert (accepted, rejected) == (1, 0)
        mine = Delivery(
            1,
            3,
            "console",
            0,
            T0,
            dataclasses.replace(message, contact_group="default"),
            None,
            content_hash(message),
        )
        assert ha.sent_by_peer(log_entry(mine, T0, "mm-a"), T0, newer_supersedes=False) == "mm-b"
    finally:
        await harness.stop()


def test_a_report_is_never_merged_into_a_digest_for_a_rate_limited_channel() -> None:
    group = Message(1, "group", "sre", (), (), T0)
    report = report_message("mm-a", iso(T0) or "", 1)
    robot = SimpleNamespace(merges_backlog=True)
    outbox = Outbox(None, {"robot": robot}, make_config().delivery, ManualClock(T0), Metrics())  # type: ignore[arg-type, dict-item]
    rows = [
        Delivery(1, 1, "robot", 0, T0, group, "g1"),
        Delivery(2, 3, "robot", 0, T0, report),
        Delivery(3, 4, "robot", 0, T0, dataclasses.replace(group, id=4), "g2"),
    ]
    batches = outbox._batches(rows)
    assert [[d.id for d in b] for b in batches] == [[1, 3], [2]]
