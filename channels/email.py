"""The email channel: one multipart (text and HTML) message per notification, over SMTP.

Messages of one alert group thread together: every mail gets a unique Message-ID and points
(In-Reply-To, References) at a phantom root derived from the group key, the way Alertmanager's
threading does, so mail clients gather firing, repeat and resolved mails under one thread.

SMTP connections are kept open in a small pool and reused; a connection the server closed
while idle is replaced inside the same send. Every failure becomes one ChannelError, transient
or permanent by RFC 5321 reply class; the outbox does the retrying.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import ClassVar, Literal

import aiosmtplib
import jinja2
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from monitor_manager.channels.base import Channel, ChannelContext, ChannelError, PartlySent, redact
from monitor_manager.durations import Duration
from monitor_manager.models import Member, Message


@dataclass(frozen=True)
class EmailSettings:
    host: str
    from_: str = field(metadata={"key": "from"})  # "Monitor Manager <alerts@example.com>"
    port: int = 587
    tls: Literal["none", "starttls", "tls"] = "starttls"  # "tls": implicit TLS, usually port 465
    username: str = ""  # empty: no login
    password: str = field(default="", repr=False)  # kept out of logs and error messages
    timeout: Duration = 10.0  # for the connect and for each SMTP command
    ca_file: str = ""  # extra CA bundle, e.g. for a server with a self-signed certificate
    validate_certs: bool = True
    connections: int = 2  # SMTP connections kept open and reused

    def __post_init__(self) -> None:
        # Checked at config load, so a bad value is a config error rather than a mail that
        # fails for good at the first alert.
        problems = []
        if "@" not in parseaddr(self.from_)[1]:
            problems.append(
                f"from: {self.from_!r} is not an email address "
                '(write e.g. "Monitor Manager <alerts@example.com>")'
            )
        if not 0 < self.port < 65536:
            problems.append(f"port: {self.port} is not a TCP port")
        if self.timeout <= 0:
            problems.append("timeout: must be more than 0s")
        if self.connections < 1:
            problems.append("connections: must be at least 1")
        if self.ca_file and not os.path.isfile(self.ca_file):
            problems.append(f"ca_file: {self.ca_file} is not a readable file")
        if problems:
            raise ValueError("; ".join(problems))


# Failures that are the remote side's doing (or the network's); anything else is a bug and
# propagates as it is.
_SEND_ERRORS = (SMTPException, OSError, ValueError)
# Message-ID left parts must be RFC 5322 dot-atoms; group keys that are not get hashed.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_THREAD_ID = 64
_CLOSE_WAIT = 2.0  # seconds close() waits for connections to finish closing


class _Slot:
    """One pooled connection; the pool hands a slot to one send at a time."""

    def __init__(self) -> None:
        self.client: aiosmtplib.SMTP | None = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    def discard(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None


class EmailChannel(Channel):
    type: ClassVar[str] = "email"
    member_address: ClassVar[str | None] = "email"
    Settings = EmailSettings

    def __init__(self, name: str, settings: EmailSettings, ctx: ChannelContext) -> None:
        super().__init__(name, settings, ctx)
        self.settings: EmailSettings = settings
        self._slots = [_Slot() for _ in range(max(1, settings.connections))]
        # LIFO: the most recently used connection goes out first, so a quiet channel keeps
        # reusing one warm connection instead of waking every one in turn.
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in self._slots:
            self._idle.put_nowait(slot)
        self._sender = parseaddr(settings.from_)[1]
        self._domain = self._sender.rpartition("@")[2] or "monitor-manager"
        self._tls_context: ssl.SSLContext | None = None
        self._local_hostname: str | None = None
        self._secrets = _secret_forms(settings.username, settings.password)

    async def send(self, message: Message) -> str:
        """Send one mail to every member with an address.

        Returns "" when every recipient was accepted, or a note naming the refused ones when
        only some were (the mail went to the rest). Raises ChannelError otherwise.
        """
        addresses, invalid, configured = _addresses(message.recipients)
        if not addresses:
            problem = f" (invalid: {', '.join(invalid)})" if invalid else ""
            raise ChannelError(
                f"contact group {message.contact_group} has no member with an "
                f"email address{problem}",
                permanent=True,
            )
        mail = self._compose(message, addresses)
        refused = await self._send_pooled(mail, [a.addr_spec for a in addresses])
        later = {addr: r for addr, r in refused.items() if 400 <= r.code < 500}
        notes = []
        if len(later) < len(refused):
            listed = "; ".join(
                f"{addr} {_reply(r.code, r.message)}"
                for addr, r in refused.items()
                if addr not in later
            )
            notes.append(f"refused: {listed}")
        if invalid:
            # One mistyped address in the config must not silence the whole contact group.
            notes.append(f"skipped invalid addresses: {', '.join(invalid)}")
        if later:  # e.g. greylisting: the others have it; these get it when retried
            listed = "; ".join(f"{addr} {_reply(r.code, r.message)}" for addr, r in later.items())
            sent = len(addresses) - len(refused)
            notes.insert(0, f"sent to {sent} of {len(addresses)}")
            raise PartlySent(
                f"deferred: {listed}",
                note="; ".join(notes),
                retry=tuple(configured.get(addr, addr) for addr in later),
            )
        return "; ".join(notes)

    async def close(self) -> None:
        """QUIT every open connection and wait, briefly, until each is really closed."""
        protocols = []
        for slot in self._slots:
            client, slot.client = slot.client, None
            if client is None or not client.is_connected:
                continue
            protocols.append(client.protocol)
            try:
                await client.quit()
            except _SEND_ERRORS:  # the server is gone already; nothing to say goodbye to
                client.close()
        # A connection finishes closing after quit() returns (TLS even exchanges close_notify
        # first); an event loop that stops before then leaks the socket.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.settings.timeout, _CLOSE_WAIT)
        while any(p is not None and p.transport is not None for p in protocols):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.01)

    # -- the message -------------------------------------------------------------------------

    def _compose(self, message: Message, addresses: list[Address]) -> EmailMessage:
        subject, text, html = self._render(message)
        mail = EmailMessage()
        mail["Subject"] = _one_line(subject)
        mail["From"] = self.settings.from_
        mail["To"] = addresses
        mail["Date"] = formatdate(self.ctx.clock(), localtime=True)
        mail["Message-ID"] = make_msgid(idstring=f"mm{message.id}", domain=self._domain)
        root = f"<group-{_thread_id(message.thread_key)}@monitor-manager>"
        mail["In-Reply-To"] = root
        mail["References"] = root
        mail["X-Monitor-Manager-Group"] = _one_line(message.thread_key)
        mail["X-Monitor-Manager-Notification"] = str(message.id)
        # RFC 3834: keeps vacation responders and ticket systems from answering alerts.
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(text)
        mail.add_alternative(html, subtype="html")
        return mail

    def _render(self, message: Message) -> tuple[str, str, str]:
        renderer = self.ctx.renderer
        try:
            return (
                renderer.subject(message),
                renderer.render("text.txt", message),
                renderer.render("email.html", message),
            )
        except jinja2.TemplateError as exc:  # an override template is broken: no retry helps
            raise ChannelError(f"cannot render the email templates: {exc}", permanent=True) from exc

    # -- the connection pool -----------------------------------------------------------------

    async def _send_pooled(
        self, mail: EmailMessage, recipients: list[str]
    ) -> dict[str, SMTPResponse]:
        slot = await self._idle.get()
        try:
            return await self._send_on(slot, mail, recipients)
        except asyncio.CancelledError:
            slot.discard()  # cancelled between command and reply: the session is out of step
            raise
        finally:
            self._idle.put_nowait(slot)

    async def _send_on(
        self, slot: _Slot, mail: EmailMessage, recipients: list[str]
    ) -> dict[str, SMTPResponse]:
        reused = slot.connected
        try:
            return await self._transmit(slot, mail, recipients)
        except _SEND_ERRORS as exc:
            if not (reused and _is_stale(exc)):
                raise self._failure(slot, exc) from exc
        # The server dropped the connection while it sat idle in the pool (idle timeouts are
        # common); that says nothing about this mail, so try once more on a fresh connection.
        # Should the server have taken the mail before dropping, this repeats it: at least once.
        slot.discard()
        try:
            return await self._transmit(slot, mail, recipients)
        except _SEND_ERRORS as exc:
            raise self._failure(slot, exc) from exc

    async def _transmit(
        self, slot: _Slot, mail: EmailMessage, recipients: list[str]
    ) -> dict[str, SMTPResponse]:
        if not slot.connected:
            slot.discard()
            slot.client = await self._connect()
        client = slot.client
        assert client is not None
        refused, _ = await client.send_message(mail, sender=self._sender, recipients=recipients)
        return refused

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        if self._local_hostname is None:
            # aiosmtplib would look the FQDN up again for every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=s.password if s.username else None,
            local_hostname=self._local_hostname,
            timeout=s.timeout,
            use_tls=s.tls == "tls",
            # False, not None, for "none": None would upgrade whenever the server offers it.
            start_tls=s.tls == "starttls",
            tls_context=self._tls() if s.tls != "none" else None,
        )
        await client.connect()
        return client

    def _tls(self) -> ssl.SSLContext:
        # Built once: loading the system CA store for every connection is slow.
        if self._tls_context is None:
            context = ssl.create_default_context()
            try:
                if self.settings.ca_file:
                    context.load_verify_locations(cafile=self.settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ChannelError(
                    f"cannot load ca_file {self.settings.ca_file}: {exc}", permanent=True
                ) from exc
            if not self.settings.validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_context = context
        return self._tls_context

    def _failure(self, slot: _Slot, exc: BaseException) -> ChannelError:
        if not isinstance(exc, SMTPResponseException | SMTPRecipientsRefused):
            # Only a refused command leaves the session usable (aiosmtplib sends RSET);
            # after anything else start the next send on a new connection.
            slot.discard()
        reason, permanent = _classify(exc)
        where = f"smtp {self.settings.host}:{self.settings.port}"
        return ChannelError(
            redact(f"{where}: {reason}", *self._secrets),
            permanent=permanent,
            recipients_refused=isinstance(exc, SMTPRecipientsRefused),
        )


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(reason, permanent) for one send failure; 4xx and network trouble are transient."""
    if isinstance(exc, SMTPRecipientsRefused):
        listed = "; ".join(f"{r.recipient} {_reply(r.code, r.message)}" for r in exc.recipients)
        transient = any(400 <= r.code < 500 for r in exc.recipients)
        return f"all recipients refused: {listed}", not transient
    if isinstance(exc, SMTPResponseException):
        return (f"{_stage(exc)} refused: {_reply(exc.code, exc.message)}", 500 <= exc.code < 600)
    tls = _tls_problem(exc)
    if tls is not None:
        return tls
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}", False
    if isinstance(exc, OSError):  # refused, reset, disconnected, DNS: all may pass
        return f"connection failed: {exc}", False
    # What is left is our side or the server's capabilities: a STARTTLS or AUTH extension
    # the server does not offer, no usable login method, an address SMTP cannot carry.
    return f"{type(exc).__name__}: {exc}", True


