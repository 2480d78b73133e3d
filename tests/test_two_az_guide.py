"""The README's "Two availability zones, step by step", checked by the real tools.

Every ```toml block goes through the real config loader (`load_config` on a file, with the
tokens in the environment and the certificates the guide's own openssl commands make); every
```yaml block through the tool that reads it (amtool for the Alertmanager config, promtool for
Prometheus's config and rules); every `monitor-manager` command shown must exist with its
flags, and the outputs shown are what the code prints. amtool and promtool come from the
Debian packages prometheus-alertmanager and prometheus, the certificates from
openssl (scripts/test.sh installs all three): where one is absent its tests fail, saying so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from monitor_manager.cli import route_test
from monitor_manager.config import (
    Config,
    PeerConfig,
    config_warnings,
    load_config,
    peer_ssl_context,
    serve_anyway_problems,
    server_ssl_context,
    summary,
)
from monitor_manager.config.schema import (
    ConsoleConfig,
    ConvergenceConfig,
    HAConfig,
    HeartbeatConfig,
    ServerConfig,
    StorageConfig,
    TemplatesConfig,
    WatchdogConfig,
)
from monitor_manager.watch.watchdog import is_heartbeat

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
UNIT = ROOT / "deploy" / "monitor-manager.service"
RULES = ROOT / "rules"
TITLE = "## Two availability zones, step by step"
TLS_DIR = "/etc/monitor-manager/tls/"
INSTANCES = ("mm-az1", "mm-az2")
ENV = {
    "MM_WEBHOOK_TOKEN": "webhook-token-0123456789abcdef",
    "MM_API_TOKEN": "api-token-0123456789abcdef",
    "MM_HA_TOKEN": "ha-token-0123456789abcdef",
    "MM_SMTP_PASSWORD": "smtp password",
    "MM_WECOM_SECRET": "wecom-secret",
}
TOOL_TIMEOUT = 60.0


# ---------------------------------------------------------------------------- the section


def section() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(TITLE + "\n") == 1, f"README.md has no (or more than one) {TITLE!r}"
    start = text.index(TITLE + "\n")
    end = text.index("\n## ", start + len(TITLE))
    return text[start:end]


def blocks(lang: str) -> list[str]:
    """The fenced blocks of one language in the section, dedented (blocks inside list items
    are indented with the item)."""
    out = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", section(), re.S | re.M):
        if m.group(2) == lang:
            indent = len(m.group(1))
            out.append("".join(line[indent:] for line in m.group(3).splitlines(True)))
    return out


def swap_azs(text: str) -> str:
    return text.replace("az1", "\0").replace("az2", "az1").replace("\0", "az2")


def overlay(full: str, changes: str) -> str:
    """`full` with each `key = value` line of `changes` put in place of the same key's line
    in the same table; every changed key must exist there exactly once."""
    wanted: dict[tuple[str, str], str] = {}
    header = ""
    for line in changes.splitlines():
        if re.fullmatch(r"\[\[?[\w.-]+\]\]?", line.strip()):
            header = line.strip()
        elif "=" in line:
            wanted[(header, line.split("=")[0].strip())] = line
    out, used, header = [], [], ""
    for line in full.splitlines():
        if re.fullmatch(r"\[\[?[\w.-]+\]\]?", line.strip()):
            header = line.strip()
        elif "=" in line and (header, line.split("=")[0].strip()) in wanted:
            key = (header, line.split("=")[0].strip())
            used.append(key)
            line = wanted[key]
        out.append(line)
    assert sorted(used) == sorted(wanted), (
        f"the mm-az2 lines must each replace one line of the mm-az1 file: {used} vs {wanted}"
    )
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's own openssl commands, run in a scratch directory."""
    assert shutil.which("openssl"), (
        "openssl is not installed (scripts/test.sh installs it): the guide's certificates "
        "cannot be made"
    )
    (script,) = [b for b in blocks("sh") if "openssl req -x509" in b]
    where = tmp_path_factory.mktemp("tls")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("ca.crt", *(f"{i}.{ext}" for i in INSTANCES for ext in ("crt", "key"))):
        assert (where / name).is_file(), f"the openssl commands made no {name}"
    return where


def toml_files() -> tuple[str, str]:
    """The two TOML blocks: mm-az1's whole file, and the lines that differ on mm-az2."""
    found = blocks("toml")
    assert len(found) == 2, f"expected mm-az1's config and mm-az2's changes, got {len(found)}"
    return found[0], found[1]


