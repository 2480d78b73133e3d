"""Small builders for alerts, payloads and configs used across the tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from monitor_manager.config import (
    ChannelConfig,
    Config,
    ContactGroupConfig,
    MemberConfig,
    RouteConfig,
    default_config,
)
from monitor_manager.ingest.payload import IncomingAlert

T0 = 1_800_000_000.0


def rfc3339(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def incoming(
    name: str = "HighLatency",
    status: str = "firing",
    starts: float = T0,
    ends: float | None = None,
    summary: str = "",
    **labels: str,
) -> IncomingAlert:
    return IncomingAlert(
        status=status,
        labels={"alertname": name, **labels},
        annotations={"summary": summary or f"{name} summary"},
        starts_at=starts,
        ends_at=ends if status == "resolved" else None,
        generator_url="http://prometheus.example/graph",
    )


def alert_json(
    name: str = "HighLatency",
    status: str = "firing",
    starts: float = T0,
    ends: float | None = None,
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} summary", "description": "details"},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends) if ends else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": "0123456789abcdef",
    }


def payload(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "receiver": "monitor-manager",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-az1:9093",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        **extra,
    }


def make_config(tmp_path: Any = None, **sections: Any) -> Config:
    """Embedded defaults with sections replaced: make_config(convergence={"group_wait": 1})."""
    cfg = default_config()
    # Messages show times in the host's zone by default: tests read them in UTC on any host.
    cfg = dataclasses.replace(cfg, templates=dataclasses.replace(cfg.templates, time_zone="UTC"))
    changes: dict[str, Any] = {}
    for name, value in sections.items():
        current = getattr(cfg, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            changes[name] = dataclasses.replace(current, **value)  # type: ignore[type-var]
        else:
            changes[name] = value
    if tmp_path is not None and "storage" not in sections:
        changes["storage"] = dataclasses.replace(cfg.storage, path=str(tmp_path / "mm.db"))
    return dataclasses.replace(cfg, **changes)


def groups(*names: str, channels: tuple[str, ...] = ("console",)) -> tuple[ContactGroupConfig, ...]:
    return tuple(
        ContactGroupConfig(name, channels, (MemberConfig(f"{name}-oncall", f"{name}@example.com"),))
        for name in names
    )


def routes(*specs: dict[str, Any]) -> tuple[RouteConfig, ...]:
    return tuple(RouteConfig(**spec) for spec in specs)


def console_channels() -> tuple[ChannelConfig, ...]:
    from monitor_manager.channels.console import ConsoleSettings

    return (ChannelConfig("console", "console", ConsoleSettings()),)
