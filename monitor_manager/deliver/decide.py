"""What one attempt's outcome does to its delivery: a pure decision, tested as a table.

- Delivered: done.
- A permanent failure (an SMTP 5xx, an invalid WeCom user) stops at once; any other failure
  retries with exponential backoff and jitter from `retry_initial` up to `retry_max` (or longer
  when the channel asked for a pause: `retry_after`), until `give_up_after` has passed since
  the row was written.
- When some recipients got the message and only the others are to be tried again
  (`only_to`), later attempts go to them alone; should they never be reached, the delivery
  still ends `delivered` (the others have it) with a note naming who never got it: a fact
  about those recipients, not a failing channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitor_manager.config import DeliveryConfig
from monitor_manager.store.deliveries import DeliveryState, Recorded


@dataclass(frozen=True)
class Outcome:
    """What a channel said about one attempt."""

    delivered: bool
    permanent: bool = False
    error: str = ""
    note: str = ""
    retry_after: float | None = None
    only_to: tuple[str, ...] = ()  # the others got it; retry for these
    recipients_refused: bool = False  # the failure is about recipients, not the channel
    held: bool = False  # held back by our own count of a rate limit: the platform was not called


@dataclass(frozen=True)
class Attempted:
    """What the decision needs to know of the delivery, as it was before the attempt."""

    attempts: int
    created_at: float
    note: str = ""
    only_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transition(Recorded):
    """The row's new state, and how the attempt counts in the metrics."""

    result: Literal["delivered", "failed", "retried"] = "retried"


def backoff(
    config: DeliveryConfig, attempts: int, retry_after: float | None, jitter: float
) -> float:
    """Seconds until the next attempt: exponential from retry_initial, capped at retry_max,
    jittered down to half (`jitter` in [0, 1)), and never shorter than `retry_after`."""
    step = min(config.retry_max, config.retry_initial * 2 ** max(attempts - 1, 0))
    return max(step * (0.5 + jitter / 2), retry_after or 0.0)


def decide(
    delivery: Attempted, outcome: Outcome, now: float, config: DeliveryConfig, jitter: float
) -> Transition:
    attempts = delivery.attempts + 1
    note = "; then ".join(n for n in (delivery.note, outcome.note) if n)
    if outcome.delivered:
        return Transition(DeliveryState.DELIVERED, attempts, note, "", None, (), "delivered")
    delay = backoff(config, attempts, outcome.retry_after, jitter)
    gave_up = now + delay - delivery.created_at > config.give_up_after
    owed = outcome.only_to or delivery.only_to
    if outcome.permanent or gave_up:
        others_have_it = bool(outcome.only_to) or (
            bool(delivery.only_to) and outcome.recipients_refused
        )
        if others_have_it:
            return Transition(
                DeliveryState.DELIVERED,
                attempts,
                f"{note}; never reached {', '.join(owed)} ({attempts} attempts)",
                outcome.error,
                None,
                (),
                "delivered",
            )
        reason = (
            outcome.error
            if outcome.permanent
            else (f"gave up after {attempts} attempts: {outcome.error}")
        )
        if delivery.only_to:  # the others have it; these never got it
            note = f"{note}; never reached {', '.join(delivery.only_to)}"
        return Transition(DeliveryState.FAILED, attempts, note, reason, None, (), "failed")
    return Transition(
        DeliveryState.RETRYING, attempts, note, outcome.error, now + delay, owed, "retried"
    )