def _tls_problem(exc: BaseException) -> tuple[str, bool] | None:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verification failed: {cause.verify_message or cause} "
                "(set ca_file for a private CA)",
                True,
            )
        if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
            return (
                "TLS handshake failed: the server did not answer in TLS "
                '(tls = "tls" is implicit TLS, usually port 465)',
                True,
            )
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps: aiosmtplib wraps implicit-TLS errors, not STARTTLS's."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _stage(exc: SMTPResponseException) -> str:
    if isinstance(exc, SMTPConnectResponseError):
        return "greeting"
    if isinstance(exc, SMTPHeloError):
        return "EHLO"
    if isinstance(exc, SMTPAuthenticationError):
        return "login"
    if isinstance(exc, SMTPSenderRefused):
        return "MAIL FROM"
    if isinstance(exc, SMTPRecipientRefused):
        return "RCPT TO"
    if isinstance(exc, SMTPDataError):
        return "DATA"
    return "command"


def _is_stale(exc: BaseException) -> bool:
    """Did a reused connection turn out to be closed by the server?

    Timeouts do not count: retrying them would double a send's worst-case time.
    """
    if isinstance(exc, SMTPResponseException):
        return exc.code == 421  # "closing transmission channel", e.g. after an idle timeout
    if isinstance(exc, SMTPServerDisconnected):
        return True
    return isinstance(exc, ConnectionError) and not isinstance(exc, SMTPConnectError)


