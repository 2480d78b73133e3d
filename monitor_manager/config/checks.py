"""Checks that span several values or judge a value's meaning, warnings, and the summary."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from monitor_manager.channels import REGISTRY
from monitor_manager.clock import time_zone
from monitor_manager.config.problems import LABEL_NAME, Problems, join_path, valid_items
from monitor_manager.config.schema import (
    Config,
    ConsoleUserConfig,
    ContactGroupConfig,
    HAConfig,
    HeartbeatConfig,
    MaintenanceConfig,
    PeerConfig,
    RouteConfig,
    ServerConfig,
)
from monitor_manager.converge.maintenance import cron_trigger
from monitor_manager.converge.maintenance import validate as maintenance_problems
from monitor_manager.durations import format_duration
from monitor_manager.passwords import PasswordHashError, is_hash, parse_hash

MIN_RECORD_BYTES = 1 << 20  # server.record_max_bytes


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` as (host, port); ValueError saying what is wrong."""
    m = re.fullmatch(r"\[([^\]]*)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", listen)
    if not m:
        if listen.count(":") > 1 and not listen.startswith("["):
            raise ValueError(f'"{listen}": write an IPv6 address in brackets, as "[::1]:9095"')
        raise ValueError(f'"{listen}" is not host:port (e.g. "127.0.0.1:9095", "[::1]:9095")')
    host, port = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
    if m.group(2):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{host}" in brackets is not an IPv6 address') from None
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return host, int(port)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != -1
    except ValueError:  # e.g. a port that is not a number
        return False


def server_ssl_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The HTTPS context `serve` listens with (read anew on every start and reload)."""
    if not server.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    return context


def peer_ssl_context(ha: HAConfig) -> ssl.SSLContext | None:
    """What peers' HTTPS certificates are checked against: ha.ca_file, else the system's."""
    return ssl.create_default_context(cafile=ha.ca_file) if ha.ca_file else None


def cross_check(cfg: Config, data: Mapping[str, Any], problems: Problems) -> None:
    """Checks that span several values, or judge a value's meaning rather than its type."""
    _check_server(cfg, problems)
    _check_numbers(cfg, problems)
    _check_labels(cfg, problems)
    _check_contact_groups(cfg, "contact_groups" not in data, problems)
    _check_group_references(cfg, data, problems)
    _check_routes(cfg, problems)
    _check_watchdog(cfg, problems)
    _check_peers(cfg, problems)
    _check_console(cfg, data, problems)
    _check_escalation(cfg, problems)
    _check_maintenance(cfg, problems)
    if cfg.templates.dir and not Path(cfg.templates.dir).is_dir():
        problems.check("templates.dir", f'directory "{cfg.templates.dir}" does not exist')
    try:
        time_zone(cfg.templates.time_zone)
    except ValueError as exc:
        problems.check("templates.time_zone", str(exc))
    _check_report(cfg, problems)


def _check_server(cfg: Config, problems: Problems) -> None:
    try:
        split_listen(cfg.server.listen)
    except ValueError as exc:
        problems.check("server.listen", str(exc))
    if not cfg.server.instance.strip():
        problems.check("server.instance", "must not be empty (peers and /healthz use it)")
    if cfg.server.external_url and not _is_http_url(cfg.server.external_url):
        problems.check("server.external_url", "must be empty or an http:// or https:// URL")
    server = cfg.server
    if bool(server.tls_cert_file) != bool(server.tls_key_file):
        problems.check(
            "server.tls_key_file" if server.tls_cert_file else "server.tls_cert_file",
            "tls_cert_file and tls_key_file go together",
        )
    elif server.tls_cert_file:
        try:
            server_ssl_context(server)
        except (OSError, ssl.SSLError) as exc:
            problems.check(
                "server.tls_cert_file",
                f"cannot load the certificate and key: {getattr(exc, 'strerror', None) or exc}",
            )
    if server.record:
        folder = Path(server.record).parent
        if not folder.is_dir():
            problems.check("server.record", f'directory "{folder}" does not exist')
        elif Path(server.record).is_dir():
            problems.check("server.record", "is a directory; name the file to write")
    if server.record_max_bytes < MIN_RECORD_BYTES:
        problems.check("server.record_max_bytes", f"must be at least {MIN_RECORD_BYTES} (1 MiB)")
    if cfg.ha.ca_file:
        try:
            peer_ssl_context(cfg.ha)
        except (OSError, ssl.SSLError) as exc:
            problems.check("ha.ca_file", f"cannot load: {getattr(exc, 'strerror', None) or exc}")


