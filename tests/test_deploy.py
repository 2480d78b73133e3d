"""deploy/: the systemd unit checked by the real systemd-analyze, the container file by the
official Dockerfile parser (BuildKit's, through the PyPI package `dockerfile`), and what both
rely on at run time tried on a real service process: W^X memory (MemoryDenyWriteExecute) and
the HEALTHCHECK command.

systemd-analyze (Debian package `systemd`) is required: a missing tool fails these tests rather
than skipping them, as with promtool in test_rules.py. scripts/test.sh installs it.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from builders import alert_json, payload
from monitor_manager import cli
from monitor_manager.app import SEND_GRACE_SECONDS
from monitor_manager.config import StorageConfig
from processes import ServeProcess, free_port, http

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "monitor-manager.service"
SYSUSERS = DEPLOY / "monitor-manager.sysusers"
CONTAINERFILE = DEPLOY / "Containerfile"

INSTALLED_BINARY = "/opt/monitor-manager/bin/monitor-manager"
CONFIG_PATH = "/etc/monitor-manager/config.toml"
STATE_DIR = "/var/lib/monitor-manager"
# Measured with systemd 252 (Debian 12): 1.1. Loosening one setting of weight (PrivateUsers,
# ProtectSystem, a capability) pushes the score past this.
MAX_EXPOSURE = 1.5

# [Service] settings the unit must have, exactly.
HARDENING = {
    "User": "monitor-manager",
    "Group": "monitor-manager",
    "StateDirectory": "monitor-manager",
    "WorkingDirectory": "%S/monitor-manager",
    "EnvironmentFile": "-/etc/monitor-manager/env",
    "ExecStart": f"{INSTALLED_BINARY} serve --config {CONFIG_PATH}",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
}


# ---------------------------------------------------------------------------- systemd unit


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze is missing: install the Debian package systemd (scripts/test.sh does)",
            pytrace=False,
        )
    return path


def _entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting of a unit file, repeated keys included."""
    section, out = "", []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _service() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for section, key, value in _entries(UNIT.read_text()):
        if section == "Service":
            settings.setdefault(key, []).append(value)
    return settings


def _seconds(span: str) -> float:
    """A systemd time span as used here ("45s", "1min 30s", "90")."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60}
    parts = re.findall(r"(\d+)\s*([a-z]*)", span)
    assert parts, span
    return sum(int(n) * units[u] for n, u in parts)


def _testable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's `monitor-manager`.

    `systemd-analyze verify` fails a unit whose ExecStart binary does not exist, and the unit
    names the production path /opt/monitor-manager/bin/monitor-manager, absent here. The copy
    changes only that path (to the console script pip installed beside this Python); it keeps
    the file name, which systemd takes as the unit name."""
    binary = Path(sys.executable).parent / "monitor-manager"
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: install the package (pip install -e '.[test]')", pytrace=False
        )
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) == 1, "ExecStart should name the binary once"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