def load(text: str, certs: Path, tmp_path: Path, name: str) -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(TLS_DIR, f"{certs}/"), encoding="utf-8")
    return load_config(path, env=ENV)


@pytest.fixture
def configs(certificates: Path, tmp_path: Path) -> dict[str, Config]:
    az1, az2_changes = toml_files()
    return {
        "mm-az1": load(az1, certificates, tmp_path, "mm-az1"),
        "mm-az2": load(overlay(az1, az2_changes), certificates, tmp_path, "mm-az2"),
    }


def yaml_blocks(kind: str) -> list[dict[str, Any]]:
    """The section's YAML blocks of one kind: an Alertmanager config, a Prometheus config or
    a rule file."""
    out = []
    for block in blocks("yaml"):
        doc = yaml.safe_load(block)
        assert isinstance(doc, dict)
        if "receivers" in doc:
            found = "alertmanager"
        elif "groups" in doc:
            found = "rules"
        elif "scrape_configs" in doc or "alerting" in doc:
            found = "prometheus"
        else:
            pytest.fail(f"a YAML block no test checks: {block[:80]!r}")
        if found == kind:
            out.append(doc)
    return out


def raw_yaml_blocks(kind: str) -> list[str]:
    keys = {"alertmanager": "receivers:", "rules": "groups:", "prometheus": "scrape_configs:"}
    return [b for b in blocks("yaml") if re.search(rf"^{keys[kind]}", b, re.M)]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path is not None, (
        f"{name} is not installed (Debian package {package}; scripts/test.sh installs it), "
        "so the guide's YAML cannot be checked by it"
    )
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


# ---------------------------------------------------------------------------- place


def test_the_section_comes_just_before_high_availability() -> None:
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^## .*$", text, re.M)
    assert headings[headings.index(TITLE) + 1] == "## High availability"


# ---------------------------------------------------------------------------- the TOML


def test_each_instance_config_loads_and_names_the_other_as_its_peer(
    configs: dict[str, Config],
) -> None:
    for name, other in (INSTANCES, INSTANCES[::-1]):
        cfg = configs[name]
        assert cfg.server.instance == name
        assert cfg.peers == (PeerConfig(other, configs[other].server.external_url),)
        assert urlsplit(cfg.server.external_url).hostname == f"{name}.example.com"
        assert cfg.server.external_url.startswith("https://") and cfg.server.tls_cert_file
        assert cfg.server.webhook_token == ENV["MM_WEBHOOK_TOKEN"]
        assert cfg.server.api_token == ENV["MM_API_TOKEN"]
        assert cfg.ha.token == ENV["MM_HA_TOKEN"] and cfg.ha.ca_file
        assert cfg.server.listen == "0.0.0.0:9095"
        # A guide's config is clean: nothing check-config would warn about or refuse.
        assert config_warnings(cfg) == []
        assert serve_anyway_problems(cfg) == []


def test_both_instances_watch_both_prometheuses(configs: dict[str, Config]) -> None:
    for cfg in configs.values():
        beats = {b.name: b for b in cfg.watchdog.heartbeats}
        assert set(beats) == {"prometheus-az1", "prometheus-az2"}
        for az in ("az1", "az2"):
            # What Prometheus sends: DeadMansSwitch with its external labels.
            labels = {"alertname": "DeadMansSwitch", "az": az, "prometheus_replica": f"p-{az}"}
            assert [b.name for b in beats.values() if is_heartbeat(b, labels)] == [
                f"prometheus-{az}"
            ]
        assert set(cfg.watchdog_groups) <= {g.name for g in cfg.contact_groups}
        assert cfg.watchdog_groups


def test_the_mm_az2_lines_are_all_that_differ_from_mm_az1(
    configs: dict[str, Config], certificates: Path, tmp_path: Path
) -> None:
    """mm-az1's file with az1 and az2 swapped everywhere is mm-az2's: the changed lines shown
    are all that must change, and everything people and peers compare stays equal."""
    az1, _ = toml_files()
    swapped = load(swap_azs(az1), certificates, tmp_path, "swapped")

    def canonical(cfg: Config) -> Config:
        beats = tuple(sorted(cfg.watchdog.heartbeats, key=lambda b: b.name))
        watchdog = dataclasses.replace(cfg.watchdog, heartbeats=beats)
        return dataclasses.replace(cfg, source="", watchdog=watchdog)

    assert canonical(configs["mm-az2"]) == canonical(swapped)
    one, two = configs["mm-az1"], configs["mm-az2"]
    for field in ("channels", "contact_groups", "routes", "routing", "convergence", "ha"):
        assert getattr(one, field) == getattr(two, field), field


