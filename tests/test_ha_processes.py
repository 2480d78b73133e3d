"""High availability with three real `serve` processes sharing one SMTP sink."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import alert_json, payload
from processes import MAIL_TO_ONCALL, ServeProcess, free_port, http
from smtp_server import SMTPTestServer

TOKEN = "ha-test-token"
NAMES = ("mm-a", "mm-b", "mm-c")
PEER_WAIT = 1.5

CONFIG = (
    """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
[storage]
path = "%(me)s.db"
[convergence]
group_by = ["alertname"]
group_wait = "1s"
group_interval = "1s"
"""
    + MAIL_TO_ONCALL
    + """[watchdog]
peer_interval = "500ms"
peer_timeout = "500ms"
peer_failures = 6                   # 3s: longer than the three take to start
[ha]
peer_wait = "%(wait)ss"
token = "%(token)s"
%(peers)s
"""
)


def cluster(
    tmp_path: Path, smtp_port: int, partitioned: bool = False, extra: str = ""
) -> list[ServeProcess]:
    ports = {name: free_port() for name in NAMES}
    procs = []
    for me in NAMES:
        peers = "".join(
            f'[[peers]]\nname = "{other}"\nurl = "http://127.0.0.1:'
            f'{free_port() if partitioned else ports[other]}"\n'
            for other in NAMES
            if other != me
        )
        text = CONFIG % {
            "me": me,
            "smtp": smtp_port,
            "wait": PEER_WAIT,
            "token": TOKEN,
            "peers": peers,
        }
        procs.append(ServeProcess(tmp_path, text + extra, name=me, port=ports[me]))
    return procs


@pytest.fixture
def three(tmp_path: Path, smtp_server: SMTPTestServer) -> Iterator[list[ServeProcess]]:
    procs = cluster(tmp_path, smtp_server.port)
    for proc in procs:
        proc.launch()
    for proc in procs:
        proc.wait_healthy()
    yield procs
    for proc in procs:
        proc.stop()


def post_to(procs: list[ServeProcess], body: dict[str, object]) -> None:
    for proc in procs:
        status, answer = http("POST", f"{proc.url}/webhook/alertmanager", body)
        assert status == 200, answer


def settle(server: SMTPTestServer, count: int, quiet: float, timeout: float = 20.0) -> int:
    """Wait for `count` mails, then for `quiet` seconds in which no more arrive."""
    deadline = time.monotonic() + timeout
    while len(server.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(quiet)
    return len(server.messages)


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(m["Subject"]) for m in server.messages]


@pytest.mark.slow
def test_the_same_webhook_to_three_instances_sends_one_email(
    three: list[ServeProcess], smtp_server: SMTPTestServer
) -> None:
    started = time.time() - 60
    post_to(three, payload(alert_json("HADisk", starts=started, instance="db1")))
    assert settle(smtp_server, 1, quiet=3 * PEER_WAIT) == 1, subjects(smtp_server)
    assert smtp_server.messages[0]["X-Monitor-Manager-Group"]
    # The resolution is one email too.
    post_to(
        three,
        payload(alert_json("HADisk", "resolved", starts=started, ends=time.time(), instance="db1")),
    )
    assert settle(smtp_server, 2, quiet=3 * PEER_WAIT) == 2
    assert smtp_server.messages[1]["Subject"].startswith("[RESOLVED]")
    status, body = http("GET", f"{three[1].url}/api/v1/notifications", token="")
    notes = [d["note"] for n in body["notifications"] for d in n["deliveries"]]
    assert any("peer mm-a already sent it" in note for note in notes)


@pytest.mark.slow
def test_a_storm_digest_is_sent_once_by_the_cluster(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    procs = cluster(tmp_path, smtp_server.port, extra='[storm]\nthreshold = 1\nwindow = "4s"\n')
    try:
        for proc in procs:
            proc.launch()
        for proc in procs:
            proc.wait_healthy()
        started = time.time() - 60
        for name in ("StormA", "StormB", "StormC"):
            post_to(procs, payload(alert_json(name, starts=started, instance="db1")))
        # One direct mail, then each instance closes a digest of the other two groups; only
        # the first to send it gets through.
        assert settle(smtp_server, 2, quiet=4 + 3 * PEER_WAIT) == 2, subjects(smtp_server)
        first, digest = subjects(smtp_server)
        assert first.startswith("[FIRING:1] Storm")
        assert digest.startswith("[DIGEST] 2 alert groups")
        notes = [
            d["note"]
            for proc in procs[1:]
            for n in http("GET", f"{proc.url}/api/v1/notifications")[1]["notifications"]
            if n["kind"] == "digest"
            for d in n["deliveries"]
        ]
        assert notes and all("already sent it" in note for note in notes), notes
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.slow
def test_when_position_zero_is_killed_the_next_instance_sends_after_its_wait(
    three: list[ServeProcess], smtp_server: SMTPTestServer
) -> None:
    three[0].kill()
    started = time.monotonic()
    post_to(three[1:], payload(alert_json("HANet")))
    settle(smtp_server, 1, quiet=3 * PEER_WAIT)
    assert [s for s in subjects(smtp_server) if "HANet" in s] == ["[FIRING:1] HANet"]
    assert time.monotonic() - started >= 1.0  # group_wait, then mm-b's position wait at most
    # Both survivors see mm-a down; the page about it goes out once, not once per survivor.
    settle(smtp_server, 2, quiet=3 * PEER_WAIT)
    assert [s for s in subjects(smtp_server) if "PeerDown" in s] == ["[FIRING:1] PeerDown"]


@pytest.mark.slow
def test_a_partition_sends_from_every_side_and_loses_nothing(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    procs = cluster(tmp_path, smtp_server.port, partitioned=True)
    try:
        for proc in procs:
            proc.launch()
        for proc in procs:
            proc.wait_healthy()
        time.sleep(1.0)  # the probes find every peer unreachable
        post_to(procs, payload(alert_json("HASplit")))
        settle(smtp_server, 3, quiet=2 * PEER_WAIT)
        assert [s for s in subjects(smtp_server) if "HASplit" in s] == ["[FIRING:1] HASplit"] * 3
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.slow
def test_a_restarted_instance_pulls_the_log_and_does_not_resend(
    three: list[ServeProcess], smtp_server: SMTPTestServer
) -> None:
    a, b, c = three
    c.kill()
    post_to([a, b], payload(alert_json("HARestart")))
    settle(smtp_server, 1, quiet=3 * PEER_WAIT)
    assert [s for s in subjects(smtp_server) if "HARestart" in s] == ["[FIRING:1] HARestart"]
    c.start()  # pulls mm-a's and mm-b's log at start-up
    post_to([c], payload(alert_json("HARestart")))  # e.g. its Alertmanager catching up
    settle(smtp_server, 1, quiet=4 * PEER_WAIT)
    assert [s for s in subjects(smtp_server) if "HARestart" in s] == ["[FIRING:1] HARestart"]
    status, body = http("GET", f"{c.url}/api/v1/notifications")
    notes = [d["note"] for n in body["notifications"] for d in n["deliveries"]]
    assert any("already sent it" in note for note in notes)


@pytest.mark.slow
def test_the_peer_api_requires_the_token_and_rejects_bad_input_without_change(
    three: list[ServeProcess],
) -> None:
    url = f"{three[0].url}/api/v1/peer/nflog"
    assert http("GET", url)[0] == 401
    assert http("GET", url, token="wrong")[0] == 401
    status, body = http("GET", url, token=TOKEN)
    assert status == 200 and body["version"] == 1
    before = body["entries"]
    bad = [
        {"version": 3, "instance": "mm-b", "entries": []},
        {"version": 1, "entries": "nope"},
        {"version": 1, "entries": [{"contact_group": "default"}]},
        {
            "version": 1,
            "entries": [
                {
                    "contact_group": "d",
                    "group_key": "k",
                    "channel": "c",
                    "content_hash": "h",
                    "sent_at": "later",
                    "instance": "i",
                }
            ],
        },
        [1, 2, 3],
    ]
    for body_ in bad:
        status, answer = http("POST", url, body_, token=TOKEN)
        assert status == 400 and "error" in answer
    assert http("GET", url, token=TOKEN)[1]["entries"] == before
