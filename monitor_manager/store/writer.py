"""Durable state on SQLite (WAL), owned by one thread, written with group commit.

Why this shape:
- One connection on one dedicated thread: SQLite serialises writers anyway, and the event loop
  never waits on disk I/O.
- Group commit: writes from concurrent webhook requests (and timers and the outbox) that arrive
  while a commit is running are gathered into the next transaction, so a burst pays one fsync
  instead of one per request. A caller's `write()` returns only after its transaction is
  durable (synchronous=FULL), which is what "store before answering 200" needs.
- A failed commit fails every write waiting behind it too: they were decided on in-memory state
  that included the failed batch, and `on_failure` lets the owner reload that state.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import sqlite_utils

from monitor_manager.store.migrations import migrations

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]
"""One statement and its parameters."""

Op = Statement | Callable[[sqlite3.Connection], None]
"""A statement, or a step run on the store thread inside the transaction, in order with the
statements around it: it sees every write queued before it, committed or not (messages are
built there from the stored alert rows, which memory does not keep)."""

T = TypeVar("T")


def probe_op(now: float) -> Statement:
    return ("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (now,))


class StoreError(Exception):
    """The store could not commit; the caller must not report success. `reason` is a fixed
    phrase, safe to show to any client (the raw error goes to the log only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_REASONS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the store is read-only",
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_BUSY": "the store is locked by another process",
    "SQLITE_LOCKED": "the store is locked",
    "SQLITE_CORRUPT": "the store file is damaged",
    "SQLITE_NOTADB": "the store file is not a database",
    "SQLITE_CANTOPEN": "the store file cannot be opened",
    "SQLITE_PERM": "permission denied",
}


def failure_reason(exc: BaseException) -> str:
    """A fixed phrase for why a write failed: never the exception's own text."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, reason in _REASONS.items():
        if name.startswith(prefix):
            return reason
    if isinstance(exc, sqlite3.Error):
        return f"the store refused the write ({name or type(exc).__name__})"
    return f"internal error while writing ({type(exc).__name__})"


class Store:
    def __init__(
        self, path: str, on_failure: Callable[[BaseException], None] = lambda exc: None
    ) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        # API reads: their own connection and thread, so a slow listing never holds a commit
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self._read_conn: sqlite3.Connection | None = None
        self._pending: list[tuple[list[Op], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.on_failure = on_failure  # told of every failed commit (memory must reload)
        self.healthy = True
        self.last_error = ""
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        await self.run_raw(self._open)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=OFF")
        migrations.apply(sqlite_utils.Database(conn))
        self._conn = conn

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self._read_conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._reader, self._read_conn.close)
            self._read_conn = None
        self._reader.shutdown(wait=True)
        if self._conn is not None:
            await self.run_raw(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    # -- reads and single transactions ---------------------------------------------------------
    async def run_raw(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) on the store thread (reads, or a write that needs its own result)."""
        return await self.run_raw(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return fn(self._conn)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(partial(_rows, sql, params))

    async def read_query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read on the reader connection: it sees what is committed, and runs beside the
        writer (WAL) without holding up a commit, however long it takes."""
        return await self.read(partial(_rows, sql, params))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA query_only=ON")
            self._read_conn = conn
        return fn(self._read_conn)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(conn) inside its own BEGIN IMMEDIATE ... COMMIT (for conditional claims)."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        try:
            return await self.run(tx)
        except sqlite3.Error as exc:
            self._mark(exc)
            raise StoreError(failure_reason(exc)) from exc

    async def probe(self, now: float) -> None:
        """A real (tiny) write in a transaction of its own: proves the store takes writes (the
        disk is not full, the file not read-only). `healthy` stays as the last real commit left
        it; `write([probe_op(now)])` is the way to try a real commit."""
        await self.transaction(lambda conn: conn.execute(*probe_op(now)))

    # -- group commit ------------------------------------------------------------------------------
    async def write(self, ops: list[Op]) -> None:
        """Commit ops durably, sharing the transaction with concurrent writers.

        An empty list still waits for every write queued before it (a barrier): a caller whose
        answer depends on state that earlier writers changed must not answer before them.
        """
        assert self._wake is not None, "store is not open"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ops, future))
        self._wake.set()
        await future

    async def flush(self) -> None:
        if self._wake is not None and self._writer is not None and not self._writer.done():
            await self.write([])

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            ops = [op for ops, _ in batch for op in ops]
            try:
                if ops:
                    await self.run_raw(self._commit, ops)
            except Exception as exc:
                self._mark(exc)
                failed = batch + self._pending
                self._pending = []
                for _, future in failed:
                    if not future.done():
                        future.set_exception(StoreError(self.last_error))
                self.on_failure(exc)
                continue
            self.healthy = True
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _commit(self, ops: list[Op]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Consecutive ops with the same statement go to executemany: far fewer round trips.
            i = 0
            while i < len(ops):
                op = ops[i]
                if callable(op):
                    op(conn)
                    i += 1
                    continue
                sql = op[0]
                j = i + 1
                while j < len(ops) and _sql(ops[j]) == sql:
                    j += 1
                if j - i == 1:
                    conn.execute(sql, op[1])
                else:
                    conn.executemany(sql, [_params(o) for o in ops[i:j]])
                i = j
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1

    def _mark(self, exc: BaseException) -> None:
        self.healthy = False
        self.last_error = failure_reason(exc)
        log.error("store commit failed: %s: %s", type(exc).__name__, exc)


def _rows(sql: str, params: Sequence[Any], conn: sqlite3.Connection) -> list[sqlite3.Row]:
    cur = conn.execute(sql, params)
    cur.row_factory = sqlite3.Row
    return cur.fetchall()


def _sql(op: Op) -> str | None:
    return None if callable(op) else op[0]


def _params(op: Op) -> Sequence[Any]:
    assert not callable(op)
    return op[1]
