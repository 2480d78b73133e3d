"""The benchmark's moving parts: processes pinned to cores, wrk runs, an HTTP poster, the SMTP
sink, the service's config, and the machine's description.

Everything listens on 127.0.0.1 and every load is bounded in time (wrk -d) or count (a list of
payloads), so a run always ends by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
WRK = shutil.which("wrk") or "/usr/bin/wrk"
TICKS = os.sysconf("SC_CLK_TCK")
WEBHOOK = "/webhook/alertmanager"


# -- cores -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Server on one core, load generator (and this runner, and the SMTP sink) on another."""

    server_cpu: int | None
    load_cpu: int | None

    @classmethod
    def detect(cls, enabled: bool = True) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(server_cpu=cpus[1], load_cpu=cpus[0])

    def server(self, argv: list[str]) -> list[str]:
        return argv if self.server_cpu is None else ["taskset", "-c", str(self.server_cpu), *argv]

    def load(self, argv: list[str]) -> list[str]:
        return argv if self.load_cpu is None else ["taskset", "-c", str(self.load_cpu), *argv]

    def pin_self(self) -> None:
        """The runner (poster, sink parent) stays off the server's core."""
        if self.load_cpu is not None:
            os.sched_setaffinity(0, {self.load_cpu})

    def describe(self) -> str:
        if self.server_cpu is None:
            return "none (fewer than 2 cores or no taskset): figures are less stable"
        return (
            f"server on core {self.server_cpu}; wrk, poster, SMTP sink and runner on "
            f"core {self.load_cpu} (taskset)"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_ticks(pid: int) -> int:
    """CPU time (user + system, all threads) of a live process, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """CPU time every core spent busy since boot (all processes), in clock ticks."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in kB; VmHWM is the peak RSS since it started."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    """One server process: the service or a baseline."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path
    peak_rss_kb: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /healthz answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                if http("GET", f"{self.url}/healthz", timeout=2)[0] == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer /healthz within {timeout}s:\n{self.tail()}")

    def memory(self) -> tuple[int, int]:
        rss, hwm = memory_kb(self.pid)
        self.peak_rss_kb = max(self.peak_rss_kb, hwm)
        return rss, hwm

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.memory()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], workdir: Path, port: int, pinning: Pinning) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            pinning.server(argv),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = Server(name, proc, port, workdir, log)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def start_service(
    workdir: Path, config_text: str, pinning: Pinning, name: str = "service"
) -> Server:
    port = free_port()
    config = workdir / f"{name}.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text.replace("{port}", str(port)))
    argv = [
        PYTHON,
        "-m",
        "monitor_manager",
        "--log-level",
        "WARNING",
        "serve",
        "--config",
        str(config),
    ]
    return _spawn(name, argv, workdir, port, pinning)


def start_baseline(kind: str, workdir: Path, pinning: Pinning) -> Server:
    port = free_port()
    argv = [
        PYTHON,
        str(BENCH / "baselines.py"),
        kind,
        "--port",
        str(port),
        "--db",
        str(workdir / "baseline.db"),
    ]
    return _spawn(f"baseline-{kind}", argv, workdir, port, pinning)


# -- the service's config ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings:
    db: str = "service.db"
    smtp_port: int = 9  # nothing listens: fine while nothing is due for delivery
    group_wait: str = "1h"
    group_interval: str = "1h"
    repeat_interval: str = "4h"
    storm_threshold: int = 20
    storm_window: str = "1m"
    contact_groups: tuple[str, ...] = ("ops",)
    route_label: str = "team"  # contact group N gets the alerts whose label `team` is its name
    retry_initial: str = ""  # [delivery] retry_initial and retry_max, when set
    console_channel: bool = False  # a console channel beside the mail one (prints every message)
    record: str = ""  # [server] record: a file every accepted payload is appended to


def service_config(s: ServiceSettings) -> str:
    """A config for one service process; `{port}` is filled in at start."""
    lines = [
        "[server]",
        'listen = "127.0.0.1:{port}"',
        'instance = "bench"',
        *([f'record = "{s.record}"'] if s.record else []),
        "",
        "[storage]",
        f'path = "{s.db}"',
        "",
        "[convergence]",
        'group_by = ["alertname", "cluster"]',
        f'group_wait = "{s.group_wait}"',
        f'group_interval = "{s.group_interval}"',
        f'repeat_interval = "{s.repeat_interval}"',
        "",
        "[storm]",
        f"threshold = {s.storm_threshold}",
        f'window = "{s.storm_window}"',
        "",
    ]
    if s.retry_initial:
        lines += [
            "[delivery]",
            f'retry_initial = "{s.retry_initial}"',
            f'retry_max = "{s.retry_initial}"',
            "",
        ]
    if s.console_channel:
        lines += ["[channels.console]", 'type = "console"', ""]
    channels = '["mail", "console"]' if s.console_channel else '["mail"]'
    lines += [
        "[channels.mail]",
        'type = "email"',
        'host = "127.0.0.1"',
        f"port = {s.smtp_port}",
        'tls = "none"',
        'from = "Monitor Manager <mm@bench.invalid>"',
        "",
    ]
    for name in s.contact_groups:
        lines += [
            "[[contact_groups]]",
            f'name = "{name}"',
            f"channels = {channels}",
            f'members = [{{ name = "On call {name}", email = "{name}@bench.invalid" }}]',
            "",
        ]
    lines += ["[routing]", f'default_groups = ["{s.contact_groups[0]}"]', ""]
    if len(s.contact_groups) > 1:
        for name in s.contact_groups:
            lines += [
                "[[routes]]",
                f'match = {{ {s.route_label} = "{name}" }}',
                f'groups = ["{name}"]',
                "",
            ]
    return "\n".join(lines)


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One timed load: wrk's counts and latencies, and who used how much CPU meanwhile."""

    requests: int
    seconds: float
    alerts_per_request: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu: float  # cores' worth of CPU the server used (1.0 = one core busy)
    generator_cpu: float
    other_cpu: float  # everything else on the machine: noise from other work

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def alerts_per_s(self) -> float:
        return self.rps * self.alerts_per_request


def run_wrk(
    server: Server,
    alerts: int,
    tag: str,
    seconds: float,
    pinning: Pinning,
    connections: int = 16,
    rate: float | None = None,
    token: str = "",
) -> LoadResult:
    """Closed loop at `connections`, or paced at `rate` requests/s in total."""
    script = BENCH / "wrk" / ("webhook_paced.lua" if rate else "webhook.lua")
    args = [str(alerts), tag, token]
    if rate:
        args.append(f"{rate:.3f}")
    argv = pinning.load(
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{max(seconds, 1):.0f}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            server.url,
            "--",
            *args,
        ]
    )
    server_before, busy_before = proc_ticks(server.pid), machine_busy_ticks()
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        # wait4, not wait: it also returns the generator's own CPU time.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        out = output.read().decode(errors="replace")
    wall = time.monotonic() - started
    server_ticks = proc_ticks(server.pid) - server_before
    busy = machine_busy_ticks() - busy_before
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]}")
    data = json.loads(match.group(1))
    seconds_run = data["duration_us"] / 1e6
    gen_seconds = usage.ru_utime + usage.ru_stime
    other = busy / TICKS - server_ticks / TICKS - gen_seconds
    lat = data["latency_us"]
    return LoadResult(
        requests=data["requests"],
        seconds=seconds_run,
        alerts_per_request=alerts,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        errors=sum(data["errors"].values()),
        server_cpu=server_ticks / TICKS / wall,
        generator_cpu=gen_seconds / wall,
        other_cpu=max(other, 0.0) / wall,
    )