def test_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    # verify exits 0 on an unknown key or a bad value, printing a warning: any output fails.
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(_testable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), (
        f"systemd-analyze verify exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_unit_has_every_hardening_setting() -> None:
    service = _service()
    wrong = {
        key: service.get(key) for key, value in HARDENING.items() if service.get(key) != [value]
    }
    assert not wrong, f"settings missing or different (want {HARDENING}): {wrong}"
    assert "@system-service" in service["SystemCallFilter"]
    assert "ProcSubset" not in service, "ProcSubset=pid hides /proc/stat: no process_* metrics"


def test_unit_runs_as_the_user_that_sysusers_creates() -> None:
    (user,) = [
        line.split()[1] for line in SYSUSERS.read_text().splitlines() if line.startswith("u ")
    ]
    assert user == HARDENING["User"]


def test_unit_store_lands_in_the_state_directory() -> None:
    # The working directory is the state directory, so the default (relative) storage.path
    # puts the store there, where ProtectSystem=strict still lets the service write.
    assert not Path(StorageConfig().path).is_absolute()
    service = _service()
    assert service["WorkingDirectory"] == [f"%S/{service['StateDirectory'][0]}"]


def test_unit_stop_timeout_covers_the_clean_stop() -> None:
    # serve lets requests in flight finish (aiohttp's shutdown_timeout), then sends in flight
    # (SEND_GRACE_SECONDS); systemd must not SIGKILL it before both ran out.
    match = re.search(r"shutdown_timeout=([\d.]+)", inspect.getsource(cli.serve_forever))
    assert match is not None
    needed = float(match.group(1)) + SEND_GRACE_SECONDS
    (timeout,) = _service()["TimeoutStopSec"]
    assert _seconds(timeout) >= needed + 10, f"TimeoutStopSec={timeout} < {needed}s + 10s"


def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    usage = subprocess.run([analyze, "--help"], capture_output=True, text=True, check=False)
    if "--offline" not in usage.stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(_testable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match is not None, f"no exposure level in:\n{result.stdout}{result.stderr}"
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure of {UNIT.name}: {exposure}")
    open_items = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert exposure < MAX_EXPOSURE, f"exposure {exposure}:\n" + "\n".join(open_items)


# A process started through this wrapper runs under the kernel's W^X rule (PR_SET_MDWE,
# Linux 6.3+: no writable-and-executable mapping, no mprotect adding PROT_EXEC), which is what
# MemoryDenyWriteExecute=yes enforces with seccomp. It survives execve.
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""
MDWE_PROBE = """
import ctypes, mmap
state = ctypes.CDLL(None).prctl(66, 0, 0, 0, 0)  # PR_GET_MDWE
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    wx = "allowed"
except OSError:
    wx = "refused"
print(f"mdwe={state} wx={wx}")
"""
MDWE_PREFIX = [sys.executable, "-c", MDWE_WRAPPER]

CONSOLE_CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "mm-deploy"
[convergence]
group_wait = "100ms"
group_interval = "1s"
[channels.console]
type = "console"
[[contact_groups]]
name = "ops"
channels = ["console"]
[routing]
default_groups = ["ops"]
"""


def _delivered(proc: ServeProcess) -> bool:
    status, body = http("GET", f"{proc.url}/api/v1/notifications?state=delivered")
    return status == 200 and bool(body["notifications"])


def test_service_runs_under_write_xor_execute_memory(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_MDWE is Linux only")
    probe = subprocess.run(
        [*MDWE_PREFIX, sys.executable, "-c", MDWE_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if "PR_SET_MDWE failed" in probe.stderr:
        pytest.skip(f"kernel without PR_SET_MDWE (Linux < 6.3): {probe.stderr.strip()}")
    assert probe.stdout.strip() == "mdwe=1 wx=refused", probe.stdout + probe.stderr

    proc = ServeProcess(tmp_path, CONSOLE_CONFIG, command_prefix=MDWE_PREFIX)
    try:
        proc.start()
        status, answer = http(
            "POST",
            f"{proc.url}/webhook/alertmanager",
            payload(alert_json("DeployCheck", cluster="prod")),
        )
        assert status == 200, answer
        proc.wait_for(lambda: _delivered(proc), what="a delivery through the console")
        assert http("GET", f"{proc.url}/readyz")[0] == 200
        assert proc.terminate() == 0
    finally:
        proc.stop()
    assert "[FIRING:1] DeployCheck" in proc.stdout.read_text()
    assert "Traceback" not in proc.stderr.read_text(), proc.logs()


# ---------------------------------------------------------------------------- container file


def _instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(CONTAINERFILE))  # raises GoParseError when malformed


def _final_stage() -> list[dockerfile.Command]:
    commands = list(_instructions())
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[last_from:]


def _one(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = [c for c in stage if c.cmd == cmd]
    assert len(found) == 1, f"want one {cmd} in the final stage, have {len(found)}"
    return found[0]


def _env(stage: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def test_containerfile_parses_and_uses_only_known_instructions() -> None:
    known = {cmd.upper() for cmd in dockerfile.all_cmds()}
    commands = _instructions()
    unknown = [(c.start_line, c.cmd) for c in commands if c.cmd not in known]
    assert not unknown, f"instructions a builder does not know: {unknown}"
    assert [c.value[0] for c in commands if c.cmd == "FROM"] == ["python:3.11-slim"] * 2


def test_containerfile_runs_as_a_non_root_user_it_creates() -> None:
    stage = _final_stage()
    users = [c for c in stage if c.cmd == "USER"]
    assert users, "the final stage sets no USER: the service would run as root"
    user = users[-1].value[0]
    uid = user.split(":")[0]
    assert uid not in ("root", "0"), user
    assert any(c.cmd == "RUN" and f"--uid {uid}" in c.value[0] for c in stage), (
        f"no RUN in the final stage creates uid {uid}"
    )


def test_containerfile_keeps_the_store_on_a_volume_and_reads_config_from_etc() -> None:
    stage = _final_stage()
    assert STATE_DIR in _one(stage, "VOLUME").value
    # The default storage.path is relative: the working directory is the volume.
    assert _one(stage, "WORKDIR").value == (STATE_DIR,)
    cmd = _one(stage, "CMD")
    assert cmd.json and list(cmd.value) == ["serve", "--config", CONFIG_PATH]
    entrypoint = _one(stage, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("monitor-manager",)
    assert _env(stage)["PATH"].startswith("/opt/monitor-manager/bin:")


def test_containerfile_exposes_the_port_its_healthcheck_asks() -> None:
    stage = _final_stage()
    (port,) = _one(stage, "EXPOSE").value
    healthcheck = _one(stage, "HEALTHCHECK")
    assert healthcheck.json and healthcheck.value[:3] == ("CMD", "python", "-c")
    assert _env(stage)["MM_HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/healthz"
    flags = dict(f.lstrip("-").split("=", 1) for f in healthcheck.flags)
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags), flags


def test_containerfile_copies_only_files_the_repository_has() -> None:
    # The build context is the repository root (docker build -f deploy/Containerfile .).
    for command in _instructions():
        if command.cmd in ("COPY", "ADD") and not any(
            f.startswith("--from") for f in command.flags
        ):
            for source in command.value[:-1]:
                assert (REPO / source).exists(), f"line {command.start_line}: no {source}"


def test_containerfile_healthcheck_passes_on_a_healthy_service_and_fails_otherwise(
    tmp_path: Path,
) -> None:
    # The HEALTHCHECK command exactly as the container runs it, python being this one.
    _, _, *argv = _one(_final_stage(), "HEALTHCHECK").value

    def check(url: str) -> int:
        return subprocess.run(
            [sys.executable, *argv],
            env={"MM_HEALTHCHECK_URL": url},
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    proc = ServeProcess(tmp_path, CONSOLE_CONFIG)
    try:
        proc.start()
        assert check(f"{proc.url}/healthz") == 0
        assert check(f"{proc.url}/no-such-page") == 1
    finally:
        proc.stop()
    assert check(f"http://127.0.0.1:{free_port()}/healthz") == 1
