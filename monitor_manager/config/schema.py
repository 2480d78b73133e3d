"""The configuration's schema: frozen dataclasses, one per section.

Their field names are the TOML keys (a field whose name differs from its key carries
`metadata={"key": "..."}`), their defaults are the embedded defaults, and `Duration` fields are
written as duration strings. `loader` fills them in; `checks` judges what spans several values.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor_manager.clock import time_zone
from monitor_manager.durations import Duration
from monitor_manager.models import Member as MemberConfig  # the config's members are the models'


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:9095"
    instance: str = field(default_factory=socket.gethostname)
    external_url: str = ""  # empty: http://<listen>
    webhook_token: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)
    max_body_bytes: int = 4 * 1024 * 1024
    tls_cert_file: str = ""  # with tls_key_file: serve HTTPS (PEM files)
    tls_key_file: str = ""
    # Append every accepted webhook payload to this file as a JSON line, for `replay`; "": off.
    record: str = ""
    record_max_bytes: int = 100 * 1024 * 1024  # then it becomes record + ".1" and starts anew

    @property
    def base_url(self) -> str:
        """Where people and peers reach this instance: external_url, or the listen address."""
        scheme = "https" if self.tls_cert_file else "http"
        return (self.external_url or f"{scheme}://{self.listen}").rstrip("/")


@dataclass(frozen=True)
class StorageConfig:
    path: str = "monitor-manager.db"
    retention: Duration = 30 * 86400.0


@dataclass(frozen=True)
class ConvergenceConfig:
    group_by: tuple[str, ...] = ("alertname", "cluster")  # ("...",): every label set its own group
    ignore_labels: tuple[str, ...] = ("replica", "prometheus_replica")
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    send_resolved: bool = True
    # A firing alert no sender re-sends this long is closed as stale ("0": never).
    stale_after: Duration = 72 * 3600.0


@dataclass(frozen=True)
class StormConfig:
    threshold: int = 20
    window: Duration = 60.0


@dataclass(frozen=True)
class DeliveryConfig:
    retry_initial: Duration = 5.0
    retry_max: Duration = 300.0
    give_up_after: Duration = 86400.0
    concurrency: int = 16  # deliveries in flight at once


@dataclass(frozen=True)
class TemplatesConfig:
    language: Literal["en", "zh"] = "en"
    dir: str = ""  # a directory whose files override the built-in templates
    max_alerts: int = 10  # alerts listed in full per group; the rest are counted
    time_zone: str = ""  # IANA name every message shows times in; "": the host's local zone

    @property
    def zone(self) -> dt.tzinfo | None:
        """`time_zone` for `clock.format_time` (None: the host's local zone)."""
        return time_zone(self.time_zone)


@dataclass(frozen=True)
class ChannelConfig:
    """`[channels.NAME]`: `type` picks the kind; `settings` is that kind's Settings dataclass."""

    name: str
    type: str
    settings: Any


@dataclass(frozen=True)
class EscalationStep:
    """`escalation = [{ after = "15m", groups = ["sre-lead"] }, ...]` on a contact group."""

    after: Duration
    groups: tuple[str, ...]


@dataclass(frozen=True)
class ContactGroupConfig:
    name: str
    channels: tuple[str, ...] = ()
    members: tuple[MemberConfig, ...] = ()
    # Who hears next when nobody acknowledges, counted from the group's first firing message.
    escalation: tuple[EscalationStep, ...] = ()
    # An acknowledged group still firing this long is acknowledged no more ("0": never).
    ack_timeout: Duration = 0.0


@dataclass(frozen=True)
class RoutingConfig:
    default_groups: tuple[str, ...] = ("default",)


@dataclass(frozen=True)
class RouteConfig:
    groups: tuple[str, ...]
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, str] = field(default_factory=dict)  # fully anchored
    continue_: bool = field(default=False, metadata={"key": "continue"})