def test_the_peers_certificates_verify_with_the_guides_ca(configs: dict[str, Config]) -> None:
    """Each instance's client context (ha.ca_file) accepts the other's server certificate
    under the host name in its [[peers]] url: a TLS handshake in memory."""
    for name, other in (INSTANCES, INSTANCES[::-1]):
        client = peer_ssl_context(configs[name].ha)
        server = server_ssl_context(configs[other].server)
        assert client is not None and server is not None
        host = urlsplit(configs[name].peers[0].url).hostname
        _handshake(client, server, host)
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(client, server, f"{name}.example.com")  # its own name: not the peer's


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str | None) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj, out, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    pytest.fail("the TLS handshake did not finish")


def test_the_config_keys_the_text_names_exist() -> None:
    sections = {
        "server": ServerConfig,
        "storage": StorageConfig,
        "convergence": ConvergenceConfig,
        "templates": TemplatesConfig,
        "watchdog": WatchdogConfig,
        "ha": HAConfig,
        "console": ConsoleConfig,
    }
    named = set(
        re.findall(
            r"`(server|storage|convergence|templates|watchdog|ha|console)\.(\w+)`", section()
        )
    )
    assert named, "the section names config keys"
    for table, key in named:
        fields = {f.name for f in dataclasses.fields(sections[table])}
        assert key in fields, f"{table}.{key} is not a config key"
    # Keys named bare, by their section: each is a field there.
    for cls, keys in (
        (HAConfig, ("peer_wait", "max_clock_skew", "ca_file", "token")),
        (WatchdogConfig, ("peer_failures", "peer_interval", "ping_url", "groups")),
        (HeartbeatConfig, ("timeout", "resend_interval", "match")),
        (PeerConfig, ("name", "url")),
    ):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(keys) <= fields, (cls.__name__, set(keys) - fields)
        assert any(f"`{key}`" in section() for key in keys)


# ---------------------------------------------------------------------------- Alertmanager


def test_the_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    (raw,) = raw_yaml_blocks("alertmanager")
    path = tmp_path / "alertmanager.yml"
    path.write_text(raw, encoding="utf-8")
    result = _run([amtool, "check-config", str(path)], tmp_path)
    assert "SUCCESS" in result.stdout
    for labels, receiver in (
        (["alertname=DeadMansSwitch", "az=az1"], "monitor-manager-heartbeat"),
        (["alertname=DeadMansSwitch", "az=az2"], "monitor-manager-heartbeat"),
        (["alertname=DiskFull", "cluster=prod"], "monitor-manager"),
    ):
        routed = _run(
            [amtool, "config", "routes", "test", f"--config.file={path}", *labels], tmp_path
        )
        assert routed.stdout.split() == [receiver], (labels, routed.stdout)
    # What the text says amtool answers (however the paragraph is wrapped).
    prose = " ".join(section().split())
    assert "alertname=DeadMansSwitch az=az1` (it answers `monitor-manager-heartbeat`)" in prose


def test_every_receiver_calls_both_instances_with_the_token_and_the_ca(
    configs: dict[str, Config],
) -> None:
    (am,) = yaml_blocks("alertmanager")
    urls = sorted(f"{c.server.external_url}/webhook/alertmanager" for c in configs.values())
    receivers = {r["name"]: r for r in am["receivers"]}
    assert set(receivers) == {"monitor-manager", "monitor-manager-heartbeat"}
    for name, receiver in receivers.items():
        hooks = receiver["webhook_configs"]
        assert sorted(h["url"] for h in hooks) == urls, name
        for hook in hooks:
            assert hook["send_resolved"] is (name == "monitor-manager"), (name, hook)
            auth = hook["http_config"]["authorization"]
            assert auth.get("type", "Bearer") == "Bearer"
            assert auth["credentials_file"] == "/etc/prometheus/monitor-manager.token"
            assert hook["http_config"]["tls_config"]["ca_file"] == (
                "/etc/prometheus/monitor-manager-ca.crt"
            )
    installs = "\n".join(blocks("sh"))
    # The files it reads are the ones the guide installs, from the webhook token.
    assert "monitor-manager.token /etc/prometheus/monitor-manager.token" in installs
    assert "ca.crt /etc/prometheus/monitor-manager-ca.crt" in installs
    assert "sed -n 's/^MM_WEBHOOK_TOKEN=//p' mm.env > monitor-manager.token" in installs


