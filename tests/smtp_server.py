"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives, for any test.

    (smtp_server and smtp_server_factory are fixtures: the repository's conftest.py loads
    this module as a plugin)

    async def test_it(smtp_server):
        ...  # point the email channel at smtp_server.host / smtp_server.port
        mails = await smtp_server.wait_for(1)

Switches, all changeable while the server runs:
- `mode`: "accept" (default), "451" or "550": every RCPT refused with that code;
- `reject_rcpt`: per-recipient RCPT replies, e.g. {"bad@x": "550 5.1.1 No such user"};
- `data_reply`: the reply to DATA instead of accepting, e.g. "451 4.3.0 try later";
- `data_delay`: seconds to wait after the message's final dot before accepting it (a slow
  server); `held` lists the client addresses (host, port) waiting meanwhile. The mail counts as
  received even when the client is gone by then, as a real server that queued it;
- `stop()` / `start()`: connection refused while stopped, the same port after restarting;
- `drop_connections(reply)`: close every open client connection from the server side, as an
  idle timeout does.
Constructor options: `tls="starttls" | "tls"` (a self-signed certificate for IP 127.0.0.1,
trusted through `.ca_file`) and `auth={"user": "password"}` (login then required).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import email
import email.policy
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

REPLIES = {
    "451": "451 4.3.0 Temporary failure",
    "550": "550 5.1.1 No such user",
}


@dataclass(frozen=True)
class Received:
    """The envelope of one accepted mail."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    login: str  # the user that authenticated, "" without AUTH


class SMTPTestServer:
    def __init__(
        self,
        *,
        tls: Literal["none", "starttls", "tls"] = "none",
        auth: dict[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.tls = tls
        self.auth = dict(auth or {})
        self.ca_file = ""
        self.mode: Literal["accept", "451", "550"] = "accept"
        self.reject_rcpt: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_delay = 0.0
        self.held: list[tuple[str, int]] = []  # clients waiting for their DATA reply
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Received] = []
        self.connections = 0  # client connections accepted since start
        self.failed_logins = 0
        self._lock = threading.Lock()
        self._open: set[SMTP] = set()
        self._controller: _Controller | None = None
        self._server_ssl: ssl.SSLContext | None = None
        if tls != "none":
            cert, key = _test_certificate()
            self.ca_file = str(cert)
            self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server_ssl.load_cert_chain(cert, key)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on `self.port`."""
        if self._controller is not None:
            return
        smtp_kwargs: dict[str, Any] = {}
        if self.tls == "starttls":
            smtp_kwargs.update(tls_context=self._server_ssl, require_starttls=True)
        if self.auth:
            smtp_kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                # aiosmtpd advertises AUTH only after STARTTLS when this is True, and does not
                # count implicit TLS as TLS; plain tests need AUTH without TLS.
                auth_require_tls=self.tls == "starttls",
            )
        controller = _Controller(
            self,
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self._server_ssl if self.tls == "tls" else None,
            **smtp_kwargs,
        )
        controller.start()
        self._controller = controller
        # start() opens a probe connection of its own; count the clients only.
        with self._lock:
            self.connections = 0

    def stop(self) -> None:
        """Close every connection and the listener: clients get connection refused."""
        if self._controller is None:
            return
        self.drop_connections()
        self._controller.stop()
        self._controller = None

    def drop_connections(self, reply: str | None = None) -> None:
        """Close all client connections from the server side, first sending `reply` if given
        (real servers say "421 4.4.2 Idle timeout"); returns once they are closed."""
        controller = self._controller
        if controller is None:
            return

        async def drop() -> None:
            with self._lock:
                servers = list(self._open)
            for server in servers:
                if server.transport is None:
                    continue
                if reply:
                    server.transport.write(f"{reply}\r\n".encode())  # type: ignore[attr-defined]
                server.transport.close()
            await asyncio.sleep(0)  # let connection_lost run

        asyncio.run_coroutine_threadsafe(drop(), controller.loop).result(timeout=5)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.envelopes.clear()
            self.connections = 0

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Wait until at least `count` mails arrived; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} mails within {timeout}s, got {len(self.messages)}"
                )
            await asyncio.sleep(0.01)
        return list(self.messages)

    # -- called from the server thread ---------------------------------------------------------

    def _rcpt_reply(self, address: str) -> str | None:
        for refused, reply in self.reject_rcpt.items():
            if refused.lower() == address.lower():
                return reply
        return REPLIES.get(self.mode)

    def _record(self, envelope: Envelope, session: Session, tls: bool) -> None:
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        login = (
            session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else ""
        )
        received = Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), tls, login)
        with self._lock:
            self.messages.append(parsed)
            self.envelopes.append(received)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.auth.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        if not ok:
            with self._lock:
                self.failed_logins += 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    async def _hold(self, peer: Any, seconds: float) -> None:
        with self._lock:
            self.held.append(peer)
        try:
            await asyncio.sleep(seconds)
        finally:
            with self._lock:
                self.held.remove(peer)

    def _opened(self, server: SMTP) -> None:
        with self._lock:
            self._open.add(server)
            self.connections += 1

    def _closed(self, server: SMTP) -> None:
        with self._lock:
            self._open.discard(server)


class _Handler:
    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.owner._rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.owner.data_reply:
            return self.owner.data_reply
        if self.owner.data_delay > 0:
            await self.owner._hold(session.peer, self.owner.data_delay)
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("sslcontext") is not None
        self.owner._record(envelope, session, tls)
        return "250 Message accepted for delivery"


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP that tells its owner about each client connection."""

    def __init__(self, owner: SMTPTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again on the same connection after STARTTLS; count the first call only.
        first = self._original_transport is None
        super().connection_made(transport)
        if first:
            self.owner._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._closed(self)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, owner: SMTPTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.owner, self.handler, **self.SMTP_kwargs)


def _free_port() -> int:
    # aiosmtpd's Controller cannot listen on port 0 (it probes the port it was given).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CERT: tuple[Path, Path] | None = None
_CERT_LOCK = threading.Lock()


def _test_certificate() -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 (and localhost), made once per process."""
    global _CERT
    with _CERT_LOCK:
        if _CERT is None:
            directory = Path(tempfile.mkdtemp(prefix="mm-smtp-tls-"))
            atexit.register(shutil.rmtree, directory, True)
            _CERT = _write_certificate(directory)
        return _CERT


def _write_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Monitor Manager test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A plain (no TLS, no auth) recording SMTP server, stopped after the test."""
    server = SMTPTestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Make started servers with options (`tls=`, `auth=`); all are stopped after the test."""
    servers: list[SMTPTestServer] = []

    def make(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