@dataclass(frozen=True)
class HeartbeatConfig:
    name: str
    match: dict[str, str]
    timeout: Duration = 360.0
    # How often Alertmanager re-sends the always-firing alert: repeat_interval + group_interval
    # of its route (2m in rules/alertmanager.example.yml). A timeout at or below it pages falsely.
    resend_interval: Duration = 120.0


@dataclass(frozen=True)
class WatchdogConfig:
    groups: tuple[str, ...] = ()  # empty: routing.default_groups
    peer_interval: Duration = 15.0
    peer_timeout: Duration = 3.0
    peer_failures: int = 3
    channel_failing_after: Duration = 600.0  # a channel failing this long raises ChannelFailing
    store_failing_after: Duration = 60.0  # a store refusing writes this long raises StoreFailing
    heartbeats: tuple[HeartbeatConfig, ...] = ()
    # Watched from outside: GET this URL every ping_interval while healthy, so that an outside
    # service (healthchecks.io, Dead Man's Snitch, Tingyun) pages when the pings stop. It
    # usually carries a token: never shown. Empty: off.
    ping_url: str = field(default="", repr=False)
    ping_interval: Duration = 60.0


@dataclass(frozen=True)
class PeerConfig:
    name: str
    url: str


@dataclass(frozen=True)
class HAConfig:
    peer_wait: Duration = 15.0
    token: str = field(default="", repr=False)
    max_clock_skew: Duration = 5.0  # peers' clocks may differ this much (entries, newer-wins)
    ca_file: str = ""  # CA bundle peers' HTTPS certificates are checked against


@dataclass(frozen=True)
class ConsoleUserConfig:
    """`[[console.users]]`: who may log in to the console. `password` is a scrypt hash made by
    `monitor-manager hash-password` (form: monitor_manager/passwords.py) or "${ENV}"."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ConsoleConfig:
    # Without users the console is open on a loopback listen address and closed on any other.
    users: tuple[ConsoleUserConfig, ...] = ()
    session_lifetime: Duration = 12 * 3600.0  # a login lasts this long


@dataclass(frozen=True)
class SilencesConfig:
    max_duration: Duration = 7 * 86400.0  # the longest a silence may last


@dataclass(frozen=True)
class MaintenanceConfig:
    """`[[maintenance]]`: a recurring window that mutes what it matches, like a silence."""

    name: str
    schedule: str  # crontab: minute hour day month weekday
    duration: Duration
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, str] = field(default_factory=dict)
    time_zone: str = "UTC"


@dataclass(frozen=True)
class ReportConfig:
    """`[report]`: a short daily summary to contact groups, sent once by the cluster."""

    schedule: str = ""  # crontab: minute hour day month weekday ("0 9 * * *"); "": no report
    time_zone: str = ""  # IANA zone of the schedule and the report's times; "": templates'
    groups: tuple[str, ...] = ()  # contact groups that get it; empty: the watchdog groups
    language: Literal["", "en", "zh"] = ""  # "": templates.language

    def zone_name(self, templates: TemplatesConfig) -> str:
        return self.time_zone or templates.time_zone


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    storm: StormConfig = field(default_factory=StormConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    channels: tuple[ChannelConfig, ...] = ()
    contact_groups: tuple[ContactGroupConfig, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    routes: tuple[RouteConfig, ...] = ()
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    peers: tuple[PeerConfig, ...] = ()
    ha: HAConfig = field(default_factory=HAConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    silences: SilencesConfig = field(default_factory=SilencesConfig)
    maintenance: tuple[MaintenanceConfig, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)
    source: str = "<embedded defaults>"  # where it was loaded from; not a TOML key

    def channel(self, name: str) -> ChannelConfig:
        return next(c for c in self.channels if c.name == name)

    def contact_group(self, name: str) -> ContactGroupConfig:
        return next(g for g in self.contact_groups if g.name == name)

    @property
    def watchdog_groups(self) -> tuple[str, ...]:
        return self.watchdog.groups or self.routing.default_groups

    @property
    def report_groups(self) -> tuple[str, ...]:
        return self.report.groups or self.watchdog_groups


class ConfigError(Exception):
    """The config is invalid; `problems` lists every one as "key.path: what is wrong"."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]
