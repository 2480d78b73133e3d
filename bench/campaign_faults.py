"""The campaign's faults: a seeded schedule, and the hands that inject and heal each one.

One fault at a time, with healthy time between faults (the checker holds duplicates there to
zero). The first faults of a schedule are a seeded shuffle of every kind, so a long run meets
each kind and a short one a seeded few; after that kinds are drawn at random.

- kill: kill -9 of an instance; healed when restarted and /readyz answers 200.
- kill-mid-send: the SMTP sink holds its answer to DATA; the instance whose mail it holds is
  killed (-9) while it waits; healed as kill.
- stop: SIGSTOP of an instance (a partition as its peers see it: probes and pushes time
  out); healed by SIGCONT.
- am-kill, prometheus-kill: kill -9 of an Alertmanager, of Prometheus (the heartbeat stops at
  its source); healed when restarted and ready.
- smtp-451: every RCPT answered 451; smtp-550-one: one member's RCPT answered 550;
  smtp-down: the sink stops listening for a minute (connection refused).
- wecom-errors: every WeCom message answered errcode -1 or 45009; wecom-42001: every access
  token issued so far refused with 42001 (expired), once.
- store-ro: an instance's store refuses writes (below); healed when writes work again.

**Making the store refuse writes without root tricks.** What was tried on this machine (Linux
6.18, ext4 and tmpfs, SQLite 3.40 in WAL mode with one long-lived connection, as the service
runs it):
- chmod of the directory, the database, the -wal and the -shm to read-only: no effect. SQLite
  keeps those files open read-write, and permissions are checked at open(2) only (as root they
  are not checked at all).
- a small tmpfs (or loop) mount holding the store, remounted read-only: `mount -o remount,ro`
  fails with "mount point is busy" (EBUSY) as long as a file on it is open for writing, which
  the service's store always is. Only a forced emergency remount would do, for the whole
  machine.
- filling a small tmpfs: commits fail with SQLITE_FULL while the WAL grows into new pages, but
  once a checkpoint has reset the WAL, commits rewrite pages the file already has and succeed:
  not a dependable fault. And it needs root to mount.
- `prlimit(pid, RLIMIT_FSIZE, 0)` on the instance (what is used): from then on every write(2)
  of that process to a regular file fails with EFBIG (CPython ignores SIGXFSZ), so every commit
  fails with SQLITE_IOERR_WRITE ("disk I/O error"), reads go on, and raising the limit again
  makes writes work at once. Any user may do it to their own processes; nothing else on the
  machine is touched. Its side effect, that the instance cannot write its own log file either,
  is why the campaign takes instance output through a pipe (campaign_stack.PipedProcess).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from campaign_stack import INSTANCES, MEMBERS, Stack

KINDS = (
    "kill",
    "kill-mid-send",
    "stop",
    "am-kill",
    "prometheus-kill",
    "smtp-451",
    "smtp-550-one",
    "smtp-down",
    "wecom-errors",
    "wecom-42001",
    "store-ro",
)
REFUSED_MEMBER: str = MEMBERS["sre"]["emails"][1]  # smtp-550-one refuses this recipient
MID_SEND_HOLD = 8.0  # seconds the sink holds DATA answers while an instance is killed


@dataclass
class Fault:
    kind: str
    start: float  # planned, seconds after the load began
    duration: float  # planned seconds the component stays broken (before its restart)
    target: str = ""
    # what happened, epoch seconds
    began: float = 0.0
    ended: float = 0.0  # healed: restarted and ready, continued, answering again
    restarted_at: float = 0.0  # when a restart was launched (kills)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        target = f" {self.target}" if self.target else ""
        return f"{self.kind}{target} for {self.duration:.1f}s"


def _durations(kind: str, rng: random.Random) -> tuple[float, str]:
    """A planned duration and target for a fault of this kind."""
    instance: str = rng.choice(("mm-az1", "mm-az1", "mm-az2", "mm-az3"))  # az1 sends first
    if kind == "kill":
        return rng.choice((rng.uniform(0.0, 0.5), rng.uniform(10, 25))), instance
    if kind == "kill-mid-send":
        return rng.uniform(3, 15), ""  # the target is whoever holds the mail
    if kind == "stop":
        return rng.choice(
            (rng.uniform(1.5, 2.5), rng.uniform(8, 25), rng.uniform(36, 45))
        ), instance
    if kind == "am-kill":
        return rng.uniform(10, 40), rng.choice(("am1", "am2"))
    if kind == "prometheus-kill":
        return rng.choice((rng.uniform(8, 14), rng.uniform(45, 60))), "prometheus"
    if kind == "smtp-451":
        return rng.uniform(8, 20), ""
    if kind == "smtp-550-one":
        return rng.uniform(20, 40), REFUSED_MEMBER
    if kind == "smtp-down":
        return 60.0, ""
    if kind == "wecom-errors":
        return rng.uniform(8, 20), str(rng.choice((-1, 45009)))
    if kind == "wecom-42001":
        return 0.0, "42001"
    if kind == "store-ro":
        return rng.choice((rng.uniform(5, 9), rng.uniform(25, 45))), instance
    raise ValueError(kind)


def schedule(
    rng: random.Random, seconds: float, first_at: float = 25.0, tail: float = 15.0
) -> list[Fault]:
    """Faults inside [first_at, seconds - tail], one at a time, 40-80 s apart."""
    faults: list[Fault] = []
    order = list(KINDS)
    rng.shuffle(order)
    t = first_at
    while True:
        kind = order.pop(0) if order else rng.choice(KINDS)
        duration, target = _durations(kind, rng)
        if t + duration > seconds - tail:
            break
        faults.append(Fault(kind, round(t, 1), round(duration, 1), target))
        t += duration + rng.uniform(40, 80)
    return faults


# -- injecting ---------------------------------------------------------------------------------


class Injector:
    """Breaks and heals the stack's parts; every action is by process id or a sink switch."""

    def __init__(self, stack: Stack, log: Any) -> None:
        self.stack = stack
        self.log = log  # callable(str): the campaign's progress line

    async def run(self, fault: Fault) -> None:
        fault.began = time.time()
        try:
            await getattr(self, "_" + fault.kind.replace("-", "_"))(fault)
        finally:
            if not fault.ended:
                fault.ended = time.time()

    # instances -------------------------------------------------------------------------------
    async def _kill(self, fault: Fault) -> None:
        instance = self.stack.instances[fault.target]
        instance.process.kill()
        await asyncio.sleep(fault.duration)
        await self._restart_instance(fault)

    async def _restart_instance(self, fault: Fault) -> None:
        instance = self.stack.instances[fault.target]
        fault.restarted_at = time.time()
        await asyncio.to_thread(instance.process.start, 60.0)
        fault.ended = time.time()
        fault.notes["restart_to_ready"] = round(fault.ended - fault.restarted_at, 3)
        fault.notes["kill_to_ready"] = round(fault.ended - fault.began, 3)

    async def _kill_mid_send(self, fault: Fault) -> None:
        sink = self.stack.mail
        sink.data_delay = MID_SEND_HOLD
        victim = ""
        deadline = time.time() + 45
        try:
            while time.time() < deadline and not victim:
                with sink._lock:
                    held = list(sink.held)
                for peer in held:
                    victim = self._instance_of_client(int(peer[1]))
                    if victim:
                        break
                await asyncio.sleep(0.05)
        finally:
            if not victim:
                sink.data_delay = 0.0
        if not victim:
            sink.data_delay = 0.0
            fault.notes["no_send_in_flight"] = True
            victim = "mm-az1"
        fault.target = victim
        fault.began = time.time()
        self.stack.instances[victim].process.kill()
        sink.data_delay = 0.0  # the held mail is accepted when its delay ends, as a real server
        fault.notes["killed_while_sink_held_its_mail"] = not fault.notes.get("no_send_in_flight")
        await asyncio.sleep(fault.duration)
        await self._restart_instance(fault)

    def _instance_of_client(self, port: int) -> str:
        """Which instance owns the client end of a loopback connection from `port`."""
        inode = _socket_inode(port)
        if inode is None:
            return ""
        for name, instance in self.stack.instances.items():
            if instance.process.running and _owns_socket(instance.pid, inode):
                return name
        return ""

    async def _stop(self, fault: Fault) -> None:
        pid = self.stack.instances[fault.target].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.duration)
        finally:
            os.kill(pid, signal.SIGCONT)
        fault.ended = time.time()

    async def _store_ro(self, fault: Fault) -> None:
        pid = self.stack.instances[fault.target].pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
        try:
            await asyncio.sleep(fault.duration)
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        fault.ended = time.time()

    # the rest of the stack ---------------------------------------------------------------------
    async def _am_kill(self, fault: Fault) -> None:
        am = self.stack.alertmanagers[fault.target]
        am.kill()
        await asyncio.sleep(fault.duration)
        fault.restarted_at = time.time()
        await asyncio.to_thread(am.start, 60.0)
        fault.ended = time.time()

    async def _prometheus_kill(self, fault: Fault) -> None:
        prometheus = self.stack.prometheus
        assert prometheus is not None
        prometheus.kill()
        await asyncio.sleep(fault.duration)
        fault.restarted_at = time.time()
        await asyncio.to_thread(prometheus.start, 60.0)
        fault.ended = time.time()

    async def _smtp_451(self, fault: Fault) -> None:
        self.stack.mail.mode = "451"
        try:
            await asyncio.sleep(fault.duration)
        finally:
            self.stack.mail.mode = "accept"

    async def _smtp_550_one(self, fault: Fault) -> None:
        self.stack.mail.reject_rcpt = {fault.target: "550 5.1.1 No such user"}
        try:
            await asyncio.sleep(fault.duration)
        finally:
            self.stack.mail.reject_rcpt = {}

    async def _smtp_down(self, fault: Fault) -> None:
        await asyncio.to_thread(self.stack.mail.stop)
        try:
            await asyncio.sleep(fault.duration)
        finally:
            await asyncio.to_thread(self.stack.mail.start)

    async def _wecom_errors(self, fault: Fault) -> None:
        fake = self.stack.wecom.fake
        self.stack.wecom.call(lambda: fake.fail_next(int(fault.target), 10**9, on="messages"))
        try:
            await asyncio.sleep(fault.duration)
        finally:
            self.stack.wecom.call(fake.clear_failures)

    async def _wecom_42001(self, fault: Fault) -> None:
        fake = self.stack.wecom.fake
        self.stack.wecom.call(fake.expire_all_tokens, 42001)
        await asyncio.sleep(0)


def _socket_inode(port: int) -> int | None:
    """The inode of the loopback TCP socket whose local port is `port` (/proc/net/tcp)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        local = fields[1]
        if int(local.rsplit(":", 1)[1], 16) == port and local.startswith("0100007F"):
            return int(fields[9])
    return None


def _owns_socket(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def instance_names() -> tuple[str, ...]:
    return INSTANCES
