"""Recurring maintenance windows (`[[maintenance]]` in the config): while an occurrence runs,
the alerts its matchers match are muted, as by a silence.

An occurrence starts each time the crontab `schedule` fires in `time_zone` and lasts
`duration` seconds of real time. Fire times come from APScheduler 3.x's CronTrigger (no cron
parser of our own), corrected where it differs from crontab(5):
- weekdays: APScheduler 3 counts 0 as Monday (its issue 286); crontab counts 0 and 7 as
  Sunday. The weekday field is rewritten as names (`1-5` → `mon,tue,wed,thu,fri`), which both
  read alike; ranges of names (`sun-sat`) are expanded too, since APScheduler puts sun last.
- day of month and weekday both restricted (neither starts with `*`): cron fires when either
  matches, APScheduler only when both do, so such a schedule is the OR of the two.
Daylight saving time, in the zone, as cron (vixie, cronie) handles it:
- a schedule at a fixed time (minute and hour fields without `*`) starts once a day: a start
  in the hour skipped in spring happens when the clock jumps (02:30 on 2024-03-31 in
  Europe/Berlin starts at 03:00 CEST), one in the hour repeated in autumn at its first pass;
- a schedule with `*` or `*/n` in the minute or hour field starts when the clock shows a
  matching time: not in the skipped hour, in both passes of the repeated one.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from monitor_manager.converge.matchers import (
    Matcher,
    MatcherError,
    from_config,
    matches_all,
    matches_unlabelled,
)
from monitor_manager.durations import format_duration

MAX_DURATION = 7 * 86400.0  # longer is allowed, but reported: most likely a typo
_Y2K = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY = r"(\d+|[a-zA-Z]{3})"
_WEEKDAY_PART = re.compile(rf"(?:\*|{_DAY}(?:-{_DAY})?)(?:/(\d+))?")


class MaintenanceError(ValueError):
    """A window that cannot be built; `problems` are the messages, each starting with its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _day_number(token: str) -> int:
    if token.isdigit():
        n = int(token)
        if n > 7:
            raise ValueError(f"weekday {n} is out of range (0-7, 0 and 7 are Sunday)")
        return n % 7
    try:
        return _WEEKDAYS.index(token.lower())
    except ValueError:
        raise ValueError(f"unknown weekday {token!r}") from None


def _weekday_field(text: str) -> str:
    """A crontab weekday field as the day names APScheduler reads the same way."""
    if text == "*":
        return text
    days: list[str] = []
    for part in text.split(","):
        m = _WEEKDAY_PART.fullmatch(part)
        if m is None:
            raise ValueError(f"weekday {part!r} is not a crontab weekday expression")
        first, last, step_text = m.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"weekday {part!r}: the step must be at least 1")
        if first is None:  # "*" or "*/n"
            lo, hi = 0, 6
        elif last is None:
            if step_text:
                raise ValueError(f"weekday {part!r}: a step needs a range (a-b/n) or *")
            lo = hi = _day_number(first)
        else:
            # 7 is Sunday at the top of a range ("5-7"), 0 at its start ("0-2").
            lo, hi = _day_number(first), _day_number(last) or 7
            if lo > hi:
                raise ValueError(f"weekday {part!r}: a range goes from low to high")
        days.extend(_WEEKDAYS[d % 7] for d in range(lo, hi + 1, step))
    return ",".join(dict.fromkeys(days))


def cron_trigger(schedule: str, zone: dt.tzinfo) -> BaseTrigger:
    """An APScheduler trigger firing when the 5-field crontab `schedule` does in crontab(5)
    (see the module docstring); ValueError with a readable reason when it is not one."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    days = _weekday_field(weekday)
    if day.startswith("*") or weekday.startswith("*"):
        return CronTrigger.from_crontab(f"{minute} {hour} {day} {month} {days}", timezone=zone)
    return OrTrigger(
        [
            CronTrigger.from_crontab(f"{minute} {hour} {day} {month} *", timezone=zone),
            CronTrigger.from_crontab(f"{minute} {hour} * {month} {days}", timezone=zone),
        ]
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f'unknown time zone {name!r} (use an IANA name such as "Asia/Shanghai" or "UTC")'
        ) from None


def validate(schedule: str, time_zone: str, duration: float) -> list[str]:
    """Problems of a window's settings, each starting with its key; [] when it is valid.

    A duration over 7 days is reported although a window may have it (MaintenanceWindow
    takes it): it is more likely a typo than a plan."""
    _, problems = _build(schedule, time_zone, duration)
    if duration > MAX_DURATION:
        problems.append(
            f"duration: {format_duration(duration)} is longer than "
            f"{format_duration(MAX_DURATION)}; is that meant?"
        )
    return problems


def _build(schedule: str, time_zone: str, duration: float) -> tuple[BaseTrigger | None, list[str]]:
    """The trigger of a window's settings, or None and what is wrong with them."""
    problems: list[str] = []
    zone: dt.tzinfo = dt.UTC
    trigger: BaseTrigger | None = None
    try:
        zone = _zone(time_zone)
    except ValueError as exc:
        problems.append(f"time_zone: {exc}")
    try:
        trigger = cron_trigger(schedule, zone)
    except ValueError as exc:
        problems.append(f"schedule: {schedule!r}: {exc}")
    else:
        # Crontab has no year: a schedule that fires at all fires after 2000 (29 Feb too).
        if trigger.get_next_fire_time(None, _Y2K) is None:
            problems.append(f"schedule: {schedule!r} never fires")
    if not duration > 0:
        problems.append("duration: must be longer than 0s")
    return (None, problems) if problems else (trigger, [])


