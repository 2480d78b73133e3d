"""The injected clock: every timing decision asks a `Clock`, never `time.time()` directly.

Tests drive timelines with `ManualClock` ("pushed at t, expected between a and b") instead of
sleeping.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Clock = Callable[[], float]
"""Returns the current time as Unix epoch seconds."""


def system_clock() -> float:
    return time.time()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def iso(ts: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with milliseconds, as the JSON API shows times."""
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def time_zone(name: str) -> dt.tzinfo | None:
    """The zone `[templates] time_zone` names: an IANA name ("Asia/Shanghai", "UTC"), or ""
    for the host's local zone, returned as None (`format_time` then follows the host's zone,
    daylight saving time included). ValueError for a name that is not a known zone."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f'unknown time zone "{name}" (use an IANA name such as "Asia/Shanghai" or "UTC", '
            "or leave it empty for the host's zone)"
        ) from None


TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
_ZONE_DIRECTIVE = re.compile(r"%[%Z]")


def format_time(ts: float | None, zone: dt.tzinfo | None, fmt: str = TIME_FORMAT) -> str:
    """Unix seconds as people read them: the wall time in `zone` (None: the host's local
    zone), "" for None. This is the one time formatter for people (messages, watchdog texts,
    the console); the JSON API writes `iso` instead.

    `fmt` is strftime's, with `%Z` the zone's abbreviation ("2026-12-02 20:15:00 CST") or,
    where the zone has none, its UTC offset ("2026-12-02 20:15:00 +08:00"), so that a reader
    in another zone never has to guess which one a time is in.
    """
    if ts is None:
        return ""
    when = dt.datetime.fromtimestamp(ts, dt.UTC).astimezone(zone)
    name = when.tzname() or ""
    if not name or name[0] in "+-" or name[0].isdigit():
        offset = when.strftime("%z")  # "+0800"
        name = f"{offset[:3]}:{offset[3:5]}"
    return when.strftime(_ZONE_DIRECTIVE.sub(lambda m: "%%" if m[0] == "%%" else name, fmt))