# -- payloads posted from Python (storm, pre-population) -----------------------------------------


def alert(labels: dict[str, str], status: str = "firing", summary: str = "") -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": {
            "summary": summary or f"{labels.get('alertname', 'alert')} is firing",
            "description": "Generated by bench/run.py.",
        },
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "2024-05-01T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.bench:9090/graph?g0.expr=up%3D%3D0",
    }


def payload(alerts: list[dict[str, Any]]) -> bytes:
    name = alerts[0]["labels"].get("alertname", "alert") if alerts else "alert"
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return json.dumps(
        {
            "version": "4",
            "status": status,
            "receiver": "bench",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "truncatedAlerts": 0,
            "externalURL": "http://alertmanager.bench:9093",
            "groupLabels": {"alertname": name},
            "commonLabels": {},
            "commonAnnotations": {},
            "alerts": alerts,
        }
    ).encode()


@dataclass
class PostResult:
    requests: int
    failures: int
    seconds: float
    last_response: float  # time.time() of the last answer
    statuses: dict[int, int] = field(default_factory=dict)


def post_all(
    url: str, bodies: Sequence[bytes], concurrency: int = 16, retry_503: bool = True
) -> PostResult:
    """POST every body to the webhook, `concurrency` at a time, as fast as answers come."""
    return asyncio.run(_post_all(url + WEBHOOK, bodies, concurrency, retry_503))


