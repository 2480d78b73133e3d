"""The daily report with two real `serve` processes side by side: sent once by the cluster,
and by the survivor when the first instance is down. The schedule is every minute, so the
test waits for minute boundaries (about two minutes in all)."""

from __future__ import annotations

import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from processes import ServeProcess, free_port, http
from smtp_server import SMTPTestServer

TOKEN = "report-test-token"
NAMES = ("mm-a", "mm-b")
PEER_WAIT = 2.0

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
instance = "%(me)s"
[storage]
path = "%(me)s.db"
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
[watchdog]
peer_interval = "500ms"
peer_timeout = "500ms"
peer_failures = 2
[ha]
peer_wait = "%(wait)ss"
token = "%(token)s"
[report]
schedule = "* * * * *"
time_zone = "Asia/Shanghai"
[[peers]]
name = "%(peer)s"
url = "http://127.0.0.1:%(peer_port)d"
"""


def reports(server: SMTPTestServer) -> list[EmailMessage]:
    return [m for m in server.messages if str(m["Subject"]).startswith("[REPORT]")]


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def wait_for_reports(server: SMTPTestServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(reports(server)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3 * PEER_WAIT)  # the other instance's turn comes and goes
    assert len(reports(server)) == count, [str(m["Subject"]) for m in server.messages]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_instances_send_the_report_once_and_a_survivor_sends_it_alone(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    ports = {name: free_port() for name in NAMES}
    procs = [
        ServeProcess(
            tmp_path,
            CONFIG
            % {
                "me": me,
                "peer": peer,
                "peer_port": ports[peer],
                "smtp": smtp_server.port,
                "wait": PEER_WAIT,
                "token": TOKEN,
            },
            name=me,
            port=ports[me],
        )
        for me, peer in (NAMES, NAMES[::-1])
    ]
    try:
        for proc in procs:
            proc.launch()
        for proc in procs:
            proc.wait_healthy()
        a, b = procs
        wait_for_reports(smtp_server, 1, timeout=75)
        first = text_of(reports(smtp_server)[0])
        assert "Monitor Manager daily report" in first and "(mm-a)" in first  # position 0
        assert "Peers: all 1 up" in first
        # mm-b decided the same report and found mm-a's entry for it in the log.
        notes = [
            d["note"]
            for n in http("GET", f"{b.url}/api/v1/notifications")[1]["notifications"]
            if n["kind"] == "report"
            for d in n["deliveries"]
        ]
        assert notes and all("peer mm-a already sent it" in note for note in notes), notes

        a.kill()
        wait_for_reports(smtp_server, 2, timeout=75)
        second = text_of(reports(smtp_server)[1])
        assert "(mm-b)" in second
        assert "Peers: 1 of 1 DOWN: mm-a" in second
        assert str(reports(smtp_server)[1]["Subject"]).startswith(
            "[REPORT] Monitor Manager daily report 20"
        )
    finally:
        for proc in procs:
            proc.stop()