def _check_numbers(cfg: Config, problems: Problems) -> None:
    at_least: list[tuple[str, float, int]] = [
        ("server.max_body_bytes", cfg.server.max_body_bytes, 1),
        ("storm.threshold", cfg.storm.threshold, 1),
        ("delivery.concurrency", cfg.delivery.concurrency, 1),
        ("templates.max_alerts", cfg.templates.max_alerts, 0),
        ("watchdog.peer_failures", cfg.watchdog.peer_failures, 1),
    ]
    for path, number, low in at_least:
        if number < low:
            problems.check(path, f"must be at least {low}")
    longer_than_zero = [
        ("storm.window", cfg.storm.window),
        ("delivery.retry_initial", cfg.delivery.retry_initial),
        ("convergence.group_interval", cfg.convergence.group_interval),
        ("convergence.repeat_interval", cfg.convergence.repeat_interval),
        ("watchdog.peer_interval", cfg.watchdog.peer_interval),
        ("watchdog.peer_timeout", cfg.watchdog.peer_timeout),
        ("watchdog.ping_interval", cfg.watchdog.ping_interval),
    ]
    for path, seconds in longer_than_zero:
        if seconds <= 0:
            problems.check(path, "must be longer than 0s")
    delivery = cfg.delivery
    if delivery.retry_initial > delivery.retry_max and not problems.reported("delivery.retry_max"):
        problems.check(
            "delivery.retry_initial",
            f"must not be longer than delivery.retry_max ({format_duration(delivery.retry_max)})",
        )


def _check_labels(cfg: Config, problems: Problems) -> None:
    group_by = cfg.convergence.group_by
    if "..." in group_by:
        if len(group_by) > 1:
            problems.check("convergence.group_by", '"..." must be the only entry when used')
    else:
        _check_label_names("convergence.group_by", group_by, problems)
    _check_label_names("convergence.ignore_labels", cfg.convergence.ignore_labels, problems)


def _check_label_names(path: str, names: Iterable[str], problems: Problems) -> None:
    for i, name in enumerate(names):
        if not LABEL_NAME.fullmatch(name):
            problems.check(f"{path}[{i}]", f'"{name}" is not a valid label name')


def _check_matchers(
    path: str, match: Mapping[str, str], match_re: Mapping[str, str], problems: Problems
) -> None:
    for key, matchers in (("match", match), ("match_re", match_re)):
        for name in matchers:
            if not LABEL_NAME.fullmatch(name):
                problems.check(
                    join_path(f"{path}.{key}", name), f'"{name}" is not a valid label name'
                )
    for name, pattern in match_re.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.check(
                join_path(f"{path}.match_re", name), f"invalid regular expression: {exc}"
            )


def _check_contact_groups(cfg: Config, embedded: bool, problems: Problems) -> None:
    channels = {c.name for c in cfg.channels}
    seen: set[str] = set()
    for i, group in valid_items(cfg.contact_groups, ContactGroupConfig):
        path = f"contact_groups[{i}]"
        _check_name(path, "contact group", group.name, seen, problems)
        if problems.reported("channels"):
            continue  # the channels table itself was unreadable
        for name in group.channels:
            if name not in channels and embedded:
                problems.check(
                    "contact_groups",
                    f'the embedded contact group "{group.name}" uses channel "{name}", which '
                    f"this file does not define; add [channels.{name}] or [[contact_groups]]",
                )
            elif name not in channels:
                problems.check(f"{path}.channels", f'channel "{name}" does not exist')


