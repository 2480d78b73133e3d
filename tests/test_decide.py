"""What an attempt's outcome does to its delivery: deliver.decide as a table, and the outbox
taking a one-line fake channel through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import incoming, make_config
from harness import OutboxHarness
from monitor_manager.channels.base import Channel, ChannelError, PartlySent
from monitor_manager.config import DeliveryConfig
from monitor_manager.deliver.decide import Attempted, Outcome, backoff, decide
from monitor_manager.models import Message
from monitor_manager.store.deliveries import DeliveryState

POLICY = DeliveryConfig(retry_initial=10.0, retry_max=40.0, give_up_after=300.0)
NOW = 1_000.0
D, R, F = DeliveryState.DELIVERED, DeliveryState.RETRYING, DeliveryState.FAILED

OK = Outcome(True, note="sent in 2 parts")
BUSY = Outcome(False, error="451 try later")
PAUSE = Outcome(False, error="45009", retry_after=60.0)
REFUSED = Outcome(False, permanent=True, error="550 no such user")
SOME = Outcome(
    False,
    error="451 greylisted",
    note="delivered to a@x",
    only_to=("b@x",),
    recipients_refused=True,
)
STILL_REFUSED = Outcome(False, error="451 greylisted", recipients_refused=True)
CHANNEL_DOWN = Outcome(False, error="connection refused")

# outcome, attempts before, age of the row, owed recipients -> state, next attempt, note, error
TABLE = [
    ("delivered", OK, 0, 0.0, (), D, None, "sent in 2 parts", ""),
    (
        "first transient failure waits retry_initial",
        BUSY,
        0,
        0.0,
        (),
        R,
        NOW + 10,
        "",
        "451 try later",
    ),
    ("backoff doubles", BUSY, 1, 30.0, (), R, NOW + 20, "", "451 try later"),
    ("backoff stops at retry_max", BUSY, 5, 60.0, (), R, NOW + 40, "", "451 try later"),
    ("a pause the channel asked for wins", PAUSE, 0, 0.0, (), R, NOW + 60, "", "45009"),
    ("permanent stops at once", REFUSED, 0, 0.0, (), F, None, "", "550 no such user"),
    (
        "gives up after give_up_after",
        BUSY,
        6,
        280.0,
        (),
        F,
        None,
        "",
        "gave up after 7 attempts: 451 try later",
    ),
    (
        "some recipients got it: retried for the others",
        SOME,
        0,
        0.0,
        (),
        R,
        NOW + 10,
        "delivered to a@x",
        "451 greylisted",
    ),
    (
        "the owed recipient never reached: delivered, named",
        STILL_REFUSED,
        6,
        280.0,
        ("b@x",),
        D,
        None,
        "delivered to a@x; never reached b@x (7 attempts)",
        "451 greylisted",
    ),
    (
        "the channel failing for the owed recipient is a failure",
        CHANNEL_DOWN,
        6,
        280.0,
        ("b@x",),
        F,
        None,
        "delivered to a@x; never reached b@x",
        "gave up after 7 attempts: connection refused",
    ),
]


@pytest.mark.parametrize(
    ("outcome", "attempts", "age", "owed", "state", "next_at", "note", "error"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decide(
    outcome: Outcome,
    attempts: int,
    age: float,
    owed: tuple[str, ...],
    state: DeliveryState,
    next_at: float | None,
    note: str,
    error: str,
) -> None:
    before = Attempted(attempts, NOW - age, "delivered to a@x" if owed else "", owed)
    t = decide(before, outcome, NOW, POLICY, jitter=1.0)
    assert (t.state, t.next_attempt_at, t.note, t.last_error) == (state, next_at, note, error)
    assert t.attempts == attempts + 1
    assert t.only_to == (("b@x",) if state is R and (owed or outcome.only_to) else ())


def test_jitter_takes_the_wait_down_to_half_but_never_below_a_pause() -> None:
    assert backoff(POLICY, 1, None, jitter=0.0) == 5.0
    assert backoff(POLICY, 1, 60.0, jitter=0.0) == 60.0


# -- the outbox with a one-line fake channel ----------------------------------------------------


class Flaky(Channel):
    type = "flaky"
    Settings = dict
    failures: list[ChannelError] = []

    async def send(self, message: Message) -> str:
        if self.failures:
            raise self.failures.pop(0)
        return ""


@pytest.mark.parametrize(
    ("failures", "states"),
    [
        ([], ["delivered"]),
        ([ChannelError("busy")], ["retrying", "delivered"]),
        ([ChannelError("no", permanent=True)], ["failed"]),
        (
            [PartlySent("451", note="to a", retry=("oncall@example.com",))],
            ["retrying", "delivered"],
        ),
    ],
)
async def test_the_outbox_records_what_decide_says(
    tmp_path: Path, failures: list[ChannelError], states: list[str]
) -> None:
    box = await OutboxHarness(
        make_config(tmp_path, convergence={"group_wait": 1.0}, delivery={"retry_initial": 5.0})
    ).start()
    try:
        flaky = Flaky("console", {}, box.channels["console"].ctx)
        flaky.failures = list(failures)
        box.channels["console"] = flaky
        await box.push(incoming("Flaky"))
        seen = [(await box.step(2))[0]["state"]]
        while seen[-1] == "retrying":
            seen.append((await box.step(10))[0]["state"])
        assert seen == states
    finally:
        await box.stop()
