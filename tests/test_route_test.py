"""`routing.explain` and `monitor-manager route-test`: where an alert with given labels goes,
and why, decided by the Router's own matching."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from monitor_manager.cli import main
from monitor_manager.config import Config, parse_config
from monitor_manager.converge.routing import NotRouted, RouteMatch, Router, explain, not_routed

CONFIG = """
[convergence]
ignore_labels = ["replica"]
[channels.console]
type = "console"
[channels.mail]
type = "console"
[channels.robot]
type = "console"
[[contact_groups]]
name = "sre"
channels = ["mail", "console"]
[[contact_groups]]
name = "dba"
channels = ["mail", "robot"]
[[contact_groups]]
name = "web"
channels = ["robot"]
[routing]
default_groups = ["sre"]
[[routes]]
match = { team = "db" }
match_re = { severity = "critical|page" }
groups = ["dba"]
continue = true
[[routes]]
match_re = { severity = "critical|page" }
groups = ["sre", "dba"]
[[routes]]
match = { team = "web" }
groups = ["web"]
[[routes]]
match = { replica = "b" }
groups = ["web"]
[[watchdog.heartbeats]]
name = "prometheus-az1"
match = { alertname = "DeadMansSwitch", az = "az1" }
timeout = "6m"
"""

SRE = ("mail", "console")
DBA = ("mail", "robot")


@pytest.fixture
def config() -> Config:
    return parse_config(tomllib.loads(CONFIG), "rt.toml", env={})


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rt.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param(
            {"team": "db", "severity": "critical"},
            [RouteMatch("dba", DBA, 0), RouteMatch("sre", SRE, 1)],
            id="continue: the next route adds sre, dba keeps the route that named it first",
        ),
        pytest.param(
            {"severity": "page"},
            [RouteMatch("sre", SRE, 1), RouteMatch("dba", DBA, 1)],
            id="match_re alone, groups in the route's order",
        ),
        pytest.param(
            {"team": "web", "severity": "critical"},
            [RouteMatch("sre", SRE, 1), RouteMatch("dba", DBA, 1)],
            id="the first match without continue ends the walk",
        ),
        pytest.param({"team": "web"}, [RouteMatch("web", ("robot",), 2)], id="match"),
        pytest.param(
            {"team": "db", "severity": "warning"},
            [RouteMatch("sre", SRE, "default")],
            id="no route matched: default_groups",
        ),
        pytest.param(
            {"severity": "critical-ish"},
            [RouteMatch("sre", SRE, "default")],
            id="match_re is fully anchored",
        ),
        pytest.param(
            {"replica": "b"},
            [RouteMatch("web", ("robot",), 3)],
            id="routing sees the labels ignore_labels leaves out of the identity",
        ),
    ],
)
def test_explain_names_each_contact_group_its_channels_and_the_route_that_chose_it(
    config: Config, labels: dict[str, str], expected: list[RouteMatch]
) -> None:
    assert explain(config, labels) == expected
    # The same decision as the Router the pipeline routes with.
    assert [m.name for m in explain(config, labels)] == Router(config).route(labels)
    assert not_routed(config, labels) is None


def test_a_heartbeat_is_never_routed_and_explain_says_which_it_is(config: Config) -> None:
    labels = {"alertname": "DeadMansSwitch", "az": "az1", "severity": "critical"}
    assert explain(config, labels) == []
    assert not_routed(config, labels) == NotRouted("heartbeat", "prometheus-az1")
    assert not_routed(config, {"alertname": "DeadMansSwitch", "az": "az2"}) is None


def test_an_alert_claiming_an_internal_identity_is_never_routed(config: Config) -> None:
    labels = {"alertname": "PeerDown", "source": "monitor-manager", "severity": "critical"}
    assert explain(config, labels) == []
    assert not_routed(config, labels) == NotRouted("internal")


# --- the command ------------------------------------------------------------------------------


def route_test(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["route-test", *args])
    except SystemExit as exc:  # argparse's errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_route_test_prints_groups_channels_and_the_matching_routes_with_their_matchers(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = route_test(capsys, "--config", str(config_file), "team=db", "severity=page")
    assert code == 0, err
    assert out.splitlines() == [
        "dba: mail, robot",
        '  routes[0] matched {team="db", severity=~"critical|page"}; continue = true: '
        "later routes tried too",
        "sre: mail, console",
        '  routes[1] matched {severity=~"critical|page"}',
    ]


def test_route_test_says_when_default_groups_caught_the_alert(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = route_test(capsys, "--config", str(config_file), "alertname=Disk")
    assert code == 0
    assert out.splitlines() == ["sre: mail, console", "  routing.default_groups: no route matched"]


def test_route_test_json_is_for_scripts(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = route_test(
        capsys, "--config", str(config_file), "--format", "json", "team=db", "severity=page"
    )
    assert code == 0
    assert json.loads(out) == {
        "contact_groups": [
            {"name": "dba", "channels": ["mail", "robot"], "route": 0},
            {"name": "sre", "channels": ["mail", "console"], "route": 1},
        ],
        "not_routed": None,
    }
    code, out, _ = route_test(capsys, "--config", str(config_file), "--format", "json", "x=1")
    assert json.loads(out)["contact_groups"] == [
        {"name": "sre", "channels": ["mail", "console"], "route": "default"}
    ]


@pytest.mark.parametrize(
    ("labels", "says", "reason"),
    [
        (
            ["alertname=DeadMansSwitch", "az=az1"],
            'match heartbeat "prometheus-az1"',
            {"reason": "heartbeat", "heartbeat": "prometheus-az1"},
        ),
        (
            ["alertname=HeartbeatMissing", "source=monitor-manager"],
            "the webhook drops",
            {"reason": "internal", "heartbeat": ""},
        ),
    ],
)
def test_route_test_says_why_an_alert_reaches_nobody(
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    labels: list[str],
    says: str,
    reason: dict[str, str],
) -> None:
    code, out, _ = route_test(capsys, "--config", str(config_file), *labels)
    assert code == 0
    assert out.startswith("no contact group: ") and says in out
    code, out, _ = route_test(capsys, "--config", str(config_file), "--format", "json", *labels)
    assert json.loads(out) == {"contact_groups": [], "not_routed": reason}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("severity", "'severity' is not LABEL=VALUE"),
        ("1team=db", "'1team' is not a valid label name"),
        ("team-name=db", "'team-name' is not a valid label name"),
        ("=db", "'' is not a valid label name"),
    ],
)
def test_a_bad_label_argument_exits_2_naming_it(
    config_file: Path, capsys: pytest.CaptureFixture[str], argument: str, message: str
) -> None:
    code, out, err = route_test(capsys, "--config", str(config_file), "team=db", argument)
    assert code == 2 and out == ""
    assert f"route-test: error: {message}" in err


def test_a_label_given_twice_exits_2(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = route_test(capsys, "--config", str(config_file), "team=db", "team=web")
    assert code == 2 and "label 'team' is given twice" in err


def test_an_empty_value_is_a_label_like_any_other(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = route_test(capsys, "--config", str(config_file), "team=")
    assert code == 0 and out.startswith("sre: ")


def test_an_invalid_config_exits_1_with_every_problem_as_check_config_prints_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        CONFIG.replace('groups = ["web"]\n[[routes]]', 'groups = ["webb"]\n[[routes]]').replace(
            'timeout = "6m"', 'timeout = "6 m"'
        )
    )
    code, out, err = route_test(capsys, "--config", str(path), "team=db")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{path}: watchdog.heartbeats[0].timeout: '6 m' is not a duration "
        '(use e.g. "500ms", "30s", "5m", "4h", "1d")',
        f'{path}: routes[2].groups: contact group "webb" does not exist',
    ]
    assert main(["check-config", "--config", str(path)]) == 1
    assert capsys.readouterr().err == err


def test_route_test_runs_as_a_command(config_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor_manager", "route-test", "--config", str(config_file)]
        + ["team=web"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'web: robot\n  routes[2] matched {team="web"}\n'
