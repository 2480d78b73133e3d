"""Acting on a page across real `serve` processes: acks and silences made on one instance are
honoured by the others (no repeat, no escalation, no page), a partition heals to the newer
change, and the real amtool works against the service."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from builders import alert_json, payload
from processes import ServeProcess, free_port, http
from smtp_server import SMTPTestServer

TOKEN = "ha-test-token"
NAMES = ("mm-a", "mm-b", "mm-c")

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
%(server)s
[storage]
path = "%(me)s.db"
[convergence]
group_by = ["alertname"]
group_wait = "1s"
group_interval = "1s"
repeat_interval = "4s"
[channels.mail]
type = "email"
host = "127.0.0.1"
port = %(smtp)d
tls = "none"
from = "Monitor Manager <mm@example.com>"
[[contact_groups]]
name = "default"
channels = ["mail"]
members = [{ name = "On call", email = "oncall@example.com" }]
escalation = [{ after = "5s", groups = ["lead"] }]
[[contact_groups]]
name = "lead"
channels = ["mail"]
members = [{ name = "Lead", email = "lead@example.com" }]
[watchdog]
peer_interval = "300ms"
peer_timeout = "500ms"
peer_failures = 10
[ha]
peer_wait = "1s"
token = "%(token)s"
%(peers)s
"""


