"""`[templates] time_zone`: every time a person reads is in that zone, and says which zone.

A team in Beijing that reads "07:50 UTC" at 3 a.m. misreads it; with time_zone =
"Asia/Shanghai" the same message says "15:50 CST". Checked for every built-in template in
both languages, the watchdog's own texts, the config check and the wiring of serve and
send-test.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from builders import make_config
from fake_wecom import T0, alert, group, message
from monitor_manager import keys
from monitor_manager.app import create_app
from monitor_manager.clock import format_time, time_zone
from monitor_manager.config import ConfigError, HeartbeatConfig, WatchdogConfig, parse_config
from monitor_manager.deliver.render import Renderer
from monitor_manager.watch.watchdog import Watchdog

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEMPLATES = (
    "subject.txt",
    "text.txt",
    "email.html",
    "wechat.md",
    "wechat.txt",
    "dingtalk.md",
    "dingtalk.txt",
    "feishu.md",
    "feishu.txt",
    "feishu_post.txt",
)
# A time as the templates write it: "2027-01-15 07:50:00 UTC" or "01-15 07:50 UTC".
SHOWN_TIME = re.compile(
    r"(?:(\d{4})-)?(\d{2})-(\d{2}) (\d{2}):(\d{2})(?::(\d{2}))? ([A-Z]{2,5}|[+-]\d{2}:\d{2})\b"
)


def shown_times(text: str) -> list[tuple[dt.datetime, str]]:
    """Every time a rendered message shows, as (wall time, the zone's name)."""
    out = []
    for m in SHOWN_TIME.finditer(text):
        year, month, day, hour, minute, second, zone = m.groups()
        wall = dt.datetime(
            int(year or 2027), int(month), int(day), int(hour), int(minute), int(second or 0)
        )
        out.append((wall, zone))
    return out


def messages() -> dict[str, Any]:
    """A change (one alert firing, one resolved) and a storm digest of two groups."""
    change = group("g1", alert(1), alert(2, "resolved"))
    other = group("g2", alert(3, "resolved"), alertname="QueueStuck")
    return {"change": message(change), "digest": message(change, other, kind="digest")}


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("kind", ["change", "digest"])
def test_a_message_for_beijing_shows_every_time_eight_hours_later_and_names_the_zone(
    language: str, template: str, kind: str
) -> None:
    msg = messages()[kind]
    in_utc = Renderer(language, zone=dt.UTC).render(template, msg)
    in_beijing = Renderer(language, zone=SHANGHAI).render(template, msg)

    utc_times, beijing_times = shown_times(in_utc), shown_times(in_beijing)
    assert len(beijing_times) == len(utc_times)
    assert "UTC" not in in_beijing
    if template == "subject.txt":
        assert utc_times == [] and in_beijing == in_utc  # subjects show no times
        return
    assert utc_times, f"{template} shows no time at all"
    assert {zone for _, zone in utc_times} == {"UTC"}
    assert {zone for _, zone in beijing_times} == {"CST"}
    for (utc_wall, _), (beijing_wall, _) in zip(utc_times, beijing_times, strict=True):
        assert beijing_wall - utc_wall == dt.timedelta(hours=8)


def test_the_alert_start_reads_as_beijing_afternoon_in_both_languages() -> None:
    # T0 - 600 is 2027-01-15 07:50 UTC, 15:50 in Beijing.
    en = Renderer("en", zone=SHANGHAI).render("text.txt", message())
    zh = Renderer("zh", zone=SHANGHAI).render("wechat.md", message())
    assert "Started: 2027-01-15 15:50:00 CST" in en
    assert "开始时间 2027-01-15 15:50:00 CST" in zh


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Asia/Shanghai", "2027-01-15 16:00:00 CST"),
        ("UTC", "2027-01-15 08:00:00 UTC"),
        ("Asia/Singapore", "2027-01-15 16:00:00 +08:00"),  # no abbreviation: the offset
        ("America/New_York", "2027-01-15 03:00:00 EST"),
        ("Asia/Kolkata", "2027-01-15 13:30:00 IST"),
    ],
)
def test_format_time_names_the_zone_or_its_offset(zone: str, expected: str) -> None:
    assert format_time(T0, time_zone(zone)) == expected


def test_format_time_in_summer_follows_daylight_saving_time() -> None:
    july = T0 + 181 * 86400  # 2027-07-15
    assert format_time(july, time_zone("America/New_York")) == "2027-07-15 04:00:00 EDT"


def test_an_empty_time_zone_is_the_hosts_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert time_zone("") is None
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert format_time(T0, None) == "2027-01-15 16:00:00 CST"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_format_time_keeps_a_literal_percent_z_and_shows_nothing_for_no_time() -> None:
    assert format_time(T0, SHANGHAI, "%H:%M %Z (%%Z)") == "16:00 CST (%Z)"
    assert format_time(None, SHANGHAI) == ""


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_watchdog_says_in_the_configured_zone_when_it_started_waiting(
    language: str,
) -> None:
    config = make_config(
        templates={"time_zone": "Asia/Shanghai", "language": language},
        watchdog=WatchdogConfig(
            heartbeats=(HeartbeatConfig("prometheus-az1", {"alertname": "DeadMansSwitch"}),)
        ),
    )
    watchdog = Watchdog(config, lambda: T0, is_firing=lambda labels: False)
    [missing] = watchdog.check(T0 + 3600)
    description = missing.annotations["description"]
    assert "2027-01-15 16:00:00 CST" in description and "UTC" not in description


def test_an_override_from_release_1_with_a_literal_utc_names_the_zone_instead(
    tmp_path: Path,
) -> None:
    (tmp_path / "text.txt").write_text('{{ message.created_at|time("%H:%M UTC") }}')
    assert Renderer("en", tmp_path, zone=SHANGHAI).render("text.txt", message()) == "16:00 CST"


def test_an_unknown_time_zone_is_a_config_error_naming_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"templates": {"time_zone": "Asia/Beijing"}}, env={})
    [problem] = caught.value.problems
    assert problem.startswith('templates.time_zone: unknown time zone "Asia/Beijing"')
    assert parse_config({"templates": {"time_zone": "Asia/Shanghai"}}, env={}).templates.zone == (
        SHANGHAI
    )
    assert parse_config({}, env={}).templates.time_zone == ""  # default: the host's zone


def test_serve_renders_in_the_configured_zone(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, templates={"time_zone": "Asia/Shanghai"}))
    assert app[keys.RENDERER].zone == SHANGHAI


def test_send_test_renders_in_the_configured_zone(tmp_path: Path) -> None:
    config = tmp_path / "mm.toml"
    config.write_text(
        '[templates]\ntime_zone = "Asia/Shanghai"\n[channels.console]\ntype = "console"\n'
        '[[contact_groups]]\nname = "default"\nchannels = ["console"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "monitor_manager", "send-test", "--config", str(config)]
        + ["--group", "default"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert " CST" in result.stdout and " UTC" not in result.stdout
