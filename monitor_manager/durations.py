"""Durations as written in the config: "500ms", "30s", "5m", "4h", "1d", or combined "1h30m"."""

from __future__ import annotations

import re
from typing import Annotated

Duration = Annotated[float, "duration"]
"""A config field holding seconds, written in the TOML file as a duration string."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError with a readable reason when it is not a duration."""
    if not isinstance(text, str):
        raise ValueError(f'expected a duration string such as "30s", got {text!r}')
    s = text.strip()
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(
                f'{text!r} is not a duration (use e.g. "500ms", "30s", "5m", "4h", "1d")'
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return total


def format_duration(seconds: float, units: int | None = None) -> str:
    """`seconds` written as the config writes durations ("1h30m", "500ms"); negative as "0s".

    `units` keeps that many units from the largest one present, the smaller ones cut off:
    messages say "firing for 2d3h" where the exact "2d3h17m42s" would be noise. This is the
    one duration formatter: config problems, the API and the message templates all use it.
    """
    seconds = max(seconds, 0.0)
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts: list[str] = []
    rest, taken = int(seconds), 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if units is not None and taken >= units:
            break
        if parts or rest >= size:
            taken += 1
            if rest >= size:
                parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"
