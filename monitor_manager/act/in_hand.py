"""What people have in hand now (SPEC section 8's guard rails): silences in effect or pending,
acknowledged alert groups, maintenance windows running. The console's overview and the daily
report both show it, from memory; one count so that they never disagree."""

from __future__ import annotations

from dataclasses import dataclass

from monitor_manager.converge.convergence import Convergence
from monitor_manager.converge.maintenance import MaintenanceWindow
from monitor_manager.converge.silences import SilenceState, mutes_internal


@dataclass(frozen=True)
class InHand:
    active_silences: int
    pending_silences: int
    internal_silences: int  # active or pending ones that could mute internal alerts
    acked_groups: int  # open alert groups acknowledged in their current episode
    windows: list[tuple[MaintenanceWindow, float, float]]  # running now: (window, start, end)


def in_hand(conv: Convergence, now: float) -> InHand:
    active = pending = internal = 0
    for silence in conv.muting.silences.values():
        state = silence.state(now)
        if state is SilenceState.EXPIRED:
            continue
        active += state is SilenceState.ACTIVE
        pending += state is SilenceState.PENDING
        internal += mutes_internal(silence)
    acked = 0
    for key in conv.acks.entries:  # few: one per acknowledged group key
        group = conv.groups.get(key)
        acked += group is not None and conv.acks.current(key, group.created_at) is not None
    return InHand(active, pending, internal, acked, conv.muting.active_windows(now))
