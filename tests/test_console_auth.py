"""Console sessions and the login throttle as values: bounded, per client, ended by a changed
password, a logout or time."""

from __future__ import annotations

import dataclasses

from builders import make_config
from monitor_manager.clock import ManualClock
from monitor_manager.config import ConsoleConfig, ConsoleUserConfig
from monitor_manager.web.console.auth import LoginThrottle, Sessions, csrf_matches, csrf_token

USER = ConsoleUserConfig("zhangsan", "pw-one")
CONFIG = make_config(console=ConsoleConfig(users=(USER,)))


def test_failed_logins_slow_down_only_the_client_that_made_them() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, free=2, first_delay=1.0, max_delay=8.0)

    waits = []
    for _ in range(7):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait("10.0.0.1"))

    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped
    assert throttle.wait("10.0.0.2") == 0.0
    clock.advance(8.0)
    assert throttle.wait("10.0.0.1") == 0.0
    throttle.succeeded("10.0.0.1")
    assert len(throttle) == 0


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    throttle = LoginThrottle(ManualClock(), free=0, max_clients=100)

    for i in range(10_000):
        throttle.failed(f"client-{i}")

    assert len(throttle) == 100
    assert throttle.wait("client-9999") > 0 and throttle.wait("client-0") == 0.0


def test_a_long_quiet_client_starts_over() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, free=1, first_delay=1.0, max_delay=4.0)
    for _ in range(4):
        throttle.failed("c")
    clock.advance(60)

    throttle.failed("c")

    assert throttle.wait("c") == 0.0  # counted as the first failure again


def test_a_session_ends_with_its_lifetime_a_logout_or_a_changed_password() -> None:
    clock = ManualClock()
    sessions = Sessions(clock)
    first = sessions.create(USER, lifetime=60)
    second = sessions.create(USER, lifetime=60)

    assert sessions.get(first.token, CONFIG) is first
    changed = dataclasses.replace(
        CONFIG, console=ConsoleConfig(users=(ConsoleUserConfig("zhangsan", "pw-two"),))
    )
    assert sessions.get(first.token, changed) is None
    sessions.drop(second.token)
    assert sessions.get(second.token, CONFIG) is None
    third = sessions.create(USER, lifetime=60)
    clock.advance(61)
    assert sessions.get(third.token, CONFIG) is None
    removed = dataclasses.replace(CONFIG, console=ConsoleConfig())
    assert sessions.get(sessions.create(USER, 60).token, removed) is None
    assert sessions.get("made-up", CONFIG) is None and sessions.get(None, CONFIG) is None


def test_sessions_are_bounded_oldest_first() -> None:
    sessions = Sessions(ManualClock(), max_sessions=10)
    made = [sessions.create(USER, lifetime=3600) for _ in range(25)]

    assert len(sessions) == 10
    assert sessions.get(made[0].token, CONFIG) is None
    assert sessions.get(made[-1].token, CONFIG) is made[-1]


def test_a_csrf_token_belongs_to_its_key_and_its_basis() -> None:
    token = csrf_token(b"k" * 32, "basis")

    assert csrf_matches(b"k" * 32, "basis", token)
    assert not csrf_matches(b"k" * 32, "other", token)
    assert not csrf_matches(b"x" * 32, "basis", token)
    assert not csrf_matches(b"k" * 32, None, token)
    assert not csrf_matches(b"k" * 32, "basis", "")