def _reply(code: int, message: str) -> str:
    return f"{code} {_one_line(message)}".strip()


def _one_line(text: str) -> str:
    """Header values and reasons must not span lines (and mail headers must not inject)."""
    return " ".join(text.split())


def _thread_id(key: str) -> str:
    if len(key) <= _MAX_THREAD_ID and _DOT_ATOM.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _addresses(members: Sequence[Member]) -> tuple[list[Address], list[str], dict[str, str]]:
    """The members' addresses, each once; the ones that are not valid addresses; and for each
    address sent to, the member's `email` as configured (how the outbox names whom to retry)."""
    seen: set[str] = set()
    valid: list[Address] = []
    invalid: list[str] = []
    configured: dict[str, str] = {}
    for member in members:
        email = member.email.strip()
        if not email or email.lower() in seen:
            continue
        seen.add(email.lower())
        try:
            address = Address(display_name=_one_line(member.name), addr_spec=email)
        except (ValueError, IndexError, HeaderParseError):
            invalid.append(email)
            continue
        valid.append(address)
        configured[address.addr_spec] = member.email
    return valid, invalid, configured


def _secret_forms(username: str, password: str) -> tuple[str, ...]:
    """The password as written and as AUTH PLAIN and LOGIN carry it, should a reply echo it."""
    if not password:
        return ()
    plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    return password, plain, login
