"""The injected clock: every timing decision asks a `Clock`, never `time.time()` directly.

Tests drive timelines with `ManualClock` ("pushed at t, expected between a and b") instead of
sleeping.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

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
