"""Real processes for the end-to-end suite: start, wait until ready, kill, restart, show logs.

Every process runs on 127.0.0.1 with its output in a log file; a process that exits or never
becomes ready fails with its log in the assertion message. `kill()` ends a process by its
PID; an atexit hook kills whatever is left should pytest exit without its fixtures' teardown.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOG_TAIL = 4000  # characters of a log shown in an assertion message


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


class Process:
    """One external process; `argv` is fixed, so a restart runs exactly the same command."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        ready_url: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.ready_url = ready_url
        self.env = {**os.environ, **(env or {})}
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> Process:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                stdin=subprocess.DEVNULL,
            )
        _LIVE.add(self)
        return self

    def wait_ready(self, timeout: float = 20.0, ready: Callable[[], bool] | None = None) -> Process:
        """Until `ready()` (default: GET ready_url is 2xx); fail with the log otherwise."""
        check = ready or (lambda: http_ok(self.ready_url))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} while starting\n{self.logs()}"
                )
            if check():
                return self
            time.sleep(0.05)
        raise AssertionError(f"{self.name} was not ready within {timeout}s\n{self.logs()}")

    def start(self, timeout: float = 20.0) -> Process:
        return self.launch().wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as when a machine or an AZ dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait(10)
        _LIVE.discard(self)

    def logs(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return (
            f"--- log of {self.name} ({self.log}), last {LOG_TAIL} characters:\n{text[-LOG_TAIL:]}"
        )


_LIVE: set[Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Only reached when fixtures could not clean up (pytest killed mid-run, a crash).
    for process in list(_LIVE):
        try:
            process.kill()
        except Exception:  # best effort at interpreter exit
            pass