def _check_group_references(cfg: Config, data: Mapping[str, Any], problems: Problems) -> None:
    if problems.reported("contact_groups") or any(
        not isinstance(g, ContactGroupConfig) for g in cfg.contact_groups
    ):
        return  # a contact group could not be read, so "does not exist" could be wrong
    groups = {g.name for g in cfg.contact_groups}
    default_is_implicit = "default_groups" not in data.get("routing", {})
    if not cfg.routing.default_groups:
        problems.check(
            "routing.default_groups",
            "must name at least one contact group (alerts that match no route go there)",
        )
    for name in cfg.routing.default_groups:
        if name not in groups:
            hint = " (the default; set routing.default_groups)" if default_is_implicit else ""
            problems.check("routing.default_groups", f'contact group "{name}" does not exist{hint}')
    references = [("watchdog.groups", cfg.watchdog.groups), ("report.groups", cfg.report.groups)]
    references += [
        (f"routes[{i}].groups", route.groups) for i, route in valid_items(cfg.routes, RouteConfig)
    ]
    for i, group in valid_items(cfg.contact_groups, ContactGroupConfig):
        for j, step in enumerate(group.escalation):
            references.append((f"contact_groups[{i}].escalation[{j}].groups", step.groups))
    for path, names in references:
        for name in names:
            if name not in groups:
                problems.check(path, f'contact group "{name}" does not exist')


def _check_escalation(cfg: Config, problems: Problems) -> None:
    for i, group in valid_items(cfg.contact_groups, ContactGroupConfig):
        last = 0.0
        for j, step in enumerate(group.escalation):
            path = f"contact_groups[{i}].escalation[{j}]"
            if not step.groups:
                problems.check(f"{path}.groups", "must name at least one contact group")
            if group.name in step.groups:
                problems.check(f"{path}.groups", f'"{group.name}" escalates to itself')
            if step.after <= last:
                problems.check(f"{path}.after", "must be later than the step before it (and 0s)")
            last = step.after


def _check_maintenance(cfg: Config, problems: Problems) -> None:
    seen: set[str] = set()
    for i, window in valid_items(cfg.maintenance, MaintenanceConfig):
        path = f"maintenance[{i}]"
        _check_name(path, "maintenance window", window.name, seen, problems)
        for problem in maintenance_problems(window.schedule, window.time_zone, window.duration):
            key, _, text = problem.partition(": ")
            problems.check(f"{path}.{key}", text)
        _check_matchers(path, window.match, window.match_re, problems)
        if not window.match and not window.match_re:
            problems.check(path, "must name what it mutes (match or match_re)")


def _check_routes(cfg: Config, problems: Problems) -> None:
    for i, route in valid_items(cfg.routes, RouteConfig):
        if not route.groups:
            problems.check(f"routes[{i}].groups", "must name at least one contact group")
        _check_matchers(f"routes[{i}]", route.match, route.match_re, problems)


def _check_watchdog(cfg: Config, problems: Problems) -> None:
    if cfg.watchdog.ping_url and not _is_http_url(cfg.watchdog.ping_url):
        # Not quoted: a ping URL carries its token.
        problems.check("watchdog.ping_url", "must be empty or an http:// or https:// URL")
    seen: set[str] = set()
    for i, beat in valid_items(cfg.watchdog.heartbeats, HeartbeatConfig):
        path = f"watchdog.heartbeats[{i}]"
        _check_name(path, "heartbeat", beat.name, seen, problems)
        if not beat.match:
            problems.check(
                f"{path}.match", "must name at least one label (it would match every alert)"
            )
        _check_matchers(path, beat.match, {}, problems)
        if beat.timeout <= 0:
            problems.check(f"{path}.timeout", "must be longer than 0s")


def _check_report(cfg: Config, problems: Problems) -> None:
    report = cfg.report
    zone = None
    if report.time_zone:
        try:
            zone = time_zone(report.time_zone)
        except ValueError as exc:
            problems.check("report.time_zone", str(exc))
    if report.schedule:
        try:
            cron_trigger(report.schedule, zone or dt.UTC)
        except ValueError as exc:
            problems.check("report.schedule", f'"{report.schedule}": {exc}')