@dataclass(frozen=True)
class MaintenanceWindow:
    name: str
    matchers: tuple[Matcher, ...]
    schedule: str
    duration: float
    time_zone: str
    _trigger: BaseTrigger = field(init=False, repr=False, compare=False)
    _fixed_time: bool = field(init=False, repr=False, compare=False)
    # (from, until, active): what mutes() found, true for every time in [from, until).
    _memo: list[tuple[float, float, bool]] = field(
        init=False, repr=False, compare=False, default_factory=list
    )

    def __post_init__(self) -> None:
        trigger, problems = _build(self.schedule, self.time_zone, self.duration)
        if problems:
            raise MaintenanceError(problems)
        object.__setattr__(self, "_trigger", trigger)
        minute, hour = self.schedule.split()[:2]
        object.__setattr__(
            self, "_fixed_time", not (minute.startswith("*") or hour.startswith("*"))
        )

    @classmethod
    def from_config(
        cls,
        name: str,
        match: Mapping[str, str],
        match_re: Mapping[str, str],
        schedule: str,
        duration: float,
        time_zone: str,
    ) -> MaintenanceWindow:
        """A window from its `[[maintenance]]` table; MaintenanceError lists every problem
        (validate() also reports a duration over 7 days, which this accepts).

        A window must name what it mutes: one matcher at least that an unlabelled alert
        does not satisfy, as for silences (otherwise it mutes every page, internal ones too)."""
        problems: list[str] = []
        matchers: tuple[Matcher, ...] = ()
        try:
            matchers = from_config(match, match_re)
        except MatcherError as exc:
            problems.append(str(exc))
        else:
            if matches_unlabelled(matchers):
                problems.append(
                    "match: at least one matcher must not match the empty string "
                    "(this window would mute every alert without those labels)"
                )
        try:
            window = cls(name, matchers, schedule, duration, time_zone)
        except MaintenanceError as exc:
            problems += exc.problems
        if problems:
            raise MaintenanceError(problems)
        return window

    def _start_at_or_after(self, ts: float) -> float | None:
        # From a second early: a start moved to the end of a spring gap is found only from
        # before the gap (APScheduler walks wall-clock times).
        at = math.floor(ts) - 1.0
        while True:
            fire = self._trigger.get_next_fire_time(None, dt.datetime.fromtimestamp(at, dt.UTC))
            if fire is None:
                return None
            start = fire.timestamp()
            jump = _spring_jump(fire)
            if jump is not None:
                start, keep = jump, self._fixed_time
            else:
                keep = not (self._fixed_time and _second_pass(fire))
            if keep and start >= ts:
                return start
            # On in epoch seconds: aware datetime arithmetic is wall-clock arithmetic, and one
            # second after the second 02:30 by the wall clock is the first 02:30:01.
            at = start if jump is not None and not keep else start + 1.0

    def _start_after(self, ts: float) -> float | None:
        # Starts fall on whole seconds (crontab has no seconds field).
        return self._start_at_or_after(math.floor(ts) + 1)

    def next_start(self, now: float) -> float | None:
        """When the next occurrence starts, strictly after `now` (None: never again)."""
        return self._start_after(now)

    def active_interval(self, now: float) -> tuple[float, float] | None:
        """[start, end) of the occurrence running at `now`, or None. When occurrences overlap
        (duration longer than the gap between starts), the latest one started."""
        first = self._start_after(now - self.duration)  # start > now - duration: still on
        if first is None or first > now:
            return None
        latest = first
        if (following := self._start_after(first)) is not None and following <= now:
            # Several started since: bisect on whole seconds for the latest start <= now, so
            # a schedule every minute with a week's duration takes ~20 steps, not 10080.
            lo, hi = int(following), math.floor(now) + 1  # a start in [lo, now]; none in [hi,)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                start = self._start_at_or_after(mid)
                if start is not None and start <= now:
                    lo = mid
                else:
                    hi = mid
            latest = float(lo)
        return latest, latest + self.duration

    def is_active(self, now: float) -> bool:
        for since, until, active in self._memo:
            if since <= now < until:
                return active
        interval = self.active_interval(now)
        if interval is not None:
            memo = (interval[0], interval[1], True)
        else:
            upcoming = self.next_start(now)
            memo = (now, math.inf if upcoming is None else upcoming, False)
        self._memo[:] = [memo]  # alerts arrive in time order: one remembered span is enough
        return memo[2]

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return matches_all(self.matchers, labels) and self.is_active(now)


def _second_pass(fire: dt.datetime) -> bool:
    """Whether `fire` is the second time its wall-clock time occurs (the autumn change)."""
    wall = fire.replace(tzinfo=None)
    first = wall.replace(tzinfo=fire.tzinfo, fold=0).utcoffset()
    second = wall.replace(tzinfo=fire.tzinfo, fold=1).utcoffset()
    assert first is not None and second is not None
    return first > second and fire.utcoffset() == second


def _spring_jump(fire: dt.datetime) -> float | None:
    """The instant the clock jumps past `fire`'s wall-clock time, when the spring change skips
    that time (APScheduler returns it all the same); None for a time that exists."""
    zone = fire.tzinfo
    wall = fire.replace(tzinfo=None)
    if dt.datetime.fromtimestamp(fire.timestamp(), zone).replace(tzinfo=None) == wall:
        return None
    # Read with the offsets before and after the change, the skipped time falls on either
    # side of the jump; bisect for the first second with the later offset.
    lo, hi = sorted(wall.replace(tzinfo=zone, fold=f).timestamp() for f in (0, 1))
    after = dt.datetime.fromtimestamp(hi, zone).utcoffset()
    lo, hi = math.floor(lo), math.ceil(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return float(hi)
