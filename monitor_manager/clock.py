"""The injected clock: every timing decision asks a `Clock`, never `time.time()` directly.

Tests drive timelines with `ManualClock` ("pushed at t, expected between a and b") instead of
sleeping.
"""

from __future__ import annotations

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