def _check_name(path: str, kind: str, name: str, seen: set[str], problems: Problems) -> bool:
    """An entry's name: not empty, not used twice among its kind. True when it is fine."""
    fine = False
    if not name.strip():
        problems.check(f"{path}.name", "must not be empty")
    elif name in seen:
        problems.check(f"{path}.name", f'{kind} "{name}" is defined twice')
    else:
        fine = True
    seen.add(name)
    return fine


def _check_peers(cfg: Config, problems: Problems) -> None:
    seen: set[str] = set()
    for i, peer in valid_items(cfg.peers, PeerConfig):
        path = f"peers[{i}]"
        if _check_name(path, "peer", peer.name, seen, problems) and (
            peer.name == cfg.server.instance
        ):
            # Instances take turns by name; two with one name would send at the same moment.
            problems.check(
                f"{path}.name", f'"{peer.name}" is this instance\'s own name (server.instance)'
            )
        if not _is_http_url(peer.url):
            problems.check(f"{path}.url", "must be an http:// or https:// URL")


def _check_console(cfg: Config, data: Mapping[str, Any], problems: Problems) -> None:
    raw_console = data.get("console")
    raw_users = raw_console.get("users") if isinstance(raw_console, dict) else None
    raw_users = raw_users if isinstance(raw_users, list) else []
    seen: set[str] = set()
    for i, user in valid_items(cfg.console.users, ConsoleUserConfig):
        path = f"console.users[{i}]"
        if _check_name(path, "console user", user.name, seen, problems) and (
            not user.name.isprintable() or len(user.name) > 64
        ):
            problems.check(f"{path}.name", "must be at most 64 printable characters")
        entry = raw_users[i] if i < len(raw_users) else None
        raw = entry.get("password") if isinstance(entry, dict) else None
        if not user.password:
            problems.check(f"{path}.password", "must not be empty")
        elif is_hash(user.password):
            try:
                parse_hash(user.password)
            except PasswordHashError as exc:
                problems.check(f"{path}.password", str(exc))
        elif isinstance(raw, str) and "${" not in raw:
            # Never quote it: it is a password.
            problems.check(
                f"{path}.password",
                "a password written in clear in the file; write the scrypt hash that "
                "`monitor-manager hash-password` prints, or read it from the environment "
                '("${NAME}")',
            )


ConsoleAccess = Literal["login", "open", "closed"]


def console_access(cfg: Config) -> ConsoleAccess:
    """How the console is reached: with a login when users are configured; without users,
    open on a loopback listen address and closed on any other (the webhook, the API and paging
    work the same in all three)."""
    if cfg.console.users:
        return "login"
    return "open" if _is_loopback(split_listen(cfg.server.listen)[0]) else "closed"


# --- warnings and summary ---------------------------------------------------------------------


def config_warnings(cfg: Config) -> list[str]:
    """Non-fatal notes on a valid Config, each "key.path: text"; check-config prints them and
    still exits 0."""
    conv = cfg.convergence
    notes: list[str] = []
    if conv.repeat_interval < conv.group_interval:
        notes.append(
            f"convergence.repeat_interval: {format_duration(conv.repeat_interval)} is shorter "
            f"than group_interval ({format_duration(conv.group_interval)}); repeats cannot "
            "come more often than group_interval"
        )
    if conv.group_wait > conv.group_interval:
        notes.append(
            f"convergence.group_wait: {format_duration(conv.group_wait)} is longer than "
            f"group_interval ({format_duration(conv.group_interval)})"
        )
    notes += _contact_group_warnings(cfg)
    used = {name for g in cfg.contact_groups for name in g.channels}
    notes += [
        f"channels.{c.name}: no contact group uses this channel"
        for c in cfg.channels
        if c.name not in used
    ]
    notes += _route_warnings(cfg)
    notes += _watchdog_warnings(cfg)
    notes += _console_warnings(cfg)
    report = cfg.report
    if not report.schedule and (report.groups or report.time_zone or report.language):
        notes.append(
            'report.schedule: empty, so no report is sent (set a crontab such as "0 9 * * *")'
        )
    return notes