def test_the_heartbeat_route_cadence_fits_the_heartbeat_timeouts(
    configs: dict[str, Config],
) -> None:
    (am,) = yaml_blocks("alertmanager")
    first = am["route"]["routes"][0]
    assert first["matchers"] == ['alertname="DeadMansSwitch"']
    assert first["receiver"] == "monitor-manager-heartbeat"
    assert first["group_by"] == ["..."]
    group_interval, repeat = _seconds(first["group_interval"]), _seconds(first["repeat_interval"])
    assert repeat <= 60, "the heartbeat's repeat_interval is short"
    # Alertmanager checks repeat_interval on group_interval ticks (rules/README.md).
    cadence = (repeat // group_interval + 1) * group_interval
    for cfg in configs.values():
        for beat in cfg.watchdog.heartbeats:
            assert beat.resend_interval == cadence, beat.name
            assert beat.timeout >= 3 * cadence, beat.name


# ---------------------------------------------------------------------------- Prometheus


def test_the_rule_blocks_pass_promtool_and_match_the_shipped_rule(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    raws = raw_yaml_blocks("rules")
    assert raws, "the section shows the DeadMansSwitch rule"
    for i, raw in enumerate(raws):
        path = tmp_path / f"rules{i}.yml"
        path.write_text(raw, encoding="utf-8")
        _run([promtool, "check", "rules", str(path)], tmp_path)
    shipped = yaml.safe_load((RULES / "deadmansswitch.rules.yml").read_text(encoding="utf-8"))
    (shown,) = yaml_blocks("rules")
    rule = shown["groups"][0]["rules"][0]
    original = shipped["groups"][0]["rules"][0]
    for key in ("alert", "expr", "labels"):
        assert rule[key] == original[key], key
    assert shown["groups"][0]["name"] == shipped["groups"][0]["name"]


def test_the_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    (raw,) = raw_yaml_blocks("prometheus")
    path = tmp_path / "prometheus.yml"
    path.write_text(raw, encoding="utf-8")
    # --syntax-only: the rule files and the CA live under /etc/prometheus on the hosts.
    _run([promtool, "check", "config", "--syntax-only", str(path)], tmp_path)


def test_the_prometheus_config_labels_its_az_and_reaches_both_hosts(
    configs: dict[str, Config],
) -> None:
    (prom,) = yaml_blocks("prometheus")
    labels = prom["global"]["external_labels"]
    assert labels == {"az": "az1", "prometheus_replica": "prometheus-az1"}
    # The replica label is out of every alert's identity; az too, as the comment says.
    for cfg in configs.values():
        assert set(labels) <= set(cfg.convergence.ignore_labels)
    assert sorted(Path(f).name for f in prom["rule_files"]) == sorted(
        ["deadmansswitch.rules.yml", "monitor-manager.rules.yml"]
    )
    for name in prom["rule_files"]:
        assert (RULES / Path(name).name).is_file()
        assert f"rules/{Path(name).name}" in "\n".join(blocks("sh"))  # installed in step 5
    (ams,) = prom["alerting"]["alertmanagers"]
    assert sorted(ams["static_configs"][0]["targets"]) == [
        f"{i}.example.com:9093" for i in INSTANCES
    ]
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "monitor-manager"  # what MonitorManagerDown selects
    assert job["scheme"] == "https"
    hosts = sorted(
        f"{urlsplit(c.server.external_url).hostname}:{urlsplit(c.server.external_url).port}"
        for c in configs.values()
    )
    assert sorted(job["static_configs"][0]["targets"]) == hosts


def test_the_alertmanager_flags_exist() -> None:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is not installed (scripts/test.sh installs it)"
    (args,) = re.findall(r'^ARGS="(.*)"$', section(), re.M)
    help_text = subprocess.run(
        [binary, "--help"], capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    known = set(re.findall(r"--([\w.-]+)", help_text.stdout + help_text.stderr))
    flags = re.findall(r"--([\w.-]+)=", args)
    assert flags and set(flags) <= known, set(flags) - known


# ---------------------------------------------------------------------------- commands


def _mm_commands() -> list[list[str]]:
    """Every monitor-manager command in the section, as argv after the program name: lines
    calling `mm` (the guide's wrapper) or `monitor-manager`, in code blocks and after `$ `."""
    found = []
    text = section()
    for line in re.findall(
        r"^\s*(?:\$ )?(?:mm|\S*/monitor-manager|monitor-manager) (.+)$", text, re.M
    ):
        words = shlex.split(line.split(" #")[0])
        if words and re.fullmatch(r"[a-z][a-z-]+", words[0]):
            found.append(words)
    # and inline: `monitor-manager serve --config ...`
    found += [shlex.split(span) for span in re.findall(r"`monitor-manager ([^`]+)`", text)]
    return found


def test_every_command_shown_exists_with_its_flags() -> None:
    commands = _mm_commands()
    subs = {c[0] for c in commands}
    assert {"check-config", "send-test", "route-test", "serve", "hash-password"} <= subs
    for words in commands:
        help_text = subprocess.run(
            [sys.executable, "-m", "monitor_manager", words[0], "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        assert help_text.returncode == 0, f"monitor-manager {words[0]}: {help_text.stderr}"
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in help_text.stdout, f"monitor-manager {words[0]} has no {flag}"


def test_the_mm_wrapper_runs_as_the_unit_does() -> None:
    unit = UNIT.read_text(encoding="utf-8")
    (wrapper,) = [b for b in blocks("sh") if "mm() {" in b]
    program = re.search(r"^ExecStart=(\S+) serve --config (\S+)$", unit, re.M)
    assert program is not None
    assert program.group(1) in wrapper  # the same program
    assert f"mm check-config --config {program.group(2)}" in wrapper  # the same config
    assert "-p User=monitor-manager" in wrapper and "User=monitor-manager" in unit
    env = re.search(r"^EnvironmentFile=-?(\S+)$", unit, re.M)
    assert env is not None and f"-p EnvironmentFile={env.group(1)}" in wrapper
    assert f"monitor-manager serve --config {program.group(2)}" in section()


def test_the_install_steps_put_every_file_the_config_names(configs: dict[str, Config]) -> None:
    installs = "\n".join(blocks("sh"))
    cfg = configs["mm-az1"]
    az1, _ = toml_files()
    for path in re.findall(r'"(/etc/monitor-manager/[^"]+)"', az1):
        assert re.search(rf"^install .*\S+ {re.escape(path)}( +#.*)?$", installs, re.M), path
    assert not Path(cfg.storage.path).is_absolute()  # in the unit's state directory
    assert "StateDirectory=monitor-manager" in UNIT.read_text(encoding="utf-8")
    for token in ("MM_WEBHOOK_TOKEN", "MM_API_TOKEN", "MM_HA_TOKEN"):
        assert f'echo "{token}=$(openssl rand -hex 32)"' in installs
    for name in re.findall(r"\$\{(MM_\w+)\}", az1):
        assert name in section().split("**4.")[0], f"step 2 does not say where {name} comes from"


def test_the_outputs_shown_are_what_the_commands_print(configs: dict[str, Config]) -> None:
    text = section()
    cfg = configs["mm-az1"]
    assert "\n" + summary(cfg) + "\n" in text
    shown = re.findall(r"^\$ mm route-test --config \S+ (.+)\n((?:[^$`].*\n)+)", text, re.M)
    assert len(shown) >= 3
    for labels, output in shown:
        pairs = dict(word.split("=", 1) for word in labels.split())
        assert route_test(cfg, pairs) == output.rstrip("\n"), labels
    sre = cfg.contact_group("sre")
    assert "prints " + ",\n".join(f"`{c}: ok`" for c in sre.channels) in text


def test_the_healthz_example_has_the_fields_the_service_sends() -> None:
    from monitor_manager.web import api

    (example,) = re.findall(r"^# (\{\"status\": \"ok\".*\})$", section(), re.M)
    source = Path(api.__file__).read_text(encoding="utf-8")
    handler = source[source.index("async def healthz") : source.index("async def readiness")]
    assert set(json.loads(example)) == set(re.findall(r'^\s+"(\w+)":', handler, re.M))
    assert re.search(r'^# \{"status": "ready"\}$', section(), re.M)
    assert '"status": "ready"' in source


def test_the_paths_and_metrics_named_exist() -> None:
    text = section()
    code = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "monitor_manager").rglob("*.py")
    )
    for metric in set(re.findall(r"monitor_manager_\w+", text)):
        assert f'"{metric}"' in code, metric
    for path in set(re.findall(r"(/(?:api/v\d|webhook)/[\w/-]+|/readyz|/healthz)", text)):
        assert path.rstrip("*").rstrip("/") in code, path
    console_routes = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "monitor_manager" / "web").rglob("*.py")
    )
    assert '"/watchdog"' in console_routes
