"""The config loader: schema conversion, key paths of problems, defaults, env, the example."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from monitor_manager import channels
from monitor_manager.channels.base import Channel
from monitor_manager.config import (
    ChannelConfig,
    Config,
    ConfigError,
    ContactGroupConfig,
    MemberConfig,
    RouteConfig,
    config_warnings,
    default_config,
    load_config,
    parse_config,
    split_listen,
    summary,
)
from monitor_manager.durations import Duration, format_duration, parse_duration
from monitor_manager.models import Message

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(tomllib.loads(textwrap.dedent(text)), "test.toml", env=env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value.problems


def paths_of(problems: list[str]) -> list[str]:
    return [p.split(": ", 1)[0] for p in problems]


# --- a channel kind made up for these tests, so they do not depend on the real ones ----------


@dataclass(frozen=True)
class PagerSettings:
    host: str
    from_: str = field(default="", metadata={"key": "from"})
    port: int = 25
    ratio: float = 1.0
    tls: Literal["none", "tls"] = "none"
    timeout: Duration = 10.0
    recipients: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.host == "bad":
            raise ValueError('host must not be "bad"')


class PagerChannel(Channel):
    type = "pager"
    Settings = PagerSettings

    async def send(self, message: Message) -> str:
        return ""


@pytest.fixture
def pager_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(channels.REGISTRY, "pager", PagerChannel)


# --- the example configuration ---------------------------------------------------------------


def example_env() -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", EXAMPLE.read_text()))
    return {name: _example_value(name) for name in names}


def _example_value(name: str) -> str:
    if name.endswith("_URL"):
        return "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=example"
    if name.endswith("_AES_KEY"):  # a WeCom EncodingAESKey: 43 characters of base64
        return "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
    return f"example-{name.lower()}"


def example_channel_kinds() -> set[str]:
    data = tomllib.loads(EXAMPLE.read_text())
    return {table["type"] for table in data["channels"].values()}


def test_example_config_loads_with_its_environment_variables_set() -> None:
    # Every kind is registered now: one the example uses but the registry lacks is a failure.
    missing = sorted(example_channel_kinds() - set(channels.REGISTRY))
    assert not missing, f"config.example.toml uses unregistered channel kinds: {missing}"

    cfg = load_config(EXAMPLE, env=example_env())

    assert cfg.source == str(EXAMPLE)
    assert [c.name for c in cfg.channels] == [
        "console",
        "mail",
        "wecom",
        "dba-robot",
        "net-dingtalk",
        "app-feishu",
        "tickets",
    ]
    assert cfg.channel("tickets").settings.headers == {"X-Tenant": "ops"}
    assert cfg.contact_group("network").members[0].dingtalk == "zhaoliu01"
    assert cfg.contact_group("app").members[0].feishu.startswith("ou_")
    assert cfg.channel("mail").settings.from_ == "Monitor Manager <alerts@example.com>"
    assert cfg.channel("mail").settings.password == "example-mm_smtp_password"
    assert cfg.contact_group("dba").members[0].email == "wangwu@example.com"
    assert cfg.routes[0].continue_ is True
    assert config_warnings(cfg) == []  # the example shows good practice, not only valid syntax


def test_example_config_is_valid_apart_from_channel_kinds_not_yet_registered() -> None:
    missing = example_channel_kinds() - set(channels.REGISTRY)
    try:
        load_config(EXAMPLE, env=example_env())
    except ConfigError as exc:
        allowed = {f"channels.{n}.type" for n, t in _example_channels() if t in missing}
        assert set(paths_of(exc.problems)) <= allowed, exc.problems


def _example_channels() -> list[tuple[str, str]]:
    data = tomllib.loads(EXAMPLE.read_text())
    return [(name, table["type"]) for name, table in data["channels"].items()]


def _schema_keys(cls: type, prefix: str) -> set[str]:
    """Every key the schema accepts below `prefix`, array indices left out; channel keys are
    written `channels.<type>.<key>`, for every registered kind."""
    keys: set[str] = set()
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if cls is Config and f.name == "source":
            continue
        path = f"{prefix}{f.metadata.get('key', f.name)}"
        tp = hints[f.name]
        if get_origin(tp) is tuple:
            tp = get_args(tp)[0]
        if tp is ChannelConfig:
            for kind, channel_cls in channels.REGISTRY.items():
                keys.add(f"channels.{kind}.type")
                keys |= _schema_keys(channel_cls.Settings, f"channels.{kind}.")
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys |= _schema_keys(tp, f"{path}.")
        else:
            keys.add(path)
    return keys


def _written_keys(value: Any, prefix: str) -> set[str]:
    """Every key path present in parsed TOML, in the notation of _schema_keys."""
    keys: set[str] = set()
    if isinstance(value, list):
        for item in value:
            keys |= _written_keys(item, prefix)
    elif isinstance(value, dict):
        for key, item in value.items():
            keys.add(f"{prefix}{key}")
            if prefix == "" and key == "channels":
                for table in item.values():
                    keys |= _written_keys(table, f"channels.{table['type']}.")
            elif not key.startswith("match"):  # label names, not schema keys
                keys |= _written_keys(item, f"{prefix}{key}.")
    return keys


def test_example_config_writes_every_key_of_the_schema_and_of_every_channel_kind() -> None:
    written = _written_keys(tomllib.loads(EXAMPLE.read_text()), "")

    missing = _schema_keys(Config, "") - written

    assert not missing, f"config.example.toml lacks these keys: {sorted(missing)}"


def test_example_config_documents_every_section_on_a_line_of_its_own() -> None:
    # The plain-text view a reader scans: each section header appears as written.
    text = EXAMPLE.read_text()
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        assert re.search(rf"^\s*\[\[?{f.name}[.\]]", text, re.M), f.name


# --- broken configs and the key paths of their problems ----------------------------------------

BROKEN = {
    "unknown top-level key": ('colour = "red"', ["colour"]),
    "unknown key in a section": ('[server]\nlistn = "127.0.0.1:1"', ["server.listn"]),
    "unknown key in a member": (
        '[[contact_groups]]\nname = "default"\nchannels = ["console"]\n'
        'members = [{ name = "A" }, { name = "B", emial = "b@example.com" }]',
        ["contact_groups[0].members[1].emial"],
    ),
    "bad duration": ('[convergence]\ngroup_wait = "30 seconds"', ["convergence.group_wait"]),
    "duration written as a number": ("[storm]\nwindow = 60", ["storm.window"]),
    "bad duration in a heartbeat": (
        '[[watchdog.heartbeats]]\nname = "p"\nmatch = { alertname = "DMS" }\ntimeout = "5 min"',
        ["watchdog.heartbeats[0].timeout"],
    ),
    "missing environment variable": (
        '[server]\nwebhook_token = "${MM_TEST_UNSET}"',
        ["server.webhook_token"],
    ),
    "route naming an unknown group": (
        '[[routes]]\nmatch = { team = "db" }\ngroups = ["dba"]',
        ["routes[0].groups"],
    ),
    "route without groups": ("[[routes]]\ngroups = []", ["routes[0].groups"]),
    "route missing its groups key": ('[[routes]]\nmatch = { a = "b" }', ["routes[0].groups"]),
    "default group naming an unknown group": (
        '[routing]\ndefault_groups = ["ops"]',
        ["routing.default_groups"],
    ),
    "no default groups": ("[routing]\ndefault_groups = []", ["routing.default_groups"]),
    "watchdog naming an unknown group": ('[watchdog]\ngroups = ["ops"]', ["watchdog.groups"]),
    "groups defined but the implicit default group is not": (
        '[[contact_groups]]\nname = "sre"\nchannels = ["console"]',
        ["routing.default_groups"],
    ),
    "group naming an unknown channel": (
        '[[contact_groups]]\nname = "default"\nchannels = ["console", "mail"]',
        ["contact_groups[0].channels"],
    ),
    "embedded group without its console channel": (
        '[channels.other]\ntype = "console"',
        ["contact_groups"],
    ),
    "duplicate contact group": (
        '[[contact_groups]]\nname = "default"\n[[contact_groups]]\nname = "default"',
        ["contact_groups[1].name"],
    ),
    "empty contact group name": (
        '[[contact_groups]]\nname = "default"\n[[contact_groups]]\nname = ""',
        ["contact_groups[1].name"],
    ),
    "bad regex": (
        '[[routes]]\nmatch_re = { severity = "crit(" }\ngroups = ["default"]',
        ["routes[0].match_re.severity"],
    ),
    "bad label name in a match": (
        '[[routes]]\nmatch = { "team.name" = "db" }\ngroups = ["default"]',
        ['routes[0].match."team.name"'],
    ),
    "bad label name in group_by": (
        '[convergence]\ngroup_by = ["alertname", "az.name"]',
        ["convergence.group_by[1]"],
    ),
    "ellipsis mixed into group_by": (
        '[convergence]\ngroup_by = ["...", "alertname"]',
        ["convergence.group_by"],
    ),
    "wrong type": ('[server]\nmax_body_bytes = "4MB"', ["server.max_body_bytes"]),
    "boolean for an integer": ("[storm]\nthreshold = true", ["storm.threshold"]),
    "string for an array": ('[convergence]\ngroup_by = "alertname"', ["convergence.group_by"]),
    "value for a section": ("server = 5", ["server"]),
    "value outside a literal": ('[templates]\nlanguage = "fr"', ["templates.language"]),
    "unknown channel type": (
        '[channels.console]\ntype = "console"\n[channels.pager2]\ntype = "carrier-pigeon"',
        ["channels.pager2.type"],
    ),
    "missing channel type": (
        '[channels.console]\ntype = "console"\n[channels.extra]\n',
        ["channels.extra.type"],
    ),
    "unknown key in a channel": (
        '[channels.console]\ntype = "console"\ncolour = "red"',
        ["channels.console.colour"],
    ),
    "bad channel name": (
        '[channels.console]\ntype = "console"\n[channels."my console"]\ntype = "console"',
        ['channels."my console"'],
    ),
    "listen without a port": ('[server]\nlisten = "localhost"', ["server.listen"]),
    "listen with a port out of range": ('[server]\nlisten = "0.0.0.0:65536"', ["server.listen"]),
    "listen with unbracketed IPv6": ('[server]\nlisten = "::1:9095"', ["server.listen"]),
    "external url without a scheme": (
        '[server]\nexternal_url = "mm.example.com"',
        ["server.external_url"],
    ),
    "zero body size": ("[server]\nmax_body_bytes = 0", ["server.max_body_bytes"]),
    "storm threshold below one": ("[storm]\nthreshold = 0", ["storm.threshold"]),
    "retry_initial above retry_max": (
        '[delivery]\nretry_initial = "10m"\nretry_max = "5m"',
        ["delivery.retry_initial"],
    ),
    "zero retry_initial": ('[delivery]\nretry_initial = "0s"', ["delivery.retry_initial"]),
    "zero group interval": ('[convergence]\ngroup_interval = "0s"', ["convergence.group_interval"]),
    "zero repeat interval": (
        '[convergence]\nrepeat_interval = "0s"',
        ["convergence.repeat_interval"],
    ),
    "missing templates dir": (
        '[templates]\ndir = "/nonexistent/monitor-manager-templates"',
        ["templates.dir"],
    ),
    "peer without url": ('[[peers]]\nname = "mm-az2"', ["peers[0].url"]),
    "peer with a non-http url": (
        '[[peers]]\nname = "mm-az2"\nurl = "mm-az2:9095"',
        ["peers[0].url"],
    ),
    "duplicate peer": (
        '[[peers]]\nname = "b"\nurl = "http://b:1"\n[[peers]]\nname = "b"\nurl = "http://c:1"',
        ["peers[1].name"],
    ),
    "peer named like this instance": (
        '[server]\ninstance = "a"\n[[peers]]\nname = "a"\nurl = "http://a:1"',
        ["peers[0].name"],
    ),
    "duplicate heartbeat": (
        '[[watchdog.heartbeats]]\nname = "p"\nmatch = { a = "1" }\n'
        '[[watchdog.heartbeats]]\nname = "p"\nmatch = { a = "2" }',
        ["watchdog.heartbeats[1].name"],
    ),
    "heartbeat matching everything": (
        '[[watchdog.heartbeats]]\nname = "p"\nmatch = {}',
        ["watchdog.heartbeats[0].match"],
    ),
}


@pytest.mark.parametrize("text, expected", BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_is_reported_at_its_key_path(text: str, expected: list[str]) -> None:
    assert paths_of(problems_of(text)) == expected


def test_wrong_type_names_what_was_expected_and_what_was_found() -> None:
    assert problems_of('[server]\nmax_body_bytes = "4MB"') == [
        'server.max_body_bytes: expected an integer, got string "4MB"'
    ]


def test_unknown_key_suggests_the_key_that_was_probably_meant() -> None:
    assert problems_of('[server]\nlistn = "127.0.0.1:1"') == [
        'server.listn: unknown key "listn" (did you mean "listen"?)'
    ]


def test_unknown_channel_type_names_the_known_types() -> None:
    (problem,) = problems_of('[channels.console]\ntype = "console"\n[channels.x]\ntype = "y"')
    assert problem.startswith('channels.x.type: unknown channel type "y"')
    assert '"console"' in problem


def test_all_problems_are_reported_together() -> None:
    text = """
        colour = "red"
        [convergence]
        group_wait = "soon"
        [server]
        api_token = "${MM_TEST_UNSET}"
        [[routes]]
        match_re = { severity = "crit(" }
        groups = ["nobody"]
        [[contact_groups]]
        name = "default"
        channels = ["console", "fax"]
    """
    assert sorted(paths_of(problems_of(text))) == [
        "colour",
        "contact_groups[0].channels",
        "convergence.group_wait",
        "routes[0].groups",
        "routes[0].match_re.severity",
        "server.api_token",
    ]


def test_config_error_lines_start_with_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "mm.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    (line,) = caught.value.lines()
    assert line.startswith(f"{path}: server.listen: ")


def test_a_value_that_failed_conversion_is_not_judged_again_by_cross_checks() -> None:
    # retry_initial falls back to its default (5s), which is above retry_max; saying so too
    # would send the reader after a value they never wrote.
    text = '[delivery]\nretry_initial = "soon"\nretry_max = "1s"'
    assert paths_of(problems_of(text)) == ["delivery.retry_initial"]


def test_a_broken_table_keeps_the_indices_of_the_tables_after_it() -> None:
    text = """
        [[contact_groups]]
        channels = ["console"]
        [[contact_groups]]
        name = "default"
        channels = ["fax"]
    """
    assert paths_of(problems_of(text)) == ["contact_groups[0].name", "contact_groups[1].channels"]


# --- channel settings, through a made-up kind ------------------------------------------------


def test_channel_settings_are_converted_by_their_type_hints(pager_kind: None) -> None:
    cfg = parse(
        """
        [channels.console]
        type = "console"
        [channels.pager]
        type = "pager"
        host = "pager.example.com"
        from = "mm@example.com"
        port = 2525
        ratio = 2
        tls = "tls"
        timeout = "1m30s"
        recipients = ["a", "b"]
        headers = { X-Team = "sre" }
        verbose = true
        """
    )

    assert cfg.channel("pager") == ChannelConfig(
        "pager",
        "pager",
        PagerSettings(
            host="pager.example.com",
            from_="mm@example.com",
            port=2525,
            ratio=2.0,
            tls="tls",
            timeout=90.0,
            recipients=("a", "b"),
            headers={"X-Team": "sre"},
            verbose=True,
        ),
    )
    assert isinstance(cfg.channel("pager").settings.ratio, float)


def test_channel_settings_problems_are_reported_at_their_keys(pager_kind: None) -> None:
    text = """
        [channels.console]
        type = "console"
        [channels.p1]
        type = "pager"
        [channels.p2]
        type = "pager"
        host = "h"
        port = "25"
        tls = "ssl"
        timeout = "1 minute"
        colour = "red"
        recipients = ["a", 1]
        [channels.p3]
        type = "pager"
        host = "bad"
    """
    problems = problems_of(text)

    assert paths_of(problems) == [
        "channels.p1.host",
        "channels.p2.port",
        "channels.p2.tls",
        "channels.p2.timeout",
        "channels.p2.colour",
        "channels.p2.recipients[1]",
        "channels.p3",
    ]
    assert problems[0] == "channels.p1.host: missing required key"
    assert problems[2] == 'channels.p2.tls: expected one of "none", "tls", got string "ssl"'
    assert problems[-1] == 'channels.p3: host must not be "bad"'


def test_a_group_naming_a_channel_with_bad_settings_is_not_reported_as_well(
    pager_kind: None,
) -> None:
    text = """
        [channels.console]
        type = "console"
        [channels.pager]
        type = "pager"
        [[contact_groups]]
        name = "default"
        channels = ["console", "pager"]
    """
    assert paths_of(problems_of(text)) == ["channels.pager.host"]


# --- defaults ----------------------------------------------------------------------------------


def test_default_config_listens_on_loopback_and_prints_to_the_console() -> None:
    cfg = default_config()

    assert cfg.server.listen == "127.0.0.1:9095"
    assert Path(cfg.storage.path) == Path("./monitor-manager.db")
    assert [(c.name, c.type) for c in cfg.channels] == [("console", "console")]
    assert cfg.contact_groups == (ContactGroupConfig("default", channels=("console",)),)
    assert cfg.routing.default_groups == ("default",)
    assert cfg.watchdog_groups == ("default",)
    assert cfg.server.instance  # the host name


def test_a_file_with_only_a_server_section_gets_the_embedded_channel_and_group() -> None:
    cfg = parse('[server]\nlisten = "0.0.0.0:8080"\nwebhook_token = "t"')

    assert cfg.server.listen == "0.0.0.0:8080"
    assert cfg.channels == default_config().channels
    assert cfg.contact_groups == default_config().contact_groups
    assert cfg.convergence == default_config().convergence


def test_an_empty_file_is_the_embedded_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")

    assert replace(load_config(path, env={}), source="x") == replace(default_config(), source="x")


def test_durations_and_renamed_keys_are_read_into_the_schema() -> None:
    cfg = parse(
        """
        [storage]
        retention = "1w"
        [convergence]
        group_wait = "500ms"
        group_by = ["..."]
        [[routes]]
        match = { team = "db" }
        match_re = { severity = "critical|page" }
        groups = ["default"]
        continue = true
        """
    )

    assert cfg.storage.retention == 7 * 86400
    assert cfg.convergence.group_wait == 0.5
    assert cfg.convergence.group_by == ("...",)
    assert cfg.routes == (
        RouteConfig(
            groups=("default",),
            match={"team": "db"},
            match_re={"severity": "critical|page"},
            continue_=True,
        ),
    )


@pytest.mark.parametrize(
    ("seconds", "exact", "two_units"),
    [
        (0, "0s", "0s"),
        (0.5, "500ms", "500ms"),
        (600, "10m", "10m"),
        (5400, "1h30m", "1h30m"),
        (3659, "1h59s", "1h"),  # two units from the largest: hours and (no) minutes
        (2 * 86400 + 3 * 3600 + 17 * 60 + 42, "2d3h17m42s", "2d3h"),
        (-5, "0s", "0s"),  # a clock step back never shows as a negative age
    ],
)
def test_one_duration_formatter_writes_what_the_config_reads(
    seconds: float, exact: str, two_units: str
) -> None:
    assert format_duration(seconds) == exact
    assert parse_duration(exact) == max(seconds, 0)
    assert format_duration(seconds, units=2) == two_units  # messages: "firing for 2d3h"


# --- environment variables ----------------------------------------------------------------


def test_whole_and_embedded_environment_references_are_replaced() -> None:
    cfg = parse(
        """
        [server]
        webhook_token = "${MM_TOKEN}"
        external_url = "http://${MM_HOST}:9095"
        [[contact_groups]]
        name = "default"
        channels = ["console"]
        members = [{ name = "A", email = "${MM_USER}@example.com" }]
        [[routes]]
        match = { az = "${MM_AZ}" }
        groups = ["default"]
        """,
        env={"MM_TOKEN": "s3cret", "MM_HOST": "mm-az1", "MM_USER": "a", "MM_AZ": "az1"},
    )

    assert cfg.server.webhook_token == "s3cret"
    assert cfg.server.external_url == "http://mm-az1:9095"
    assert cfg.contact_groups[0].members == (MemberConfig("A", email="a@example.com"),)
    assert cfg.routes[0].match == {"az": "az1"}


def test_a_missing_environment_variable_is_named_at_its_key_path() -> None:
    problems = problems_of('[ha]\ntoken = "prefix-${MM_TEST_UNSET}"')
    assert problems == ["ha.token: environment variable MM_TEST_UNSET is not set"]


def test_environment_comes_from_os_environ_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MM_TEST_HA_TOKEN", "from-os")

    cfg = parse_config({"ha": {"token": "${MM_TEST_HA_TOKEN}"}})

    assert cfg.ha.token == "from-os"


def test_a_doubled_dollar_keeps_a_literal_reference() -> None:
    cfg = parse('[server]\napi_token = "a$${NOT_EXPANDED}b"')
    assert cfg.server.api_token == "a${NOT_EXPANDED}b"


def test_a_whole_reference_may_hold_a_number_or_a_boolean() -> None:
    cfg = parse(
        '[server]\nmax_body_bytes = "${MM_BODY}"\n[convergence]\nsend_resolved = "${MM_RES}"',
        env={"MM_BODY": "1024", "MM_RES": "false"},
    )
    assert cfg.server.max_body_bytes == 1024
    assert cfg.convergence.send_resolved is False


def test_a_reference_holding_no_number_is_a_problem_that_does_not_show_the_value() -> None:
    problems = problems_of('[storm]\nthreshold = "${MM_N}"', env={"MM_N": "secret-ish"})
    assert problems == ["storm.threshold: expected an integer, but ${MM_N} does not hold one"]


# --- reading files ------------------------------------------------------------------------


def test_a_toml_syntax_error_is_one_problem_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mm.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9095"\ninstance = \n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    (problem,) = caught.value.problems
    assert problem.startswith("line 3, column 12: TOML syntax error: ")


def test_a_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")

    assert caught.value.lines() == [
        f"{tmp_path / 'missing.toml'}: cannot read the file: No such file or directory"
    ]


# --- listen addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listen, expected",
    [
        ("127.0.0.1:9095", ("127.0.0.1", 9095)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("mm-az1.example.com:80", ("mm-az1.example.com", 80)),
    ],
)
def test_listen_is_split_into_host_and_port(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9095", ":9095", "::1:9095", "[zz]:80", "h:65536", "h:p"])
def test_listen_that_is_not_host_and_port_is_refused(listen: str) -> None:
    with pytest.raises(ValueError):
        split_listen(listen)


# --- warnings and summary -----------------------------------------------------------------


def test_a_valid_default_config_has_no_warnings() -> None:
    assert config_warnings(default_config()) == []


def test_intervals_that_defeat_each_other_are_warned_about() -> None:
    cfg = parse('[convergence]\ngroup_wait = "10m"\ngroup_interval = "5m"\nrepeat_interval = "1m"')

    assert paths_of(config_warnings(cfg)) == [
        "convergence.repeat_interval",
        "convergence.group_wait",
    ]


def test_an_email_channel_for_a_group_without_addresses_is_warned_about() -> None:
    cfg = replace(
        default_config(),
        channels=(
            ChannelConfig("mail", "email", None),
            ChannelConfig("wecom", "wechat", None),
        ),
        contact_groups=(
            ContactGroupConfig("default", ("mail", "wecom"), (MemberConfig("A", wechat="a"),)),
        ),
    )

    (warning,) = config_warnings(cfg)

    assert warning.startswith('contact_groups[0].members: channel "mail" (email) needs members')


def test_an_unused_channel_and_an_unguarded_public_webhook_are_warned_about() -> None:
    cfg = parse(
        '[server]\nlisten = "0.0.0.0:9095"\n'
        '[channels.console]\ntype = "console"\n[channels.spare]\ntype = "console"'
    )

    # (and the console, closed on a public address without users: tests/test_console_config.py)
    assert paths_of(config_warnings(cfg)) == [
        "channels.spare",
        "server.webhook_token",
        "console.users",
    ]


def test_summary_counts_what_was_configured() -> None:
    cfg = parse(
        """
        [server]
        instance = "mm-az1"
        [[routes]]
        groups = ["default"]
        [[watchdog.heartbeats]]
        name = "prometheus"
        match = { alertname = "DeadMansSwitch" }
        [[peers]]
        name = "mm-az2"
        url = "http://mm-az2:9095"
        """
    )

    assert summary(cfg) == (
        "ok: 1 channels, 1 contact groups, 1 routes, 1 heartbeats, 1 peers "
        "(listen 127.0.0.1:9095, instance mm-az1)"
    )
