"""Maintenance windows: crontab schedules in a zone, window boundaries, weekdays, DST."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from monitor_manager.converge.maintenance import (
    MaintenanceError,
    MaintenanceWindow,
    cron_trigger,
    validate,
)
from monitor_manager.converge.matchers import Matcher

HOUR = 3600.0
BERLIN = "Europe/Berlin"


def at(zone: str, *fields: int) -> float:
    """Epoch seconds of a wall-clock time; `fold` as the 7th field picks the second pass."""
    y, mo, d, h, mi, *rest = fields
    fold = rest[0] if rest else 0
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone), fold=fold).timestamp()


def utc(*fields: int) -> float:
    return at("UTC", *fields)


def wall(ts: float | None, zone: str) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %z")


def window(
    schedule: str = "0 2 * * *",
    duration: float = HOUR,
    zone: str = "Asia/Shanghai",
    matchers: tuple[Matcher, ...] = (Matcher("cluster", "batch"),),
) -> MaintenanceWindow:
    return MaintenanceWindow("nightly-batch", matchers, schedule, duration, zone)


def starts(w: MaintenanceWindow, since: float, n: int) -> list[str | None]:
    out: list[str | None] = []
    t: float | None = since
    for _ in range(n):
        assert t is not None
        t = w.next_start(t)
        out.append(wall(t, w.time_zone))
    return out


# ------------------------------------------------------------------------------ boundaries


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2024, 5, 1, 17, 59), None),  # 01:59 in Shanghai
        (utc(2024, 5, 1, 18, 0), (utc(2024, 5, 1, 18, 0), utc(2024, 5, 1, 19, 0))),  # 02:00
        (utc(2024, 5, 1, 18, 59) + 59.999, (utc(2024, 5, 1, 18, 0), utc(2024, 5, 1, 19, 0))),
        (utc(2024, 5, 1, 19, 0), None),  # 03:00: the end is not in the window
        (utc(2024, 5, 2, 2, 0), None),  # 02:00 UTC is 10:00 in Shanghai
    ],
)
def test_a_window_runs_from_its_start_for_its_duration(
    now: float, expected: tuple[float, float] | None
) -> None:
    assert window().active_interval(now) == expected


def test_the_same_schedule_in_shanghai_and_in_utc_are_eight_hours_apart() -> None:
    shanghai, in_utc = window(zone="Asia/Shanghai"), window(zone="UTC")
    now = utc(2024, 5, 1, 18, 30)  # 02:30 in Shanghai, 18:30 in UTC
    assert shanghai.active_interval(now) == (utc(2024, 5, 1, 18, 0), utc(2024, 5, 1, 19, 0))
    assert in_utc.active_interval(now) is None
    assert in_utc.active_interval(utc(2024, 5, 2, 2, 30)) == (
        utc(2024, 5, 2, 2, 0),
        utc(2024, 5, 2, 3, 0),
    )
    assert shanghai.next_start(now) == utc(2024, 5, 2, 18, 0)
    assert in_utc.next_start(now) == utc(2024, 5, 2, 2, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2024, 5, 1, 17, 0), utc(2024, 5, 1, 18, 0)),
        (utc(2024, 5, 1, 18, 0), utc(2024, 5, 2, 18, 0)),  # strictly after: this one has begun
        (utc(2024, 5, 1, 18, 30), utc(2024, 5, 2, 18, 0)),
    ],
)
def test_next_start_is_the_next_occurrence(now: float, expected: float) -> None:
    assert window().next_start(now) == expected


@pytest.mark.parametrize(
    ("labels", "now", "muted"),
    [
        (
            {"cluster": "batch", "alertname": "JobSlow"},
            at("Asia/Shanghai", 2024, 5, 2, 2, 10),
            True,
        ),
        ({"cluster": "web"}, at("Asia/Shanghai", 2024, 5, 2, 2, 10), False),
        ({}, at("Asia/Shanghai", 2024, 5, 2, 2, 10), False),
        ({"cluster": "batch"}, at("Asia/Shanghai", 2024, 5, 2, 3, 10), False),
        ({"cluster": "batch"}, at("Asia/Shanghai", 2024, 5, 2, 1, 59), False),
    ],
)
def test_a_window_mutes_matching_alerts_while_it_runs(
    labels: dict[str, str], now: float, muted: bool
) -> None:
    assert window().mutes(labels, now) is muted


def test_mutes_stays_right_when_time_moves_back_and_forth() -> None:
    # mutes() remembers the span it last found; the answers must not depend on the order asked.
    w = window()
    times = [
        at("Asia/Shanghai", 2024, 5, d, h, m)
        for d in (1, 2, 3)
        for h in (1, 2, 3)
        for m in (0, 30, 59)
    ]
    expected = {t: window().active_interval(t) is not None for t in times}
    shuffled = times * 3
    random.Random(7).shuffle(shuffled)
    for t in shuffled:
        assert w.mutes({"cluster": "batch"}, t) is expected[t], wall(t, "Asia/Shanghai")


def test_a_start_every_minute_lasting_a_week_is_found_quickly() -> None:
    w = window("* * * * *", duration=7 * 86400, zone="UTC")
    now = utc(2024, 5, 1, 10, 30) + 42.5
    assert w.active_interval(now) == (utc(2024, 5, 1, 10, 30), utc(2024, 5, 8, 10, 30))


def test_overlapping_occurrences_report_the_latest() -> None:
    w = window("0 * * * *", duration=3 * HOUR, zone="UTC")  # hourly, lasting 3h
    assert w.active_interval(utc(2024, 5, 1, 10, 30)) == (
        utc(2024, 5, 1, 10, 0),
        utc(2024, 5, 1, 13, 0),
    )


@pytest.mark.parametrize(
    ("schedule", "duration", "zone"),
    [
        ("* * * * *", 6 * HOUR, "UTC"),
        ("*/7 * * * *", 5 * HOUR, BERLIN),
        ("0 * * * *", 26 * HOUR, BERLIN),
        ("30 2 * * *", 36 * HOUR, BERLIN),
        ("15 1,2,3 * * 0", 9 * 86400, BERLIN),
    ],
)
def test_active_interval_agrees_with_walking_every_start(
    schedule: str, duration: float, zone: str
) -> None:
    # The bisection over many starts must find what stepping through them one by one finds,
    # including across both DST changes.
    w = window(schedule, duration, zone)
    rng = random.Random(schedule)
    for base in (utc(2024, 3, 30, 0, 0), utc(2024, 10, 26, 0, 0)):
        for _ in range(15):
            now = base + rng.uniform(0, 3 * 86400)
            latest, t = None, w.next_start(now - duration)
            while t is not None and t <= now:
                latest, t = t, w.next_start(t)
            expected = None if latest is None else (latest, latest + duration)
            assert w.active_interval(now) == expected, wall(now, zone)


# ------------------------------------------------------------------------------ crontab fields


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("0 2 * * 0", ["Sun 2024-03-03", "Sun 2024-03-10", "Sun 2024-03-17"]),  # 0 is Sunday
        ("0 2 * * 7", ["Sun 2024-03-03", "Sun 2024-03-10", "Sun 2024-03-17"]),  # so is 7
        ("0 2 * * 1", ["Mon 2024-03-04", "Mon 2024-03-11", "Mon 2024-03-18"]),
        ("0 2 * * 1-5", ["Fri 2024-03-01", "Mon 2024-03-04", "Tue 2024-03-05"]),
        ("0 2 * * 5-7", ["Fri 2024-03-01", "Sat 2024-03-02", "Sun 2024-03-03"]),
        ("0 2 * * 0-1", ["Sun 2024-03-03", "Mon 2024-03-04", "Sun 2024-03-10"]),
        ("0 2 * * */3", ["Sat 2024-03-02", "Sun 2024-03-03", "Wed 2024-03-06"]),  # 0,3,6
        ("0 2 * * 1-5/2", ["Fri 2024-03-01", "Mon 2024-03-04", "Wed 2024-03-06"]),
        ("0 2 * * sat,sun", ["Sat 2024-03-02", "Sun 2024-03-03", "Sat 2024-03-09"]),
        ("0 2 * * sun-tue", ["Sun 2024-03-03", "Mon 2024-03-04", "Tue 2024-03-05"]),
        ("0 2 * * MON", ["Mon 2024-03-04", "Mon 2024-03-11", "Mon 2024-03-18"]),
        # day of month and weekday both given: either fires, as in cron
        ("0 2 15 * 1", ["Mon 2024-03-04", "Mon 2024-03-11", "Fri 2024-03-15"]),
        # one of them "*": the other alone decides
        ("0 2 15 * *", ["Fri 2024-03-15", "Mon 2024-04-15", "Wed 2024-05-15"]),
        # a field starting with "*" counts as unrestricted even with a step (cron's rule): both
        ("0 2 */10 * mon", ["Mon 2024-03-11", "Mon 2024-04-01", "Mon 2024-07-01"]),
        ("0 2 29 2 *", ["Thu 2024-02-29", "Tue 2028-02-29", "Sun 2032-02-29"]),
    ],
)
def test_crontab_fields_mean_what_they_mean_in_crontab(schedule: str, expected: list[str]) -> None:
    w = window(schedule, zone="UTC")
    since = utc(2024, 2, 28, 12, 0) if "29 2" in schedule else utc(2024, 2, 29, 3, 0)
    assert [s and s[:14] for s in starts(w, since, 3)] == expected


def test_cron_trigger_alone_reads_weekday_zero_as_sunday() -> None:
    trigger = cron_trigger("0 2 * * 0", dt.UTC)
    fire = trigger.get_next_fire_time(None, dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    assert fire is not None and fire.strftime("%A") == "Sunday"


# ------------------------------------------------------------------------------ DST


def test_a_fixed_start_in_the_skipped_spring_hour_happens_when_the_clock_jumps() -> None:
    # 31 March 2024, Europe/Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    w = window("30 2 * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 3, 29, 12, 0), 4) == [
        "Sat 2024-03-30 02:30 +0100",
        "Sun 2024-03-31 03:00 +0200",
        "Mon 2024-04-01 02:30 +0200",
        "Tue 2024-04-02 02:30 +0200",
    ]
    jump = utc(2024, 3, 31, 1, 0)
    for now, expected in [
        (jump - 1, None),
        (jump, (jump, jump + HOUR)),
        (jump + HOUR - 0.5, (jump, jump + HOUR)),  # found from a second before the jump
        (jump + HOUR, None),
    ]:
        assert w.active_interval(now) == expected, wall(now, BERLIN)
    assert w.next_start(at(BERLIN, 2024, 3, 31, 3, 10)) == at(BERLIN, 2024, 4, 1, 2, 30)


def test_fixed_starts_all_in_the_skipped_hour_start_once() -> None:
    w = window("0,30 2 * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 3, 30, 12, 0), 3) == [
        "Sun 2024-03-31 03:00 +0200",
        "Mon 2024-04-01 02:00 +0200",
        "Mon 2024-04-01 02:30 +0200",
    ]


def test_a_start_with_a_wildcard_field_does_not_happen_in_the_skipped_spring_hour() -> None:
    # "*/30 2": every half hour from 02:00 to 02:59, which the clock never shows that day.
    w = window("*/30 2 * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 3, 30, 0, 0), 3) == [
        "Sat 2024-03-30 02:00 +0100",
        "Sat 2024-03-30 02:30 +0100",
        "Mon 2024-04-01 02:00 +0200",
    ]


def test_an_hourly_start_does_not_happen_in_the_skipped_spring_hour() -> None:
    w = window("30 * * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 3, 31, 1, 0), 3) == [
        "Sun 2024-03-31 01:30 +0100",
        "Sun 2024-03-31 03:30 +0200",
        "Sun 2024-03-31 04:30 +0200",
    ]


def test_a_daily_start_keeps_its_wall_time_across_the_spring_change() -> None:
    w = window("0 1 * * *", zone=BERLIN)
    found = [w.next_start(at(BERLIN, 2024, 3, d, 0, 0)) for d in (30, 31)] + [
        w.next_start(at(BERLIN, 2024, 4, 1, 0, 0))
    ]
    got = [t for t in found if t is not None]
    assert len(got) == 3
    assert [wall(t, BERLIN) for t in got] == [
        "Sat 2024-03-30 01:00 +0100",
        "Sun 2024-03-31 01:00 +0100",
        "Mon 2024-04-01 01:00 +0200",
    ]
    assert [b - a for a, b in zip(got, got[1:], strict=False)] == [24 * HOUR, 23 * HOUR]


def test_a_fixed_start_in_the_repeated_autumn_hour_happens_once() -> None:
    # 27 October 2024, Europe/Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    w = window("30 2 * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 10, 26, 12, 0), 2) == [
        "Sun 2024-10-27 02:30 +0200",
        "Mon 2024-10-28 02:30 +0100",
    ]
    assert w.active_interval(at(BERLIN, 2024, 10, 27, 2, 15, 1)) == (
        at(BERLIN, 2024, 10, 27, 2, 30),
        at(BERLIN, 2024, 10, 27, 2, 30, 1),
    )
    assert w.active_interval(at(BERLIN, 2024, 10, 27, 2, 45, 1)) is None  # no second window


def test_an_hourly_start_happens_in_both_passes_of_the_repeated_hour() -> None:
    w = window("30 * * * *", zone=BERLIN)
    assert starts(w, at(BERLIN, 2024, 10, 27, 1, 45), 3) == [
        "Sun 2024-10-27 02:30 +0200",
        "Sun 2024-10-27 02:30 +0100",
        "Sun 2024-10-27 03:30 +0100",
    ]


def test_a_window_across_the_autumn_change_lasts_its_duration_in_real_time() -> None:
    # 01:30 CEST for 2h ends at 02:30 CET: the wall clock shows 1h, the clock ran 2h.
    w = window("30 1 * * *", duration=2 * HOUR, zone=BERLIN)
    start, end = at(BERLIN, 2024, 10, 27, 1, 30), at(BERLIN, 2024, 10, 27, 2, 30, 1)
    assert end - start == 2 * HOUR
    for now, expected in [
        (start - 60, None),
        (start, (start, end)),
        (at(BERLIN, 2024, 10, 27, 2, 45), (start, end)),  # first pass of 02:45
        (at(BERLIN, 2024, 10, 27, 2, 15, 1), (start, end)),  # second pass of 02:15
        (end, None),
    ]:
        assert w.active_interval(now) == expected, wall(now, BERLIN)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("schedule", "zone", "duration", "problems"),
    [
        ("0 2 * * *", "Asia/Shanghai", HOUR, []),
        ("0 2 * * *", "Asia/Shanghai", 10 * 86400, ["duration: 10d is longer than 7d"]),
        ("0 2 * * *", "Nowhere/City", HOUR, ["time_zone: unknown time zone 'Nowhere/City'"]),
        ("0 2 * * *", "Asia", HOUR, ["time_zone: unknown time zone 'Asia'"]),
        ("0 2 * * *", "", HOUR, ["time_zone: unknown time zone ''"]),
        ("0 2 * * *", "../../etc/passwd", HOUR, ["time_zone: unknown time zone"]),
        ("0 2 * * *", "UTC", 0, ["duration: must be longer than 0s"]),
        ("0 2 * * *", "UTC", -60, ["duration: must be longer than 0s"]),
        ("0 2 * *", "UTC", HOUR, ["schedule: '0 2 * *': expected 5 fields"]),
        ("@daily", "UTC", HOUR, ["schedule: '@daily': expected 5 fields"]),
        ("0 0 2 * * *", "UTC", HOUR, ["schedule: '0 0 2 * * *': expected 5 fields"]),
        ("61 2 * * *", "UTC", HOUR, ["schedule: '61 2 * * *': Error validating expression '61'"]),
        ("0 24 * * *", "UTC", HOUR, ["schedule: '0 24 * * *'"]),
        ("0 2 * 13 *", "UTC", HOUR, ["schedule: '0 2 * 13 *'"]),
        ("0 2 * * 8", "UTC", HOUR, ["schedule: '0 2 * * 8': weekday 8 is out of range"]),
        ("0 2 * * 1/2", "UTC", HOUR, ["schedule: '0 2 * * 1/2': weekday '1/2': a step needs"]),
        ("0 2 * * 5-1", "UTC", HOUR, ["a range goes from low to high"]),
        ("0 2 * * */0", "UTC", HOUR, ["the step must be at least 1"]),
        ("0 2 * * funday", "UTC", HOUR, ["is not a crontab weekday expression"]),
        ("0 2 * * fun", "UTC", HOUR, ["unknown weekday 'fun'"]),
        ("0 0 30 2 *", "UTC", HOUR, ["schedule: '0 0 30 2 *' never fires"]),
        ("x", "Nowhere", 0, ["time_zone:", "schedule:", "duration:"]),
    ],
)
def test_validate_names_each_problem(
    schedule: str, zone: str, duration: float, problems: list[str]
) -> None:
    found = validate(schedule, zone, duration)
    assert len(found) == len(problems), found
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want) or want in got, (got, want)


def test_a_window_longer_than_a_week_is_reported_but_allowed() -> None:
    w = window(duration=10 * 86400)
    assert w.active_interval(at("Asia/Shanghai", 2024, 5, 9, 12, 0)) is not None


def test_from_config_builds_the_window_of_the_spec_example() -> None:
    w = MaintenanceWindow.from_config(
        "nightly-batch", {"cluster": "batch"}, {}, "0 2 * * *", HOUR, "Asia/Shanghai"
    )
    assert w == MaintenanceWindow(
        "nightly-batch", (Matcher("cluster", "batch"),), "0 2 * * *", HOUR, "Asia/Shanghai"
    )
    assert w.mutes({"cluster": "batch"}, at("Asia/Shanghai", 2024, 5, 2, 2, 30))


@pytest.mark.parametrize(
    ("match", "match_re", "schedule", "problems"),
    [
        ({}, {}, "0 2 * * *", ["match: at least one matcher must not match the empty string"]),
        ({}, {"cluster": ".*"}, "0 2 * * *", ["match: at least one matcher"]),
        ({"1x": "y"}, {}, "0 2 * * *", ["match.1x: '1x' is not a valid label name"]),
        (
            {},
            {"env": "("},
            "0 2 * *",
            ["match_re.env: invalid regular expression", "schedule: '0 2 * *'"],
        ),
    ],
)
def test_from_config_lists_every_problem(
    match: dict[str, str], match_re: dict[str, str], schedule: str, problems: list[str]
) -> None:
    with pytest.raises(MaintenanceError) as info:
        MaintenanceWindow.from_config("w", match, match_re, schedule, HOUR, "UTC")
    assert len(info.value.problems) == len(problems)
    for got, want in zip(info.value.problems, problems, strict=True):
        assert got.startswith(want), (got, want)


def test_the_constructor_refuses_what_cannot_run() -> None:
    with pytest.raises(MaintenanceError, match="time_zone"):
        window(zone="Mars/Olympus")
    with pytest.raises(MaintenanceError, match="duration"):
        window(duration=0)
