"""Real `monitor-manager serve` processes for the tests that kill and restart them."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The mail channel and the one contact group of the multi-instance process tests: a config
# TOML fragment to %-format with `smtp` (the sink's port).
MAIL_TO_ONCALL = """[channels.mail]
type = "email"
host = "127.0.0.1"
port = %(smtp)d
tls = "none"
from = "Monitor Manager <mm@example.com>"
[[contact_groups]]
name = "default"
channels = ["mail"]
members = [{ name = "On call", email = "oncall@example.com" }]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str = "",
    timeout: float = 5.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class ServeProcess:
    """One service process on a config file; stdout/stderr go to files for the assertions."""

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        name: str = "mm",
        port: int | None = None,
        command_prefix: Sequence[str] = (),
        code: Path | None = None,
        ca: Path | None = None,
    ) -> None:
        """`ca`: the service serves HTTPS with a certificate this CA file verifies."""
        self.workdir = workdir
        self.context = ssl.create_default_context(cafile=str(ca)) if ca else None
        self.code = code  # where the monitor_manager package comes from (an older release)
        self.command_prefix = list(command_prefix)  # e.g. a wrapper that execs the rest
        self.name = name
        self.port = port or free_port()
        self.config = workdir / f"{name}.toml"
        self.config.write_text(config_text.replace("{port}", str(self.port)))
        self.stdout = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
        """`http` to this service, over HTTPS when it serves that."""
        return http(method, f"{self.url}{path}", body, token, context=self.context)

    def start(self, wait: float = 15.0) -> ServeProcess:
        return self.launch().wait_healthy(wait)

    def launch(self) -> ServeProcess:
        # The repository first on the path: the tests run the code under test, installed or not.
        repo = str(self.code or Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    *self.command_prefix,
                    sys.executable,
                    "-m",
                    "monitor_manager",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                cwd=self.workdir,
                stdout=out,
                stderr=err,
                env=env,
            )
        return self

    def wait_healthy(self, wait: float = 15.0) -> ServeProcess:
        assert self.proc is not None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.logs()}")
            try:
                if http("GET", f"{self.url}/healthz", timeout=1, context=self.context)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"serve did not become healthy: {self.logs()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        out = self.stdout.read_text(errors="replace") if self.stdout.exists() else ""
        err = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.1)
        raise TimeoutError(f"{what} not reached within {timeout}s\n{self.logs()}")
