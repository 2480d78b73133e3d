"""Loading a configuration: TOML to the schema's dataclasses, every problem at once.

One generic converter walks a dataclass's fields and type hints, so every section and every
channel kind's Settings is validated by the same code. Conversion is best effort: a value that
fails is reported and its field's default stands in (inside arrays of tables a placeholder
keeps the place, so later key paths keep their indices); the cross checks then run on what
could be read. When anything was reported, parse_config raises ConfigError, so a best-effort
Config never leaves this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from monitor_manager.channels import REGISTRY
from monitor_manager.config.checks import cross_check
from monitor_manager.config.problems import CHANNEL_NAME, Problems, join_path
from monitor_manager.config.schema import ChannelConfig, Config, ConfigError, ContactGroupConfig
from monitor_manager.durations import parse_duration

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


@dataclass
class _Loader:
    env: Mapping[str, str]
    problems: Problems
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
    loader = _Loader(os.environ if env is None else env, Problems())
    cfg = _convert(data, Config, "", loader)
    if cfg is _INVALID:  # `data` was not a table at all
        raise ConfigError(source, loader.scrubbed(loader.problems.items))
    cfg = replace(cfg, source=source)
    if "channels" not in data:
        cfg = replace(cfg, channels=_embedded_channels())
    if "contact_groups" not in data:
        cfg = replace(cfg, contact_groups=(ContactGroupConfig("default", channels=("console",)),))
    cross_check(cfg, data, loader.problems)
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
        loader.problems.add(
            path,
            str(exc) if raw == value else f'{raw} does not hold a duration (use e.g. "30s", "5m")',
        )
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
    out = {k: _convert(v, value_type, join_path(path, k), loader) for k, v in value.items()}
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
            loader.problems.add(join_path(path, key), _unknown_key(key, fields))
            continue
        loader.hide, hidden = loader.hide or not f.repr, loader.hide
        try:
            converted = _convert(raw, hints[f.name], join_path(path, key), loader)
        finally:
            loader.hide = hidden
        if converted is not _INVALID:
            kwargs[f.name] = converted
        elif _is_required(f):
            complete = False  # an optional field's default stands in for its bad value
    for key, f in fields.items():
        if key not in value and _is_required(f):
            loader.problems.add(join_path(path, key), "missing required key")
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

    if not isinstance(value, dict):
        loader.problems.add(path, f"expected [channels.NAME] tables, got {_describe(value)}")
        return _INVALID
    out = []
    for name, table in value.items():
        where = join_path(path, name)
        if not CHANNEL_NAME.fullmatch(name):
            loader.problems.add(where, 'a channel name may contain only letters, digits, "-", "_"')
        if not isinstance(table, dict):
            loader.problems.add(where, f"expected a table, got {_describe(table)}")
            continue
        type_path = join_path(where, "type")
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
