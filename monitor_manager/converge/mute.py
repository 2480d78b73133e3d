"""Muting: which alerts silences and maintenance windows keep from being notified.

A muted alert is stored and shown, never notified: its group's messages leave it out, and its
resolution is sent only when its firing was (nobody is left believing something is still
broken). Whether an alert is muted depends on its labels, which memory does not keep: it is
decided when the alert arrives (`evaluate`), and decided again for every firing alert when
the set of silences changes or a silence or window starts or ends (`rescan`, on the store's
read connection). The caller then re-examines the groups of the alerts whose muting changed,
so an alert whose silence ends while it still fires is notified as a change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from monitor_manager.config import Config
from monitor_manager.converge.maintenance import MaintenanceWindow
from monitor_manager.converge.silences import Silence, SilenceState
from monitor_manager.store import Op
from monitor_manager.store import silences as silence_rows

INF = float("inf")


class Muting:
    def __init__(self, config: Config) -> None:
        self.windows = [
            MaintenanceWindow.from_config(
                w.name, w.match, w.match_re, w.schedule, w.duration, w.time_zone
            )
            for w in config.maintenance
        ]
        self.silences: dict[str, Silence] = {}
        self.muted: set[str] = set()  # fingerprints of firing alerts muted now
        self.dirty = True  # the silences changed: every firing alert is decided again
        self.next_change_at = 0.0  # when a silence or window next starts or ends

    # -- deciding ---------------------------------------------------------------------------
    def reasons(self, labels: Mapping[str, str], now: float) -> list[str]:
        """What mutes these labels now: silence ids and `maintenance:NAME`s."""
        found = [s.id for s in self.silences.values() if s.mutes(labels, now)]
        found += [f"maintenance:{w.name}" for w in self.windows if w.mutes(labels, now)]
        return found

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return any(s.mutes(labels, now) for s in self.silences.values()) or any(
            w.mutes(labels, now) for w in self.windows
        )

    def evaluate(self, fingerprint: str, labels: Mapping[str, str], now: float) -> bool:
        """An alert that (again) fires: is it muted? Remembered until the next change."""
        if self.mutes(labels, now):
            self.muted.add(fingerprint)
            return True
        self.muted.discard(fingerprint)
        return False

    def is_muted(self, fingerprint: str) -> bool:
        return fingerprint in self.muted

    def due(self, now: float) -> bool:
        """Whether the muted set must be decided again (silences changed, or a boundary)."""
        return self.dirty or now >= self.next_change_at

    def rescan(self, firing: Iterable[tuple[str, str]], now: float) -> set[str]:
        """Decide again for every firing alert ((fingerprint, labels JSON) pairs); the
        fingerprints whose muting changed."""
        muted = {fp for fp, labels in firing if self.mutes(json.loads(labels), now)}
        changed = muted ^ self.muted
        self.muted = muted
        self.dirty = False
        self.next_change_at = self._next_change(now)
        return changed

    def _next_change(self, now: float) -> float:
        times = [t for s in self.silences.values() for t in (s.starts_at, s.ends_at) if t > now]
        for window in self.windows:
            active = window.active_interval(now)
            if active is not None:
                times.append(active[1])
            start = window.next_start(now)
            if start is not None:
                times.append(start)
        return min(times, default=INF)

    # -- silences ---------------------------------------------------------------------------
    def merge(self, silence: Silence) -> list[Op]:
        """Keep `silence` if it is newer than the version known (ours or a peer's)."""
        known = self.silences.get(silence.id)
        if known is not None and not silence.newer_than(known):
            return []
        self.silences[silence.id] = silence
        self.dirty = True
        return [silence_rows.save(silence)]

    def active(self, now: float) -> int:
        return sum(1 for s in self.silences.values() if s.state(now) is SilenceState.ACTIVE)

    def active_windows(self, now: float) -> list[tuple[MaintenanceWindow, float, float]]:
        out = []
        for window in self.windows:
            active = window.active_interval(now)
            if active is not None:
                out.append((window, *active))
        return out

    def purge(self, before: float) -> list[Op]:
        for sid in [i for i, s in self.silences.items() if s.ends_at < before]:
            del self.silences[sid]
        return [silence_rows.purge(before)]

    def load(self, conn: sqlite3.Connection) -> None:
        self.silences = {s.id: s for s in silence_rows.rows(conn)}
        self.dirty = True