class Proxy:
    """A TCP forwarder on loopback that a test can cut (a partition) and mend."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.blocked = False
        self._conns: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.blocked and (data := src.recv(65536)):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        self.blocked = True
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()

    def mend(self) -> None:
        self.blocked = False

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._server.close()


def cluster(
    tmp_path: Path, smtp_port: int, names: tuple[str, ...] = NAMES, server: str = ""
) -> tuple[list[ServeProcess], dict[tuple[str, str], Proxy]]:
    """Instances whose peers are reached through proxies: proxies[(me, other)]."""
    ports = {name: free_port() for name in names}
    proxies = {(me, o): Proxy(ports[o]) for me in names for o in names if o != me}
    procs = []
    for me in names:
        peers = "".join(
            f'[[peers]]\nname = "{o}"\nurl = "http://127.0.0.1:{proxies[(me, o)].port}"\n'
            for o in names
            if o != me
        )
        text = CONFIG % {
            "me": me,
            "smtp": smtp_port,
            "token": TOKEN,
            "peers": peers,
            "server": server,
        }
        procs.append(ServeProcess(tmp_path, text, name=me, port=ports[me]))
    return procs, proxies


@pytest.fixture
def three(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> Iterator[tuple[list[ServeProcess], dict[tuple[str, str], Proxy]]]:
    procs, proxies = cluster(tmp_path, smtp_server.port)
    for proc in procs:
        proc.launch()
    for proc in procs:
        proc.wait_healthy()
    time.sleep(1.0)  # the first probes: every peer reachable, version 2
    yield procs, proxies
    for proc in procs:
        proc.stop()
    for proxy in proxies.values():
        proxy.close()


def post_to(procs: list[ServeProcess], body: dict[str, object]) -> None:
    for proc in procs:
        status, answer = http("POST", f"{proc.url}/webhook/alertmanager", body)
        assert status == 200, answer


def mails_to(server: SMTPTestServer, address: str) -> list[str]:
    return [str(m["Subject"]) for m in server.messages if address in str(m["To"])]


def wait(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise TimeoutError(what)


def group_key(proc: ServeProcess) -> str:
    def find() -> str | None:
        groups = http("GET", f"{proc.url}/api/v1/alert-groups")[1]["alert_groups"]
        return groups[0]["key"] if groups else None

    return str(wait(find, what="an alert group"))


def ack_of(proc: ServeProcess, key: str) -> Any:
    return http("GET", f"{proc.url}/api/v1/alert-groups/{key}")[1]["ack"]


@pytest.mark.slow
def test_an_ack_on_one_instance_stops_repeats_and_escalation_on_all(
    three: tuple[list[ServeProcess], dict[Any, Proxy]], smtp_server: SMTPTestServer
) -> None:
    procs, _ = three
    post_to(procs, payload(alert_json("AckDisk", starts=time.time() - 60)))
    wait(lambda: mails_to(smtp_server, "oncall@"), what="the first page")
    key = group_key(procs[1])
    status, answer = http(
        "POST", f"{procs[1].url}/api/v1/alert-groups/{key}/ack", {"by": "alice", "comment": "on it"}
    )
    assert status == 200, answer
    for proc in procs:
        wait(lambda p=proc: ack_of(p, key), timeout=5, what=f"the ack on {proc.name}")
    time.sleep(9)  # two repeat intervals and past the escalation step
    oncall = mails_to(smtp_server, "oncall@")
    # The announcement of the ack, once, and otherwise only the first page (which a loaded
    # machine may deliver twice, as high availability allows): no repeat from anyone.
    assert [s for s in oncall if s.startswith("[ACK]")] == ["[ACK] [FIRING:1] AckDisk"], oncall
    assert set(oncall) == {"[FIRING:1] AckDisk", "[ACK] [FIRING:1] AckDisk"}, oncall
    assert oncall.index("[ACK] [FIRING:1] AckDisk") == len(oncall) - 1, oncall
    assert mails_to(smtp_server, "lead@") == []
    audit = http("GET", f"{procs[1].url}/api/v1/audit")[1]["audit"]
    assert [(a["who"], a["action"]) for a in audit] == [("alice", "ack")]


@pytest.mark.slow
def test_without_an_ack_the_escalation_step_is_sent_once_by_the_cluster(
    three: tuple[list[ServeProcess], dict[Any, Proxy]], smtp_server: SMTPTestServer
) -> None:
    procs, _ = three
    post_to(procs, payload(alert_json("EscDisk", starts=time.time() - 60)))
    wait(lambda: mails_to(smtp_server, "lead@"), timeout=20, what="the escalation step")
    time.sleep(3)
    assert len(mails_to(smtp_server, "lead@")) == 1, mails_to(smtp_server, "lead@")


def silence_body(name: str, minutes: float = 60) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "matchers": [{"name": "alertname", "value": name, "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
        "createdBy": "alice",
        "comment": "maintenance",
    }


@pytest.mark.slow
def test_a_silence_made_on_one_instance_mutes_on_all_until_expired_on_another(
    three: tuple[list[ServeProcess], dict[Any, Proxy]], smtp_server: SMTPTestServer
) -> None:
    procs, _ = three
    status, answer = http("POST", f"{procs[1].url}/api/v2/silences", silence_body("Quiet"))
    assert status == 200, answer
    sid = answer["silenceID"]
    for proc in procs:
        wait(
            lambda p=proc: http("GET", f"{p.url}/api/v2/silence/{sid}")[0] == 200,
            timeout=5,
            what=f"the silence on {proc.name}",
        )
    post_to(procs, payload(alert_json("Quiet", starts=time.time() - 60)))
    time.sleep(4)
    assert mails_to(smtp_server, "oncall@") == []
    assert http("GET", f"{procs[0].url}/api/v1/alerts")[1]["total"] == 1  # stored, shown
    assert http("DELETE", f"{procs[2].url}/api/v2/silence/{sid}")[0] == 200
    wait(lambda: mails_to(smtp_server, "oncall@"), timeout=10, what="the page after expiry")
    time.sleep(3)
    assert len(mails_to(smtp_server, "oncall@")) == 1, mails_to(smtp_server, "oncall@")


@pytest.mark.slow
def test_a_partition_heals_to_the_newer_change(tmp_path: Path, smtp_server: SMTPTestServer) -> None:
    procs, proxies = cluster(tmp_path, smtp_server.port, names=("mm-a", "mm-b"))
    a, b = procs
    try:
        for proc in procs:
            proc.start()
        time.sleep(1.0)
        status, answer = http("POST", f"{a.url}/api/v2/silences", silence_body("Split"))
        sid = answer["silenceID"]
        wait(lambda: http("GET", f"{b.url}/api/v2/silence/{sid}")[0] == 200, what="shared")
        for proxy in proxies.values():
            proxy.cut()
        time.sleep(0.5)
        # Each side changes the same silence: a extends it, then b (later) expires it.
        body = http("GET", f"{a.url}/api/v2/silence/{sid}")[1]
        body["endsAt"] = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        status, answer = http("POST", f"{a.url}/api/v2/silences", body)
        assert (status, answer) == (200, {"silenceID": sid})
        time.sleep(0.2)
        assert http("DELETE", f"{b.url}/api/v2/silence/{sid}")[0] == 200
        time.sleep(1.0)
        assert http("GET", f"{a.url}/api/v2/silence/{sid}")[1]["status"]["state"] == "active"
        for proxy in proxies.values():
            proxy.mend()
        wait(
            lambda: http("GET", f"{a.url}/api/v2/silence/{sid}")[1]["status"]["state"] == "expired",
            what="the newer change (b's expiry) on a",
        )
        time.sleep(1.5)
        assert http("GET", f"{b.url}/api/v2/silence/{sid}")[1]["status"]["state"] == "expired"
    finally:
        for proc in procs:
            proc.stop()
        for proxy in proxies.values():
            proxy.close()


# -- the real amtool ------------------------------------------------------------------------------
def amtool(url: str, *args: str, config: Path | None = None) -> tuple[int, str, str]:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool is not installed: install prometheus-alertmanager", pytrace=False)
    extra = [f"--http.config.file={config}"] if config else []
    proc = subprocess.run(
        [path, f"--alertmanager.url={url}", *extra, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(config.parent if config else "/tmp")},
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_the_real_amtool_adds_queries_and_expires_silences_with_the_api_token(
    tmp_path: Path,
) -> None:
    text = CONFIG % {
        "me": "mm-a",
        "smtp": free_port(),
        "token": TOKEN,
        "peers": "",
        "server": 'api_token = "amtool-secret"',
    }
    proc = ServeProcess(tmp_path, text, name="mm-a").start()
    try:
        http_config = tmp_path / "http.yml"
        http_config.write_text("authorization:\n  type: Bearer\n  credentials: amtool-secret\n")
        code, _, err = amtool(proc.url, "silence", "query")
        assert code != 0 and "401" in err + _  # without the token
        code, out, err = amtool(
            proc.url,
            "silence",
            "add",
            "alertname=DiskFull",
            'instance=~"db.*"',
            "--comment=disk swap",
            "--author=alice",
            "--duration=2h",
            config=http_config,
        )
        assert code == 0, err
        sid = out.strip()
        code, out, err = amtool(proc.url, "silence", "query", "-q", config=http_config)
        assert (code, out.split()) == (0, [sid]), err
        code, out, err = amtool(proc.url, "silence", "query", config=http_config)
        assert 'alertname="DiskFull"' in out and "alice" in out
        code, out, err = amtool(
            proc.url, "silence", "add", "team!=db", "--comment=x", config=http_config
        )
        assert code != 0 and "at least one matcher must not match the empty string" in err
        code, _, err = amtool(proc.url, "silence", "expire", sid, config=http_config)
        assert code == 0, err
        code, out, _ = amtool(proc.url, "silence", "query", "-q", "--expired", config=http_config)
        assert out.split() == [sid]
        status, body = http("GET", f"{proc.url}/api/v1/audit", token="amtool-secret")
        # Newest first; amtool's expire names nobody, so the tool is recorded as who.
        assert [(a["who"], a["via"], a["action"]) for a in body["audit"]] == [
            ("amtool", "amtool", "silence.expire"),
            ("alice", "amtool", "silence"),
        ]
    finally:
        proc.stop()
