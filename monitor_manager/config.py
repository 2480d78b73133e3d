"""Configuration: frozen dataclasses, validated once at load.

Every problem is reported with its key path (`routes[0].groups`), all of them at once.
The dataclasses below are the schema: their field names are the TOML keys (a field whose
name differs from its key carries `metadata={"key": "..."}`), their defaults are the embedded
defaults, and `Duration` fields are written as duration strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import os
import re
import socket
import ssl
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from monitor_manager.durations import Duration, format_duration, parse_duration


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


@dataclass(frozen=True)
class ChannelConfig:
    """`[channels.NAME]`: `type` picks the kind; `settings` is that kind's Settings dataclass."""

    name: str
    type: str
    settings: Any


@dataclass(frozen=True)
class MemberConfig:
    name: str
    email: str = ""
    wechat: str = ""
    mobile: str = ""


@dataclass(frozen=True)
class ContactGroupConfig:
    name: str
    channels: tuple[str, ...] = ()
    members: tuple[MemberConfig, ...] = ()


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
    source: str = "<embedded defaults>"  # where it was loaded from; not a TOML key

    def channel(self, name: str) -> ChannelConfig:
        return next(c for c in self.channels if c.name == name)

    def contact_group(self, name: str) -> ContactGroupConfig:
        return next(g for g in self.contact_groups if g.name == name)

    @property
    def watchdog_groups(self) -> tuple[str, ...]:
        return self.watchdog.groups or self.routing.default_groups


class ConfigError(Exception):
    """The config is invalid; `problems` lists every one as "key.path: what is wrong"."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


# ---------------------------------------------------------------------------------------------
# Loading.
#
# One generic converter walks a dataclass's fields and type hints, so every section and every
# channel kind's Settings is validated by the same code. Conversion is best effort: a value that
# fails is reported and its field's default stands in (inside arrays of tables a placeholder
# keeps the place, so later key paths keep their indices); the cross checks then run on what
# could be read. When anything was reported, parse_config raises ConfigError, so a best-effort
# Config never leaves this module.
# ---------------------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9_-]+")
# `${NAME}` is replaced by the environment variable NAME; `$${NAME}` is a literal `${NAME}`.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_NOT_KEYS = {(Config, "source")}  # schema fields that are not TOML keys
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}
_T = TypeVar("_T")


class _Invalid:
    """Stands for a value that failed conversion; its problem is already reported."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self._reported: list[str] = []

    def add(self, path: str, text: str) -> None:
        self.items.append(f"{path or '(top level)'}: {text}")
        self._reported.append(path)

    def check(self, path: str, text: str) -> None:
        """A cross-check problem. Dropped where conversion already reported the value: its
        default stood in, and judging the default would only confuse."""
        if not self.reported(path):
            self.items.append(f"{path}: {text}")

    def reported(self, path: str) -> bool:
        """True when `path` or a table or array containing it had a conversion problem."""
        return any(path == bad or path.startswith((bad + ".", bad + "[")) for bad in self._reported)


@dataclass
class _Loader:
    env: Mapping[str, str]
    problems: _Problems
    hide: bool = False  # converting a secret field: its value is never described
    # Values substituted from the environment: scrubbed from every problem at the end
    substituted: dict[str, str] = field(default_factory=dict)

    def describe(self, value: Any) -> str:
        if self.hide and isinstance(value, str | int | float):
            return f"{'a string' if isinstance(value, str) else 'a number'} (not shown: a secret)"
        return _describe(value)

    def scrubbed(self, problems: list[str]) -> list[str]:
        """Problems with every value that came from the environment replaced by its ${NAME}
        (a channel's own checks may quote a value): a secret is never printed."""
        out = []
        for text in problems:
            for value, name in sorted(self.substituted.items(), key=lambda i: -len(i[0])):
                if len(value) >= 3:
                    text = text.replace(value, "${" + name + "}")
            out.append(text)
        return out