async def _post_all(
    url: str, bodies: Sequence[bytes], concurrency: int, retry_503: bool
) -> PostResult:
    statuses: dict[int, int] = {}
    queue = list(reversed(bodies))
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    last = 0.0
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal last, failures
        while queue:
            body = queue.pop()
            for _ in range(5):
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    last = time.time()
                if response.status != 503 or not retry_503:
                    break
                await asyncio.sleep(0.1)
            if response.status != 200:
                failures += 1

    start = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return PostResult(len(bodies), failures, time.monotonic() - start, last, statuses)


# -- the SMTP sink -----------------------------------------------------------------------------


class Sink:
    """bench/smtp_sink.py as a process on the load core; its JSON-lines log read as it grows."""

    def __init__(self, workdir: Path, pinning: Pinning, grep: str = "") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / f"sink-{self.port}.jsonl"
        self.log.write_text("")
        argv = [
            PYTHON,
            str(BENCH / "smtp_sink.py"),
            "--port",
            str(self.port),
            "--log",
            str(self.log),
        ]
        if grep:
            argv += ["--grep", grep]
        self.proc = subprocess.Popen(
            pinning.load(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"SMTP sink did not start: {line}")
        self._offset = 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """Events logged since the last poll (also kept in `self.events`)."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        new = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.events += new
        return new

    def mails(self, since: float = 0.0) -> list[dict[str, Any]]:
        self.poll()
        return [e for e in self.events if e["event"] == "mail" and e["t"] >= since]

    def connections(self, since: float = 0.0) -> int:
        self.poll()
        return sum(1 for e in self.events if e["event"] == "connect" and e["t"] >= since)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- numbers -----------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def spread(values: Iterable[float]) -> tuple[float, float]:
    items = list(values)
    return (min(items), max(items)) if items else (float("nan"), float("nan"))


# -- the machine -------------------------------------------------------------------------------


def fsync_latency_us(directory: Path, count: int = 200) -> float:
    """Median time of a small write + fsync in the benchmark's data directory."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) * 1e6


def filesystem_of(path: Path) -> str:
    best, fs = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, fs = mount, f"{kind} on {device}"
    except OSError:
        pass
    return fs


def machine(workdir: Path, pinning: Pinning) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    wrk_version = subprocess.run([WRK, "--version"], capture_output=True, text=True)
    versions = []
    for module in ("aiohttp", "aiosmtplib", "aiosmtpd"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            pass
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_gib:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "OS": _os_release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite": sqlite3.sqlite_version,
        "libraries": ", ".join(versions),
        "load generator": (wrk_version.stdout or wrk_version.stderr).splitlines()[0].strip()
        if (wrk_version.stdout or wrk_version.stderr)
        else "wrk ?",
        "data directory": f"{workdir} ({filesystem_of(workdir)})",
        "fsync (128 B write + fsync, median)": f"{fsync_latency_us(workdir):.0f} µs",
        "pinning": pinning.describe(),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"
