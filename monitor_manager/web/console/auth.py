"""Who may see the console: sessions after a login, slowed failed logins, CSRF tokens.

- A session is a random token in a cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) that
  names a server-side entry: a logout or a changed password ends it at once, and it expires
  after `console.session_lifetime`. Entries are in memory (a restart logs everyone out) and
  bounded: past MAX_SESSIONS the oldest go.
- Failed logins are counted per client address. The first FREE_FAILURES are free; after
  that each attempt must wait twice as long as the last (1 s, 2 s, 4 s ... up to 5 minutes),
  and one that comes earlier is refused without looking at the password. At most MAX_CLIENTS
  addresses are remembered, least recently failed first to go. At most VERIFY_CONCURRENCY
  password hashes are computed at once, whoever asks.
- Every form carries a token derived from the session (or, before a login, from a random
  cookie of its own) with a key made at start-up; a POST without the matching token, or that
  the browser marks as cross-site, changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from monitor_manager.clock import Clock
from monitor_manager.config import Config, ConsoleUserConfig
from monitor_manager.passwords import hash_password, verify_password

SESSION_COOKIE = "mm_session"
ANON_COOKIE = "mm_csrf"  # the CSRF basis before a login (and on an open console)
MAX_SESSIONS = 10_000
MAX_CLIENTS = 4096
FREE_FAILURES = 5
FIRST_DELAY = 1.0
MAX_DELAY = 300.0
VERIFY_CONCURRENCY = 2


def password_tag(user: ConsoleUserConfig) -> str:
    """Changes when the configured password changes: a session made before no longer holds."""
    return hashlib.sha256(f"{user.name}\0{user.password}".encode()).hexdigest()[:16]


@dataclass
class Session:
    token: str
    user: str
    tag: str
    expires_at: float
    csrf_basis: str = field(default_factory=lambda: secrets.token_urlsafe(16))


class Sessions:
    def __init__(self, clock: Clock, max_sessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: ConsoleUserConfig, lifetime: float) -> Session:
        now = self.clock()
        self._expire(now)
        while len(self._by_token) >= self.max_sessions:
            self._by_token.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), user.name, password_tag(user), now + lifetime)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None, config: Config) -> Session | None:
        """The live session of this token whose user still exists with the same password."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        user = next((u for u in config.console.users if u.name == session.user), None)
        if session.expires_at <= self.clock() or user is None or password_tag(user) != session.tag:
            self._by_token.pop(token, None)
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)

    def _expire(self, now: float) -> None:
        # Sessions are created in order and all live equally long: the oldest expire first.
        while self._by_token:
            oldest = next(iter(self._by_token.values()))
            if oldest.expires_at > now:
                break
            self._by_token.popitem(last=False)


@dataclass
class _Failures:
    count: int = 0
    next_allowed_at: float = 0.0


class LoginThrottle:
    """Failed logins slow down the client that made them; memory stays bounded."""

    def __init__(
        self,
        clock: Clock,
        free: int = FREE_FAILURES,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.clock = clock
        self.free = free
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its next attempt counts (0: go on)."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        return max(entry.next_allowed_at - self.clock(), 0.0)

    def failed(self, client: str) -> None:
        entry = self._clients.pop(client, None) or _Failures()
        now = self.clock()
        if entry.count and now - entry.next_allowed_at > 2 * self.max_delay:
            entry = _Failures()  # quiet long enough: start over
        entry.count += 1
        extra = entry.count - self.free
        if extra > 0:
            entry.next_allowed_at = now + min(self.first_delay * 2 ** (extra - 1), self.max_delay)
        else:
            entry.next_allowed_at = now
        self._clients[client] = entry  # most recent last
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)


class Verifier:
    """Password checks off the event loop, a few at a time. A name nobody has is checked
    against a throw-away hash, so an answer takes as long whether the user exists or not."""

    def __init__(self, concurrency: int = VERIFY_CONCURRENCY) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._decoy: str | None = None

    async def check(self, config: Config, name: str, password: str) -> ConsoleUserConfig | None:
        user = next((u for u in config.console.users if u.name == name), None)
        loop = asyncio.get_running_loop()
        async with self._slots:
            if user is None:
                if self._decoy is None:
                    self._decoy = await loop.run_in_executor(None, hash_password, "decoy")
                await loop.run_in_executor(None, verify_password, password, self._decoy)
                return None
            ok = await loop.run_in_executor(None, verify_password, password, user.password)
        return user if ok else None


def csrf_token(key: bytes, basis: str) -> str:
    return hmac.new(key, f"csrf\0{basis}".encode(), hashlib.sha256).hexdigest()[:40]


def csrf_matches(key: bytes, basis: str | None, given: str | None) -> bool:
    if not basis or not given:
        return False
    return hmac.compare_digest(csrf_token(key, basis).encode(), given.encode("utf-8", "replace"))