def parse_config(
    data: dict[str, Any], source: str = "<dict>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate parsed TOML into a Config, or raise ConfigError listing every problem.

    Without a `[channels]` table the embedded `console` channel exists, without
    `[[contact_groups]]` the embedded `default` group; all other defaults are the schema's.
    `${NAME}` in strings is read from `env` (default: os.environ).
    """
    loader = _Loader(os.environ if env is None else env, _Problems())
    cfg = _convert(data, Config, "", loader)
    if cfg is _INVALID:  # `data` was not a table at all
        raise ConfigError(source, loader.scrubbed(loader.problems.items))
    cfg = replace(cfg, source=source)
    if "channels" not in data:
        cfg = replace(cfg, channels=_embedded_channels())
    if "contact_groups" not in data:
        cfg = replace(cfg, contact_groups=(ContactGroupConfig("default", channels=("console",)),))
    _cross_check(cfg, data, loader.problems)
    if loader.problems.items:
        raise ConfigError(source, loader.scrubbed(loader.problems.items))
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file; unreadable files and TOML syntax errors are ConfigErrors."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"the file is not UTF-8 text ({exc.reason})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [_syntax_problem(exc, text)]) from exc
    return parse_config(data, source, env)


def default_config() -> Config:
    """The embedded defaults `serve` runs on without `--config`: listen on 127.0.0.1:9095,
    store in ./monitor-manager.db, everything to contact group `default` via `console`."""
    return parse_config({}, "<embedded defaults>", env={})


def _embedded_channels() -> tuple[ChannelConfig, ...]:
    from channels import REGISTRY  # here, not at the top: the channels import our modules

    return (ChannelConfig("console", "console", REGISTRY["console"].Settings()),)


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> str:
    message = str(exc)
    m = _TOML_POSITION.search(message)
    if m:
        where, reason = f"line {m.group(1)}, column {m.group(2)}", message[: m.start()]
    else:  # "(at end of document)"
        where, reason = f"line {text.count(chr(10)) + 1} (end of file)", message.split(" (at")[0]
    return f"{where}: TOML syntax error: {reason.strip()}"


# --- the generic converter --------------------------------------------------------------------


def _convert(value: Any, tp: Any, path: str, loader: _Loader) -> Any:
    """`value` as parsed from TOML, converted to `tp`; or _INVALID once the problem is reported.

    Strings get `${NAME}` substitution first, whatever the target type.
    """
    raw, whole_env = value, False
    if isinstance(value, str):
        value, whole_env = _expand_env(value, path, loader)
        if value is _INVALID:
            return _INVALID
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        if "duration" in extras:
            return _convert_duration(value, raw, path, loader)
        return _convert(raw, base, path, loader)  # raw: substitute once, not twice
    if origin is Literal:
        return _convert_literal(value, raw, get_args(tp), path, loader)
    if origin is tuple:
        return _convert_tuple(value, tp, path, loader)
    if origin is dict:
        return _convert_dict(value, tp, path, loader)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, path, loader)
    if tp in _TYPE_NAMES:
        if whole_env and tp is not str:
            return _scalar_from_env(value, raw, tp, path, loader)
        return _convert_scalar(value, raw, tp, path, loader)
    raise TypeError(f"config schema: unsupported field type {tp!r} at {path or 'top level'}")


def _convert_scalar(value: Any, raw: Any, tp: type, path: str, loader: _Loader) -> Any:
    if isinstance(value, bool) and tp is not bool:  # TOML true is no number; Python says it is
        pass
    elif isinstance(value, tp):
        return value
    elif tp is float and isinstance(value, int):
        return float(value)
    loader.problems.add(path, f"expected {_TYPE_NAMES[tp]}, got {loader.describe(raw)}")
    return _INVALID


def _scalar_from_env(value: str, raw: str, tp: type, path: str, loader: _Loader) -> Any:
    """A value written exactly `"${NAME}"` may stand for a number or a boolean, so that e.g. a
    port can come from a container's environment."""
    text = value.strip().lower()
    try:
        if tp is bool and text in ("true", "false"):
            return text == "true"
        if tp is not bool:
            return tp(text)
    except ValueError:
        pass
    loader.problems.add(path, f"expected {_TYPE_NAMES[tp]}, but {raw} does not hold one")
    return _INVALID


def _convert_duration(value: Any, raw: Any, path: str, loader: _Loader) -> Any:
    if not isinstance(value, str):
        loader.problems.add(path, f'expected a duration such as "30s", got {loader.describe(raw)}')
        return _INVALID
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        # The message quotes the value: quote what the file says, not what ${NAME} held.
        loader.problems.add(path, str(exc) if raw == value else
                            f"{raw} does not hold a duration (use e.g. \"30s\", \"5m\")")
        return _INVALID
    if seconds < 0:
        loader.problems.add(path, "must not be negative")
        return _INVALID
    return seconds


def _convert_literal(
    value: Any, raw: Any, allowed: tuple[Any, ...], path: str, loader: _Loader
) -> Any:
    if isinstance(value, str) and value in allowed:
        return value
    choices = ", ".join(json.dumps(a) for a in allowed)
    got = loader.describe(raw)
    loader.problems.add(path, f"expected one of {choices}, got {got}")
    return _INVALID


def _convert_tuple(value: Any, tp: Any, path: str, loader: _Loader) -> Any:
    item_type, ellipsis = get_args(tp)
    if ellipsis is not Ellipsis:
        raise TypeError(f"config schema: only tuple[X, ...] is supported, not {tp!r}")
    if item_type is ChannelConfig:
        return _convert_channels(value, path, loader)
    if not isinstance(value, list):
        loader.problems.add(path, f"expected an array, got {loader.describe(value)}")
        return _INVALID
    items = tuple(_convert(v, item_type, f"{path}[{i}]", loader) for i, v in enumerate(value))
    if dataclasses.is_dataclass(item_type):
        return items  # a failed table keeps its place, so later indices stay right
    return _INVALID if _INVALID in items else items


def _convert_dict(value: Any, tp: Any, path: str, loader: _Loader) -> Any:
    key_type, value_type = get_args(tp)
    if key_type is not str:
        raise TypeError(f"config schema: dict keys must be str, not {key_type!r}")
    if not isinstance(value, dict):
        loader.problems.add(path, f"expected a table, got {loader.describe(value)}")
        return _INVALID
    out = {k: _convert(v, value_type, _join(path, k), loader) for k, v in value.items()}
    return _INVALID if _INVALID in out.values() else out


def _convert_dataclass(value: Any, cls: type, path: str, loader: _Loader) -> Any:
    if not isinstance(value, dict):
        loader.problems.add(path, f"expected a table, got {loader.describe(value)}")
        return _INVALID
    hints = _type_hints(cls)
    fields = {
        f.metadata.get("key", f.name): f
        for f in dataclasses.fields(cls)
        if (cls, f.name) not in _NOT_KEYS
    }
    kwargs: dict[str, Any] = {}
    complete = True
    for key, raw in value.items():
        f = fields.get(key)
        if f is None:
            loader.problems.add(_join(path, key), _unknown_key(key, fields))
            continue
        loader.hide, hidden = loader.hide or not f.repr, loader.hide
        try:
            converted = _convert(raw, hints[f.name], _join(path, key), loader)
        finally:
            loader.hide = hidden
        if converted is not _INVALID:
            kwargs[f.name] = converted
        elif _is_required(f):
            complete = False  # an optional field's default stands in for its bad value
    for key, f in fields.items():
        if key not in value and _is_required(f):
            loader.problems.add(_join(path, key), "missing required key")
            complete = False
    if not complete:
        return _INVALID
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a Settings class may check itself in __post_init__
        loader.problems.add(path, str(exc))
        return _INVALID


def _convert_channels(value: Any, path: str, loader: _Loader) -> Any:
    """`[channels.NAME]` tables: `type` picks a kind in channels.REGISTRY, the other keys are
    converted into that kind's Settings."""
    from channels import REGISTRY  # here, not at the top: the channels import our modules

    if not isinstance(value, dict):
        loader.problems.add(path, f"expected [channels.NAME] tables, got {_describe(value)}")
        return _INVALID
    out = []
    for name, table in value.items():
        where = _join(path, name)
        if not _CHANNEL_NAME.fullmatch(name):
            loader.problems.add(where, 'a channel name may contain only letters, digits, "-", "_"')
        if not isinstance(table, dict):
            loader.problems.add(where, f"expected a table, got {_describe(table)}")
            continue
        type_path = _join(where, "type")
        if "type" in table:
            kind = _convert(table["type"], str, type_path, loader)
        else:
            loader.problems.add(type_path, "missing required key")
            kind = _INVALID
        settings = _INVALID
        if kind is not _INVALID and kind not in REGISTRY:
            known = ", ".join(json.dumps(k) for k in sorted(REGISTRY))
            loader.problems.add(type_path, f'unknown channel type "{kind}" (known: {known})')
        elif kind is not _INVALID:
            rest = {k: v for k, v in table.items() if k != "type"}
            settings = _convert_dataclass(rest, REGISTRY[kind].Settings, where, loader)
        # Kept even when invalid, so that groups naming it are not reported a second time.
        out.append(ChannelConfig(name, kind if isinstance(kind, str) else "", settings))
    return tuple(out)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _unknown_key(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f'unknown key "{key}"' + (f' (did you mean "{close[0]}"?)' if close else "")


def _expand_env(value: str, path: str, loader: _Loader) -> tuple[Any, bool]:
    """`value` with `${NAME}` replaced, and whether the whole value was one such reference."""
    missing: list[str] = []

    def substitute(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)[1:]  # `$${NAME}` stands for a literal `${NAME}`
        if m.group(2) not in loader.env:
            missing.append(m.group(2))
            return ""
        loader.substituted[loader.env[m.group(2)]] = m.group(2)
        return loader.env[m.group(2)]

    expanded = _ENV_REF.sub(substitute, value)
    for name in missing:
        loader.problems.add(path, f"environment variable {name} is not set")
    whole = _ENV_REF.fullmatch(value)
    return (_INVALID if missing else expanded), bool(whole and not whole.group(1))


def _join(path: str, key: str) -> str:
    shown = key if _CHANNEL_NAME.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def _describe(value: Any) -> str:
    """A TOML value in TOML's words, for "expected X, got Y"."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return "string " + json.dumps(
            value if len(value) <= 40 else value[:37] + "...", ensure_ascii=False
        )
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"  # TOML dates and times


def _valid(items: Iterable[Any], cls: type[_T]) -> Iterator[tuple[int, _T]]:
    """(index, item) for the items that converted; placeholders of failed tables are skipped."""
    return ((i, item) for i, item in enumerate(items) if isinstance(item, cls))


# --- cross checks -----------------------------------------------------------------------------


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


def _cross_check(cfg: Config, data: Mapping[str, Any], problems: _Problems) -> None:
    """Checks that span several values, or judge a value's meaning rather than its type."""
    _check_server(cfg, problems)
    _check_numbers(cfg, problems)
    _check_labels(cfg, problems)
    _check_contact_groups(cfg, "contact_groups" not in data, problems)
    _check_group_references(cfg, data, problems)
    _check_routes(cfg, problems)
    _check_watchdog(cfg, problems)
    _check_peers(cfg, problems)
    if cfg.templates.dir and not Path(cfg.templates.dir).is_dir():
        problems.check("templates.dir", f'directory "{cfg.templates.dir}" does not exist')


def _check_server(cfg: Config, problems: _Problems) -> None:
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
        problems.check("server.tls_key_file" if server.tls_cert_file else "server.tls_cert_file",
                       "tls_cert_file and tls_key_file go together")
    elif server.tls_cert_file:
        try:
            server_ssl_context(server)
        except (OSError, ssl.SSLError) as exc:
            problems.check("server.tls_cert_file", f"cannot load the certificate and key: "
                                                   f"{getattr(exc, 'strerror', None) or exc}")
    if cfg.ha.ca_file:
        try:
            peer_ssl_context(cfg.ha)
        except (OSError, ssl.SSLError) as exc:
            problems.check("ha.ca_file", f"cannot load: {getattr(exc, 'strerror', None) or exc}")


def _check_numbers(cfg: Config, problems: _Problems) -> None:
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


def _check_labels(cfg: Config, problems: _Problems) -> None:
    group_by = cfg.convergence.group_by
    if "..." in group_by:
        if len(group_by) > 1:
            problems.check("convergence.group_by", '"..." must be the only entry when used')
    else:
        _check_label_names("convergence.group_by", group_by, problems)
    _check_label_names("convergence.ignore_labels", cfg.convergence.ignore_labels, problems)


def _check_label_names(path: str, names: Iterable[str], problems: _Problems) -> None:
    for i, name in enumerate(names):
        if not _LABEL_NAME.fullmatch(name):
            problems.check(f"{path}[{i}]", f'"{name}" is not a valid label name')


def _check_matchers(
    path: str, match: Mapping[str, str], match_re: Mapping[str, str], problems: _Problems
) -> None:
    for key, matchers in (("match", match), ("match_re", match_re)):
        for name in matchers:
            if not _LABEL_NAME.fullmatch(name):
                problems.check(_join(f"{path}.{key}", name), f'"{name}" is not a valid label name')
    for name, pattern in match_re.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.check(_join(f"{path}.match_re", name), f"invalid regular expression: {exc}")


def _check_contact_groups(cfg: Config, embedded: bool, problems: _Problems) -> None:
    channels = {c.name for c in cfg.channels}
    seen: set[str] = set()
    for i, group in _valid(cfg.contact_groups, ContactGroupConfig):
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


def _check_group_references(cfg: Config, data: Mapping[str, Any], problems: _Problems) -> None:
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
    references = [("watchdog.groups", cfg.watchdog.groups)] + [
        (f"routes[{i}].groups", route.groups) for i, route in _valid(cfg.routes, RouteConfig)
    ]
    for path, names in references:
        for name in names:
            if name not in groups:
                problems.check(path, f'contact group "{name}" does not exist')


def _check_routes(cfg: Config, problems: _Problems) -> None:
    for i, route in _valid(cfg.routes, RouteConfig):
        if not route.groups:
            problems.check(f"routes[{i}].groups", "must name at least one contact group")
        _check_matchers(f"routes[{i}]", route.match, route.match_re, problems)


def _check_watchdog(cfg: Config, problems: _Problems) -> None:
    seen: set[str] = set()
    for i, beat in _valid(cfg.watchdog.heartbeats, HeartbeatConfig):
        path = f"watchdog.heartbeats[{i}]"
        _check_name(path, "heartbeat", beat.name, seen, problems)
        if not beat.match:
            problems.check(
                f"{path}.match", "must name at least one label (it would match every alert)"
            )
        _check_matchers(path, beat.match, {}, problems)
        if beat.timeout <= 0:
            problems.check(f"{path}.timeout", "must be longer than 0s")


def _check_name(path: str, kind: str, name: str, seen: set[str], problems: _Problems) -> bool:
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


def _check_peers(cfg: Config, problems: _Problems) -> None:
    seen: set[str] = set()
    for i, peer in _valid(cfg.peers, PeerConfig):
        path = f"peers[{i}]"
        if _check_name(path, "peer", peer.name, seen, problems) and (
                peer.name == cfg.server.instance):
            # Instances take turns by name; two with one name would send at the same moment.
            problems.check(
                f"{path}.name", f'"{peer.name}" is this instance\'s own name (server.instance)'
            )
        if not _is_http_url(peer.url):
            problems.check(f"{path}.url", "must be an http:// or https:// URL")


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
    return notes


def _contact_group_warnings(cfg: Config) -> list[str]:
    kinds = {c.name: c.type for c in cfg.channels}
    # Kinds that address members individually, and the member field each one needs.
    needs = {"email": ("email", "an email address"), "wechat": ("wechat", "a wechat user id")}
    notes = []
    for i, group in enumerate(cfg.contact_groups):
        if not group.channels:
            notes.append(
                f'contact_groups[{i}].channels: contact group "{group.name}" has no '
                "channels; its notifications are recorded but sent nowhere"
            )
        for name in group.channels:
            if kinds.get(name) not in needs:
                continue
            attribute, what = needs[kinds[name]]
            if not any(getattr(m, attribute) for m in group.members):
                notes.append(
                    f'contact_groups[{i}].members: channel "{name}" ({kinds[name]}) '
                    f"needs members with {what}, and none has one"
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