def _console_warnings(cfg: Config) -> list[str]:
    host, _ = split_listen(cfg.server.listen)
    if console_access(cfg) == "closed":
        return [
            f"console.users: none configured while listening on {host}, so the console is "
            "closed (the webhook, the API and paging work as usual); add [[console.users]] "
            "with a password from `monitor-manager hash-password` to open it"
        ]
    https = cfg.server.tls_cert_file or cfg.server.external_url.startswith("https://")
    if cfg.console.users and not _is_loopback(host) and not https:
        return [
            f"console.users: the console listens on {host} over plain http, so passwords and "
            "session cookies cross the network in clear text; serve HTTPS "
            "(server.tls_cert_file) or put a TLS proxy in front (server.external_url https://)"
        ]
    return []


def _contact_group_warnings(cfg: Config) -> list[str]:
    kinds = {c.name: c.type for c in cfg.channels}
    notes = []
    for i, group in enumerate(cfg.contact_groups):
        if not group.channels:
            notes.append(
                f'contact_groups[{i}].channels: contact group "{group.name}" has no '
                "channels; its notifications are recorded but sent nowhere"
            )
        for name in group.channels:
            kind = REGISTRY.get(kinds.get(name, ""))
            # Kinds that address members one by one name the address they need.
            address = kind.member_address if kind is not None else None
            if address and not any(getattr(m, address) for m in group.members):
                notes.append(
                    f'contact_groups[{i}].members: channel "{name}" ({kinds[name]}) '
                    f"needs members with {address} addresses, and none has one"
                )
    return notes


def _route_warnings(cfg: Config) -> list[str]:
    for i, route in enumerate(cfg.routes[:-1]):
        if not route.match and not route.match_re and not route.continue_:
            return [
                f"routes[{i}]: matches every alert and has no continue = true, so the "
                "routes after it are never used"
            ]
    return []


def _watchdog_warnings(cfg: Config) -> list[str]:
    notes = []
    for i, beat in enumerate(cfg.watchdog.heartbeats):
        if beat.timeout <= beat.resend_interval:
            notes.append(
                f"watchdog.heartbeats[{i}].timeout: {format_duration(beat.timeout)} is not "
                f"longer than resend_interval ({format_duration(beat.resend_interval)}), the "
                "cadence at which Alertmanager re-sends the heartbeat: it will page falsely "
                "(use about 3x resend_interval)"
            )
    if cfg.watchdog.peer_timeout > cfg.watchdog.peer_interval:
        notes.append(
            f"watchdog.peer_timeout: longer than peer_interval "
            f"({format_duration(cfg.watchdog.peer_interval)})"
        )
    for i, peer in enumerate(cfg.peers):
        url = urlsplit(peer.url)
        if url.scheme == "http" and not _is_loopback(url.hostname or ""):
            notes.append(
                f"peers[{i}].url: plain http:// to {url.hostname}, so ha.token crosses the "
                "network in clear text; use https:// (server.tls_cert_file on the peer)"
            )
    host, _ = split_listen(cfg.server.listen)
    if not cfg.server.webhook_token and not _is_loopback(host):
        notes.append(
            f"server.webhook_token: empty while listening on {host}, so anyone who "
            "can reach the port can post alerts"
        )
    return notes


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_anyway_problems(cfg: Config) -> list[str]:
    """Problems check-config reports as errors (exit 1) while `serve` still starts, with the
    feature concerned off: a pager must never fail to start after an upgrade."""
    problems = []
    if cfg.peers and not cfg.ha.token:
        problems.append(
            "ha.token: must be set when peers are configured: without it anyone who reaches "
            "the port could tell this instance that every page was already sent; serve runs "
            "with high availability off (sending alone) until it is set"
        )
    return problems


def summary(cfg: Config) -> str:
    """The line `check-config` prints for a valid config."""
    return (
        f"ok: {len(cfg.channels)} channels, {len(cfg.contact_groups)} contact groups, "
        f"{len(cfg.routes)} routes, {len(cfg.watchdog.heartbeats)} heartbeats, "
        f"{len(cfg.peers)} peers (listen {cfg.server.listen}, instance {cfg.server.instance})"
    )
