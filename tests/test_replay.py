"""`monitor-manager replay`: what a recording replays to is what the live service decided.

The main test runs the real app with `[server] record` on a manual clock, posts traffic over
several minutes (a storm, a duplicate from a second Alertmanager, a heartbeat, resolutions),
ticks every second and delivers through console channels as the service does; then it replays
the recording the app wrote and compares message by message: time, contact group, channels,
kind, status, alert groups, and the subjects the console printed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builders import T0, alert_json, make_config, payload, routes
from monitor_manager import keys, replay
from monitor_manager.app import create_app
from monitor_manager.channels.console import ConsoleSettings
from monitor_manager.cli import main
from monitor_manager.clock import ManualClock, iso
from monitor_manager.config import (
    ChannelConfig,
    Config,
    ContactGroupConfig,
    HeartbeatConfig,
    MemberConfig,
)
from monitor_manager.ingest.record import record_line

SEPARATOR = "\n" + "-" * 72 + "\n"


def traffic_config(tmp_path: Path, record: Path | None = None) -> Config:
    console = ConsoleSettings()
    return make_config(
        tmp_path,
        server={"record": str(record) if record else "", "instance": "mm-test"},
        convergence={
            "group_by": ("alertname", "cluster"),
            "group_wait": 30.0,
            "group_interval": 60.0,
        },
        storm={"threshold": 2, "window": 60.0},
        channels=(
            ChannelConfig("console", "console", console),
            ChannelConfig("pager", "console", console),
        ),
        contact_groups=(
            ContactGroupConfig("ops", ("console",), (MemberConfig("Ops", "ops@example.com"),)),
            ContactGroupConfig(
                "dba", ("console", "pager"), (MemberConfig("DBA", "dba@example.com"),)
            ),
        ),
        routing={"default_groups": ("ops",)},
        routes=routes({"groups": ("dba",), "match": {"team": "db"}}),
        watchdog={
            "groups": ("ops",),
            "heartbeats": (
                HeartbeatConfig("prom", {"alertname": "DeadMansSwitch"}, timeout=600.0),
            ),
        },
    )


def am(url: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return payload(*alerts, externalURL=url)


AM1, AM2 = "http://am1:9093", "http://am2:9093"
# Seconds after T0 -> payloads posted then, as two Alertmanagers would.
TRAFFIC: dict[int, list[dict[str, Any]]] = {
    0: [
        am(
            AM1,
            alert_json("HighLatency", cluster="prod", instance="web1"),
            alert_json("DeadMansSwitch"),
        )
    ],
    5: [am(AM1, alert_json("DiskFull", cluster="prod", team="db", instance="db1"))],
    10: [am(AM2, alert_json("HighLatency", cluster="prod", instance="web1"))],  # a duplicate
    20: [am(AM1, alert_json(f"Queue{i}", cluster="prod")) for i in range(4)],  # a storm for ops
    45: [am(AM1, alert_json("HighLatency", cluster="prod", instance="web2"))],  # joins the group
    90: [
        am(
            AM1,
            alert_json("HighLatency", "resolved", ends=T0 + 88, cluster="prod", instance="web1"),
            alert_json("HighLatency", "resolved", ends=T0 + 88, cluster="prod", instance="web2"),
        )
    ],
    200: [
        am(
            AM1,
            alert_json(
                "DiskFull", "resolved", ends=T0 + 199, cluster="prod", team="db", instance="db1"
            ),
            alert_json("DeadMansSwitch"),
        ),
    ],
}
END = 400


async def run_live(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> tuple[Path, list[Any], str]:
    """The service, second by second: (its recording, its notifications, its console output)."""
    tmp_path.mkdir()
    record = tmp_path / "webhooks.jsonl"
    clock = ManualClock(T0)
    stdout = io.StringIO()
    app = create_app(traffic_config(tmp_path, record), clock=clock, stdout=stdout, scheduler=False)
    client = await aiohttp_client(app)
    pipeline, outbox = app[keys.PIPELINE], app[keys.OUTBOX]
    try:
        for second in range(END + 1):
            clock.now = T0 + second
            await pipeline.tick()  # the timers first, as replay runs what fell due before `at`
            await pipeline.watch()
            for body in TRAFFIC.get(second, []):
                response = await client.post("/webhook/alertmanager", json=body)
                assert response.status == 200, await response.text()
            # What a payload made due at once (a group past group_interval) is decided by the
            # next 0.2 s tick live: within this second.
            await pipeline.tick()
            await outbox.drain()
        response = await client.get("/api/v1/notifications?limit=1000")
        notifications = (await response.json())["notifications"]
    finally:
        await client.close()  # writes what the recorder holds
    return record, notifications, stdout.getvalue()


def console_subjects(output: str) -> Counter[str]:
    return Counter(block.split("\n", 1)[0] for block in output.split(SEPARATOR) if block.strip())


async def test_a_replayed_recording_decides_what_the_live_service_decided(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    record, notifications, output = await run_live(tmp_path / "live", aiohttp_client)
    sent = sorted(
        (n for n in notifications if n["deliveries"]), key=lambda n: (n["created_at"], n["id"])
    )
    live = [
        (
            n["created_at"],
            n["contact_group"],
            tuple(d["channel"] for d in n["deliveries"]),
            n["kind"],
            n["status"],
            tuple(n["alert_groups"]),
            n["alerts"],
        )
        for n in sent
    ]
    assert len(record.read_text().splitlines()) == sum(len(p) for p in TRAFFIC.values())

    skipped: list[str] = []
    config = traffic_config(tmp_path / "replay")
    result = await replay.replay(config, replay.read_recording([record], skipped))
    assert skipped == []
    replayed = [
        (iso(m.at), m.contact_group, m.channels, m.kind, m.status, m.alert_groups, m.alerts)
        for m in result.messages
    ]
    assert replayed == live
    # The subjects: what the console channels printed, once per channel of each message.
    subjects = Counter(m.subject for m in result.messages for _ in m.channels)
    assert subjects == console_subjects(output)
    # The traffic was what it claims: a storm digest, the resolutions, no heartbeat message.
    kinds = Counter(m.kind for m in result.messages)
    assert kinds == {"group": 6, "digest": 1}, [m.subject for m in result.messages]
    assert not any("DeadMansSwitch" in m.subject for m in result.messages)
    assert any(m.subject.startswith("[RESOLVED] DiskFull") for m in result.messages)
    assert (result.payloads, result.alerts) == (10, 13)
    # Nothing of the config's own store was touched.
    assert not (tmp_path / "replay" / "mm.db").exists()


async def test_heartbeat_gaps_page_only_with_watchdog(tmp_path: Path) -> None:
    config = traffic_config(tmp_path)
    beat = payload(alert_json("DeadMansSwitch"))
    lines = [record_line(T0, json.dumps(beat).encode(), beat)]
    lines.append(record_line(T0 + 3600, json.dumps(beat).encode(), beat))  # an hour of silence
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"".join(lines))

    quiet = await replay.replay(config, replay.read_recording([path], []))
    assert quiet.messages == []
    watched = await replay.replay(config, replay.read_recording([path], []), watchdog=True)
    pages = [(m.at - T0, m.contact_group, m.subject) for m in watched.messages]
    # Missing at its 10-minute deadline (paged at once: no group_wait), resolved by the next.
    assert pages[0] == (600.0, "ops", "[FIRING:1] HeartbeatMissing")
    assert pages[1][0] >= 3600 and pages[1][2] == "[RESOLVED] HeartbeatMissing"
    assert len(pages) == 2


async def test_a_day_of_quiet_is_crossed_in_jumps_and_repeats_are_replayed(
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(
        traffic_config(tmp_path),
        convergence=dataclasses.replace(
            traffic_config(tmp_path).convergence, repeat_interval=4 * 3600.0
        ),
    )
    firing = payload(alert_json("Stuck", cluster="prod"))
    lines = [record_line(T0, json.dumps(firing).encode(), firing)]
    # Re-sent by Alertmanager for a day (a duplicate each time), then resolved.
    lines += [record_line(T0 + h * 3600, json.dumps(firing).encode(), firing) for h in range(1, 25)]
    resolved = payload(alert_json("Stuck", "resolved", ends=T0 + 86400, cluster="prod"))
    lines.append(record_line(T0 + 86400 + 60, json.dumps(resolved).encode(), resolved))
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"".join(lines))
    result = await replay.replay(config, replay.read_recording([path], []))
    times = [(m.at - T0, m.subject) for m in result.messages]
    first = [(30.0, "[FIRING:1] Stuck prod")]
    repeats = [(30.0 + k * 4 * 3600, "[FIRING:1] Stuck prod") for k in range(1, 7)]
    # The resolution (received at 86460 s) waits out group_interval after the last repeat.
    assert times == first + repeats + [(86430 + 60.0, "[RESOLVED] Stuck prod")]


# -- the command -------------------------------------------------------------------------------


CONFIG_TOML = """
[server]
instance = "mm-test"
[storage]
path = "{db}"
[convergence]
group_wait = "30s"
[templates]
time_zone = "Asia/Shanghai"
[channels.console]
type = "console"
[[contact_groups]]
name = "default"
channels = ["console"]
"""


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "mm.toml"
    config.write_text(CONFIG_TOML.format(db=tmp_path / "live.db"))
    lines = []
    for minute in range(3):
        body = payload(alert_json(f"Alert{minute}", cluster="prod"))
        lines.append(record_line(T0 + 60 * minute, json.dumps(body).encode(), body))
    lines.insert(1, b"not json\n")
    rotated, current = tmp_path / "rec.jsonl.1", tmp_path / "rec.jsonl"
    rotated.write_bytes(b"".join(lines[:2]))
    current.write_bytes(b"".join(lines[2:]))
    return config, rotated


def test_replay_prints_each_message_time_group_channels_and_subject(
    recorded: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, rotated = recorded
    current = rotated.with_suffix("")
    assert main(["replay", "--config", str(config), str(rotated), str(current)]) == 0
    out, err = capsys.readouterr()
    # T0 is 2027-01-15 08:00:00 UTC, 16:00 in Shanghai; each alert waits group_wait (30 s).
    assert out.splitlines() == [
        "2027-01-15 16:00:30 CST  default [console]  [FIRING:1] Alert0 prod",
        "2027-01-15 16:01:30 CST  default [console]  [FIRING:1] Alert1 prod",
        "2027-01-15 16:02:30 CST  default [console]  [FIRING:1] Alert2 prod",
    ]
    assert f"skipped {rotated}:2: not JSON" in err
    assert re.search(
        r"replayed 3 payloads \(3 alerts, 1 lines skipped\) in [\d.]+s: 3 messages", err
    )
    assert not (config.parent / "live.db").exists()  # the config's store was never opened


def test_replay_json_is_one_object_per_message(
    recorded: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, rotated = recorded
    assert main(["replay", "--config", str(config), "--format", "json", str(rotated)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "at": iso(T0 + 30),
            "contact_group": "default",
            "channels": ["console"],
            "subject": "[FIRING:1] Alert0 prod",
            "kind": "group",
            "status": "firing",
            "alert_groups": [json.loads(lines[0])["alert_groups"][0]],
            "alerts": 1,
        }
    ]


def test_replay_summary_counts_per_contact_group_and_hour(
    recorded: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, rotated = recorded
    current = rotated.with_suffix("")
    assert main(["replay", "--config", str(config), "--summary", str(rotated), str(current)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("3 messages for 3 payloads (3 alerts), 2027-01-15 16:00")
    assert "  default       3" in out
    assert "  2027-01-15 16:00 CST       3  ########################################" in out
    assert (
        main(["replay", "--config", str(config), "--summary", "--format", "json", str(current)])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["messages"] == 2 and data["contact_groups"] == {"default": 2}
    assert data["hours"] == [{"hour": "2027-01-15T08:00:00.000Z", "messages": 2}]


def test_replay_of_a_missing_file_exits_2(
    recorded: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, rotated = recorded
    assert main(["replay", "--config", str(config), str(rotated.parent / "nope.jsonl")]) == 2
    assert "nope.jsonl: cannot read the recording" in capsys.readouterr().err
