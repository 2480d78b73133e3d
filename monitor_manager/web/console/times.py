"""How the console shows times: one helper, so the zone is one change.

Times are shown in `[templates] time_zone` (the host's zone by default), always with the zone
named, by the project's one time formatter (`clock.format_time`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from monitor_manager.clock import format_time
from monitor_manager.config import Config


def zone(config: Config) -> dt.tzinfo:
    """The zone every console page shows times in: the one messages use."""
    return config.templates.zone or dt.datetime.now().astimezone().tzinfo or dt.UTC


def zone_name(tz: dt.tzinfo) -> str:
    key = getattr(tz, "key", None)  # a ZoneInfo's name, e.g. "Asia/Shanghai"
    return str(key) if key else (tz.tzname(None) or "UTC")


_UNITS = {
    "en": (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)),
    "zh": (("天", 86400), ("小时", 3600), ("分钟", 60), ("秒", 1)),
}


@dataclass(frozen=True)
class TimeFormat:
    """Bound to one page view: its zone, its language and its `now`."""

    tz: dt.tzinfo
    lang: str
    now: float

    @property
    def zone(self) -> str:
        return zone_name(self.tz)

    def time(self, ts: float | None) -> str:
        """`2026-11-27 10:00:05 UTC`; "-" for no time."""
        if ts is None:
            return "-"
        return format_time(ts, self.tz)

    def iso(self, ts: float | None) -> str:
        """For `<time datetime=...>`."""
        if ts is None:
            return ""
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")

    def duration(self, seconds: float | None) -> str:
        """`2h 5m`, `3d 4h`, `40s`: the two largest units."""
        if seconds is None:
            return "-"
        seconds = max(int(seconds), 0)
        parts: list[str] = []
        for unit, size in _UNITS.get(self.lang, _UNITS["en"]):
            if seconds >= size or (size == 1 and not parts):
                parts.append(f"{seconds // size}{'' if self.lang == 'en' else ' '}{unit}")
                seconds %= size
            if len(parts) == 2:
                break
        return " ".join(parts) if self.lang == "en" else "".join(p.replace(" ", "") for p in parts)

    def ago(self, ts: float | None) -> str:
        """`5m ago` / `5分钟前`, `in 30s` / `30秒后` for a time ahead."""
        if ts is None:
            return "-"
        delta = self.now - ts
        text = self.duration(abs(delta))
        if self.lang == "zh":
            return f"{text}{'前' if delta >= 0 else '后'}"
        return f"{text} ago" if delta >= 0 else f"in {text}"
