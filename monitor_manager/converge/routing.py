"""Route: which contact groups hear about an alert, decided by its labels.

Routes are tried in order; the first match wins unless it says `continue = true`. An alert no
route matched goes to `routing.default_groups`. `match_re` is fully anchored, as in Alertmanager.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from monitor_manager.config import Config, RouteConfig


@dataclass(frozen=True)
class _CompiledRoute:
    match: dict[str, str]
    match_re: dict[str, re.Pattern[str]]
    groups: tuple[str, ...]
    continue_: bool

    def matches(self, labels: dict[str, str]) -> bool:
        for name, value in self.match.items():
            if labels.get(name, "") != value:
                return False
        for name, pattern in self.match_re.items():
            if not pattern.fullmatch(labels.get(name, "")):
                return False
        return True


def _compile(route: RouteConfig) -> _CompiledRoute:
    return _CompiledRoute(
        match=dict(route.match),
        match_re={k: re.compile(v) for k, v in route.match_re.items()},
        groups=route.groups,
        continue_=route.continue_,
    )


class Router:
    def __init__(self, config: Config) -> None:
        self._routes = [_compile(r) for r in config.routes]
        self._default = config.routing.default_groups

    def route(self, labels: dict[str, str]) -> list[str]:
        """Contact group names for these labels, in route order, each once."""
        found: list[str] = []
        for route in self._routes:
            if route.matches(labels):
                found.extend(g for g in route.groups if g not in found)
                if not route.continue_:
                    break
        return found or list(self._default)


@dataclass(frozen=True)
class RouteMatch:
    """One contact group an alert reaches: its channels, and the route that led there (its
    index in `config.routes`, or "default" for `routing.default_groups`)."""

    contact_group: str
    channels: tuple[str, ...]
    route: int | Literal["default"]

    def as_json(self) -> dict[str, object]:
        """The form of `route-test --format json`: {"name", "channels", "route"}."""
        return {"name": self.contact_group, "channels": list(self.channels), "route": self.route}


def explain(config: Config, labels: dict[str, str]) -> list[RouteMatch]:
    """Which contact groups an alert with these labels reaches, through which channels, and
    why: the same decision as `Router.route` (the same order, each group once, credited to the
    first route that named it), for the console's route tester and `route-test`.

    Pure: no I/O, nothing remembered. Internal alerts (HeartbeatMissing, PeerDown, ...) skip
    routing and go to `watchdog.groups`; this explains routed alerts only."""
    reached: dict[str, int | Literal["default"]] = {}
    for index, route in enumerate(config.routes):
        if _compile(route).matches(labels):
            for group in route.groups:
                reached.setdefault(group, index)
            if not route.continue_:
                break
    if not reached:
        reached = dict.fromkeys(config.routing.default_groups, "default")
    channels = {g.name: g.channels for g in config.contact_groups}
    return [RouteMatch(name, channels.get(name, ()), why) for name, why in reached.items()]
