"""HTTPS on the listener and between peers (SPEC section 12, its last point): the certificate
files checked by the key they come from, renewed by a reload without a restart, peers whose
certificates do not verify reported down with the reason, check-config's warnings for tokens
in clear text; then a real Alertmanager delivering over HTTPS and two instances peering over
it (slow). Certificates come from tests/tls_certs.py: a private CA made for each test."""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization

from builders import T0, alert_json, make_config, payload
from monitor_manager import keys
from monitor_manager.app import create_app, probe_peers
from monitor_manager.clock import ManualClock
from monitor_manager.config import ConfigError, PeerConfig, config_warnings, load_config
from monitor_manager.config.checks import certificate_warnings
from monitor_manager.web.bodies import SERVER_ARGS
from processes import MAIL_TO_ONCALL, ServeProcess, free_port, http
from smtp_server import SMTPTestServer
from tls_certs import Authority, presented

REPO = Path(__file__).resolve().parent.parent
ALERTMANAGER_EXAMPLE = REPO / "rules" / "alertmanager.example.yml"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
HA_TOKEN = "tls-test-token"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path / "ca")


def tls_lines(cert: Path, key: Path) -> str:
    return f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'


# -- the files, as check-config sees them -----------------------------------------------------


def test_each_bad_certificate_or_key_is_a_problem_named_by_its_key(
    tmp_path: Path, ca: Authority
) -> None:
    cert, key = ca.issue(tmp_path, "mm")
    _, other_key = ca.issue(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    # A key with a passphrase: named, never prompted for on the terminal.
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    missing = tmp_path / "gone.crt"
    cases = {
        (missing, key): f'server.tls_cert_file: cannot read "{missing}": No such file',
        (cert, missing): f'server.tls_key_file: cannot read "{missing}": No such file',
        (junk, key): f'server.tls_cert_file: "{junk}" holds no PEM certificate',
        (cert, junk): f'server.tls_key_file: "{junk}" holds no usable PEM private key',
        (cert, encrypted): f'server.tls_key_file: "{encrypted}" is encrypted',
        (cert, other_key): (
            f'server.tls_key_file: "{other_key}" does not match the certificate in '
            "server.tls_cert_file"
        ),
    }
    config = tmp_path / "c.toml"
    for (cert_file, key_file), problem in cases.items():
        config.write_text("[server]\n" + tls_lines(cert_file, key_file))
        with pytest.raises(ConfigError) as raised:
            load_config(config)
        assert [p for p in raised.value.problems if p.startswith("server.tls")] == [
            raised.value.problems[0]
        ]
        assert raised.value.problems[0].startswith(problem), raised.value.problems
    config.write_text("[server]\n" + tls_lines(cert, key))
    assert load_config(config).server.tls_cert_file == str(cert)


@pytest.mark.parametrize(
    ("server", "warned"),
    [
        ('listen = "0.0.0.0:9095"', True),
        ('listen = "192.0.2.11:9095"', True),
        ('listen = "[::]:9095"', True),
        ('listen = "127.0.0.1:9095"', False),
        ('listen = "localhost:9095"', False),
        ('listen = "0.0.0.0:9095"\nexternal_url = "https://mm.example.com"', False),
        ('listen = "0.0.0.0:9095"\n{tls}', False),
    ],
    ids=["wildcard", "address", "ipv6-wildcard", "loopback", "localhost", "proxy", "tls"],
)
def test_a_listener_others_reach_over_plain_http_is_warned_of(
    tmp_path: Path, ca: Authority, server: str, warned: bool
) -> None:
    cert, key = ca.issue(tmp_path, "mm")
    config = tmp_path / "c.toml"
    text = server.replace("{tls}", tls_lines(cert, key))
    config.write_text(f'[server]\n{text}\nwebhook_token = "t"\napi_token = "a"\n')
    notes = [n for n in config_warnings(load_config(config)) if n.startswith("server.listen")]
    if warned:
        (note,) = notes
        assert "over plain http" in note and "clear text" in note
    else:
        assert notes == []


# -- certificate renewal by a reload ----------------------------------------------------------


async def _request_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    return await reader.readuntil(b"\r\n")


def test_a_certificate_near_or_past_its_end_is_warned_of(tmp_path: Path, ca: Authority) -> None:
    def warnings_for(days: float, now: float | None = None) -> list[str]:
        cert, key = ca.issue(tmp_path, "mm", days=days)
        config = tmp_path / "config.toml"
        config.write_text(f'[server]\n{tls_lines(cert, key)}[storage]\npath = "mm.db"\n')
        notes = config_warnings(load_config(config))
        if now is not None:
            notes = certificate_warnings(load_config(config), now)
        return [n for n in notes if n.startswith("server.tls_cert_file")]

    assert warnings_for(90) == []
    [soon] = warnings_for(3)
    assert "the certificate expires in 3 days" in soon and "renew it" in soon
    [gone] = warnings_for(3, now=time.time() + 4 * 86400)
    assert "the certificate expired on" in gone


async def test_the_certificates_end_is_a_metric_that_follows_a_renewal(
    tmp_path: Path, ca: Authority, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cert, key = ca.issue(tmp_path, "mm", days=3)
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\n{tls_lines(cert, key)}[storage]\npath = "mm.db"\n')
    app = create_app(
        load_config(config), clock=ManualClock(T0), scheduler=False, config_path=str(config)
    )
    client = await aiohttp_client(app)  # plain http to the app: the metric is what matters

    async def expiry() -> float:
        text = await (await client.get("/metrics")).text()
        [line] = [
            x
            for x in text.splitlines()
            if x.startswith("monitor_manager_tls_certificate_expiry_timestamp_seconds ")
        ]
        return float(line.split()[1])

    assert await expiry() == pytest.approx(time.time() + 3 * 86400, abs=600)
    ca.issue(tmp_path, "mm", days=60)  # renewed in place
    assert (await client.post("/-/reload")).status == 200
    assert await expiry() == pytest.approx(time.time() + 60 * 86400, abs=600)


async def test_a_reload_serves_a_renewed_certificate_to_new_connections(
    tmp_path: Path, ca: Authority, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tls = tmp_path / "tls"
    cert, key = ca.issue(tls, "first", stem="mm")
    config = tmp_path / "config.toml"
    base = '[server]\ninstance = "mm-a"\n[storage]\npath = "mm.db"\n'
    config.write_text(base.replace("[storage]", tls_lines(cert, key) + "[storage]"))
    app = create_app(
        load_config(config), clock=ManualClock(T0), scheduler=False, config_path=str(config)
    )
    listener = app[keys.TLS]
    assert listener is not None
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=listener.context, **SERVER_ARGS)
    trusted = ssl.create_default_context(cafile=str(ca.cert_file))
    client: TestClient = await aiohttp_client(
        server, connector=aiohttp.TCPConnector(ssl=trusted, force_close=True)
    )
    port = server.port
    assert port is not None

    async def shown() -> str:
        return await asyncio.to_thread(presented, port, ca.cert_file)

    async def reload(status: int = 200) -> dict[str, Any]:
        response = await client.post("/-/reload")
        body: dict[str, Any] = await response.json()
        assert response.status == status, body
        return body

    assert await shown() == "first"
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusted)

    # Renewed in place (as certbot or an internal CA's agent does): the same paths.
    ca.issue(tls, "renewed", stem="mm")
    assert await shown() == "first"  # nothing changes before the reload
    answer = await reload()
    assert (answer["changed"], answer["needs_restart"]) == ([], [])
    assert await shown() == "renewed"
    # The connection opened before keeps its certificate and still works.
    assert writer.get_extra_info("ssl_object").getpeercert()["subject"] == (
        (("commonName", "first"),),
    )
    assert await _request_on(reader, writer) == b"HTTP/1.1 200 OK\r\n"
    writer.close()

    # Other paths apply too.
    moved, moved_key = ca.issue(tmp_path / "elsewhere", "moved")
    config.write_text(base.replace("[storage]", tls_lines(moved, moved_key) + "[storage]"))
    assert (await reload())["needs_restart"] == []
    assert await shown() == "moved"
    assert app[keys.CONFIG].server.tls_cert_file == str(moved)

    # A key that is not the certificate's, or a file that is gone: refused, the old one stays.
    _, stranger = ca.issue(tmp_path / "stranger", "stranger")
    for cert_file, key_file, problem in (
        (moved, stranger, "server.tls_key_file: "),
        (tmp_path / "gone.crt", moved_key, "server.tls_cert_file: cannot read"),
    ):
        config.write_text(base.replace("[storage]", tls_lines(cert_file, key_file) + "[storage]"))
        refused = await reload(400)
        assert [p for p in refused["problems"] if p.startswith(problem)], refused
        assert await shown() == "moved"
        assert app[keys.CONFIG].server.tls_cert_file == str(moved)

    # Turning HTTPS off needs a restart: until then the running certificate serves, even
    # with its files gone.
    moved.unlink()
    config.write_text(base)
    assert (await reload())["needs_restart"] == [
        f'server.tls_cert_file: "" needs a restart (it turns HTTPS off); running with '
        f'"{moved}" until then'
    ]
    assert await shown() == "moved"


def test_turning_https_on_by_a_reload_needs_a_restart(tmp_path: Path, ca: Authority) -> None:
    from monitor_manager.reload import keep_running_values

    cert, key = ca.issue(tmp_path, "mm")
    running = make_config(tmp_path)
    new = make_config(tmp_path, server={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    kept, notes = keep_running_values(running, new)
    assert (kept.server.tls_cert_file, kept.server.tls_key_file) == ("", "")
    assert notes == [
        f'server.tls_cert_file: "{cert}" needs a restart (it turns HTTPS on); running with "" '
        "until then"
    ]


# -- a peer whose certificate does not verify -------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "hosts", "error"),
    [
        ("other", ("127.0.0.1",), "certificate verify failed: unable to get local issuer"),
        ("ours", ("mm-b.example.com", "127.0.0.2"), "certificate verify failed: IP address"),
        ("ours", ("127.0.0.1",), ""),
    ],
    ids=["another-ca", "wrong-host", "verifies"],
)
async def test_a_peer_whose_certificate_does_not_verify_is_down_with_the_reason(
    tmp_path: Path,
    ca: Authority,
    aiohttp_server: Any,
    aiohttp_client: Any,
    issuer: str,
    hosts: tuple[str, ...],
    error: str,
) -> None:
    signer = ca if issuer == "ours" else Authority.create(tmp_path / "other-ca", "Other CA")
    cert, key = signer.issue(tmp_path / "b", "mm-b", hosts)
    b = create_app(
        make_config(
            tmp_path / "b",
            server={"instance": "mm-b", "tls_cert_file": str(cert), "tls_key_file": str(key)},
            storage={"path": str(tmp_path / "b.db")},
        ),
        clock=ManualClock(T0),
        stdout=io.StringIO(),
        scheduler=False,
    )
    b_listener = b[keys.TLS]
    assert b_listener is not None
    b_server = await aiohttp_server(b, ssl=b_listener.context, **SERVER_ARGS)
    a = create_app(
        make_config(
            tmp_path,
            server={"instance": "mm-a"},
            peers=(PeerConfig("mm-b", f"https://127.0.0.1:{b_server.port}"),),
            watchdog={"peer_failures": 1, "peer_interval": 3600.0},
            ha={"token": HA_TOKEN, "ca_file": str(ca.cert_file)},
        ),
        clock=ManualClock(T0),
        stdout=io.StringIO(),
        scheduler=False,
    )
    client = await aiohttp_client(a)
    await probe_peers(a)

    (peer,) = (await (await client.get("/api/v1/watchdog")).json())["peers"]
    down = [
        alert
        for alert in (await (await client.get("/api/v1/alerts")).json())["alerts"]
        if alert["labels"]["alertname"] == "PeerDown"
    ]
    if not error:  # the control: a certificate that verifies is a good probe
        assert (peer["state"], peer["last_error"], down) == ("up", "", [])
        assert a[keys.PEERS].reachable() == ["mm-b"]
        return
    assert peer["state"] == "down" and peer["last_ok"] is None
    assert "SSLCertVerificationError" in peer["last_error"]
    assert error in peer["last_error"]
    (alert,) = down
    assert alert["status"] == "firing" and alert["labels"]["peer"] == "mm-b"
    assert error in alert["annotations"]["description"]
    assert a[keys.PEERS].reachable() == []  # not counted on to send


# -- real processes ---------------------------------------------------------------------------


def _alertmanager_config(mm_port: int, token_file: Path, ca_file: Path) -> str:
    """rules/alertmanager.example.yml as shipped, its https URLs pointed at our instance,
    its token and CA files at ours, with second-scale timers."""
    cfg = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    cfg["route"].update(group_wait="0s", group_interval="1s")
    for receiver in cfg["receivers"]:
        for webhook in receiver["webhook_configs"]:
            assert webhook["url"].startswith("https://"), webhook["url"]
            webhook["url"] = f"https://127.0.0.1:{mm_port}/webhook/alertmanager"
            http_config = webhook["http_config"]
            http_config["authorization"]["credentials_file"] = str(token_file)
            http_config["tls_config"]["ca_file"] = str(ca_file)
    return yaml.safe_dump(cfg, sort_keys=False)


@pytest.fixture
def alertmanager() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_a_real_alertmanager_delivers_to_the_https_webhook_with_its_ca_file(
    tmp_path: Path, ca: Authority, alertmanager: list[subprocess.Popen[bytes]]
) -> None:
    cert, key = ca.issue(tmp_path / "tls", "mm-az1")
    token = tmp_path / "monitor-manager.token"
    token.write_text("am-webhook-token\n")
    mm = ServeProcess(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:{port}"\ninstance = "mm-az1"\n'
        'webhook_token = "am-webhook-token"\n'
        + tls_lines(cert, key)
        + '[storage]\npath = "mm.db"\n',
        ca=ca.cert_file,
    )
    am_port = free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(_alertmanager_config(mm.port, token, ca.cert_file))
    (tmp_path / "am").mkdir()
    with open(tmp_path / "am.log", "wb") as log:
        alertmanager.append(
            subprocess.Popen(
                [
                    ALERTMANAGER_BIN,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'am'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    f"--web.external-url=http://127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # alone: no gossip, no settling
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        mm.start()
        am = f"http://127.0.0.1:{am_port}"
        mm.wait_for(lambda: _ready(f"{am}/-/ready"), what="alertmanager ready")
        fired = [{"labels": {"alertname": "OverTLS", "severity": "page"}, "annotations": {}}]
        status, _ = http("POST", f"{am}/api/v2/alerts", fired)
        assert status == 200

        def stored() -> Any:
            status, body = mm.call("GET", "/api/v1/alerts")
            assert status == 200, body
            return [a for a in body["alerts"] if a["labels"]["alertname"] == "OverTLS"]

        (alert,) = mm.wait_for(stored, what="the alert sent over https", timeout=20)
        assert alert["status"] == "firing" and alert["source"] == am  # its externalURL
    finally:
        mm.stop()
        print((tmp_path / "am.log").read_text(errors="replace")[-3000:])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # answers text, not JSON
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_two_instances_peer_over_https_and_page_once(
    tmp_path: Path, ca: Authority, smtp_server: SMTPTestServer
) -> None:
    names = ("mm-a", "mm-b")
    ports = {name: free_port() for name in names}
    procs = []
    for me, other in (names, names[::-1]):
        cert, key = ca.issue(tmp_path / "tls", me)
        text = (
            f'[server]\nlisten = "127.0.0.1:{{port}}"\ninstance = "{me}"\n'
            + tls_lines(cert, key)
            + f'[storage]\npath = "{me}.db"\n'
            '[convergence]\ngroup_by = ["alertname"]\ngroup_wait = "1s"\ngroup_interval = "1s"\n'
            + (MAIL_TO_ONCALL % {"smtp": smtp_server.port})
            + '[watchdog]\npeer_interval = "300ms"\npeer_timeout = "2s"\npeer_failures = 10\n'
            f'[ha]\npeer_wait = "1500ms"\ntoken = "{HA_TOKEN}"\nca_file = "{ca.cert_file}"\n'
            f'[[peers]]\nname = "{other}"\nurl = "https://127.0.0.1:{ports[other]}"\n'
        )
        procs.append(ServeProcess(tmp_path, text, name=me, port=ports[me], ca=ca.cert_file))
    try:
        for proc in procs:
            proc.launch()
        for proc in procs:
            proc.wait_healthy()
            body = proc.wait_for(
                lambda p=proc: (
                    (w := p.call("GET", "/api/v1/watchdog")[1])["peers"][0]["last_ok"] and w
                ),
                what="a good probe over https",
            )
            assert body["peers"][0]["state"] == "up", body
        with pytest.raises(OSError):  # plain http is not served
            http("GET", f"http://127.0.0.1:{ports['mm-a']}/healthz", timeout=2)

        fired = payload(alert_json("OverTLS", starts=time.time() - 60))
        for proc in procs:
            assert proc.call("POST", "/webhook/alertmanager", fired)[0] == 200
        deadline = time.monotonic() + 15
        while not smtp_server.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(4.5)  # three peer waits: a second mail would have come by now
        assert [str(m["Subject"]) for m in smtp_server.messages] == ["[FIRING:1] OverTLS"]
        status, body = procs[1].call("GET", "/api/v1/notifications")
        notes = [d["note"] for n in body["notifications"] for d in n["deliveries"]]
        assert any("peer mm-a already sent it" in note for note in notes), json.dumps(body)
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.slow
def test_the_reload_command_renews_a_running_services_certificate(
    tmp_path: Path, ca: Authority
) -> None:
    """The renewal as an operator does it: new files in place, then `monitor-manager reload`,
    which still has to trust the certificate the service shows until then (the CA's)."""
    tls = tmp_path / "tls"
    cert, key = ca.issue(tls, "before", stem="mm")
    mm = ServeProcess(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:{port}"\ninstance = "mm-a"\n'
        + tls_lines(cert, key)
        + f'[storage]\npath = "mm.db"\n[ha]\nca_file = "{ca.cert_file}"\n',
        ca=ca.cert_file,
    )
    try:
        mm.start()
        assert presented(mm.port, ca.cert_file) == "before"
        ca.issue(tls, "after", stem="mm")
        done = subprocess.run(
            [sys.executable, "-m", "monitor_manager", "reload", "--config", str(mm.config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, (done, mm.logs())
        assert done.stdout == f"reloaded {mm.config}; changed: nothing\n"
        assert presented(mm.port, ca.cert_file) == "after"
        assert "TLS: new connections get the certificate read from" in mm.logs()
    finally:
        mm.stop()
