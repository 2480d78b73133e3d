"""Route: which contact groups hear about an alert, decided by its labels.

Routes are tried in order; the first match wins unless it says `continue = true`. An alert no
route matched goes to `routing.default_groups`. `match_re` is fully anchored, as in Alertmanager.
Routing sees every label: `convergence.ignore_labels` shapes an alert's identity, not its road.

`explain` tells why, for `monitor-manager route-test` and the console's route tester.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from monitor_manager.config import Config, RouteConfig
from monitor_manager.ingest.payload import claims_internal_identity
from monitor_manager.watch.watchdog import is_heartbeat

Reason = int | Literal["default"]
"""Why a contact group was chosen: the index in `routes` of the first route that named it,
or "default" when no route matched and `routing.default_groups` caught the alert."""


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
        return [name for name, _ in self.route_with_reasons(labels)]

    def route_with_reasons(self, labels: dict[str, str]) -> list[tuple[str, Reason]]:
        """`route`, each contact group with the reason it was chosen."""
        found: dict[str, Reason] = {}
        for i, route in enumerate(self._routes):
            if route.matches(labels):
                for name in route.groups:
                    found.setdefault(name, i)
                if not route.continue_:
                    break
        return list(found.items()) or [(name, "default") for name in self._default]


@dataclass(frozen=True)
class RouteMatch:
    """One contact group an alert reaches: its `name`, the `channels` it is sent through, and
    the `route` that chose it (an index in `config.routes`, or "default")."""

    name: str
    channels: tuple[str, ...]
    route: Reason


@dataclass(frozen=True)
class NotRouted:
    """Why an alert reaches no contact group at all: it is `internal` (it claims an internal
    alert's identity, source="monitor-manager": the webhook drops it), or it is the
    `heartbeat` named so (a firing one records "seen"; it is never notified as an alert)."""

    reason: Literal["internal", "heartbeat"]
    heartbeat: str = ""


def explain(config: Config, labels: Mapping[str, str]) -> list[RouteMatch]:
    """The contact groups an alert with these labels reaches from a webhook, in route order,
    each once, with its channels and why; [] when it is never routed (`not_routed` says
    why). Pure: it reads `config` (assumed valid, as loaded) and decides as the Router does."""
    if not_routed(config, labels) is not None:
        return []
    return [
        RouteMatch(name, config.contact_group(name).channels, reason)
        for name, reason in Router(config).route_with_reasons(dict(labels))
    ]


def not_routed(config: Config, labels: Mapping[str, str]) -> NotRouted | None:
    """Why an alert with these labels would reach no contact group, or None when it is
    routed; checked in the order the webhook does."""
    if claims_internal_identity(labels):
        return NotRouted("internal")
    for beat in config.watchdog.heartbeats:
        if is_heartbeat(beat, labels):
            return NotRouted("heartbeat", beat.name)
    return None
