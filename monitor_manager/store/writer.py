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
SCRATCH_BATCH = 20_000  # ops a scratch store writes between its commits


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
        self,
        path: str,
        on_failure: Callable[[BaseException], None] = lambda exc: None,
        *,
        scratch: bool = False,
    ) -> None:
        self.path = path
        # A scratch store (replay's, thrown away afterwards) is written without fsync, its
        # rollback journal in memory, and on the caller's thread: a batch run has no event
        # loop to keep responsive, and a hand-off to the store thread per write cost replay
        # more than the writes. Read at open(), so it may be set on a built store before it
        # opens. Never for the service's store.
        self.scratch = scratch
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
        self._uncommitted = 0  # a scratch store's ops written since its last commit

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        await self.run_raw(self._open)
        if self.scratch:
            return  # written inline: no writer task
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.scratch:
            conn.execute("PRAGMA journal_mode=MEMORY")
            conn.execute("PRAGMA synchronous=OFF")
        else:
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
        if self.scratch:  # inline, after what was written (its own transactions may follow)
            self._end_scratch_transaction()
            return fn(*args)
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
        if self.scratch:  # the reader sees committed rows only
            self._end_scratch_transaction()
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
        if self.scratch:
            self._commit_inline(ops)
            return
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

    def _commit_inline(self, ops: list[Op]) -> None:
        """A scratch store's write, here and now, into a transaction left open for the writes
        that follow (committed every SCRATCH_BATCH ops, and before anything else runs on the
        connection): a commit per write cost replay more than the writes. A failure rolls back
        everything since the last commit; for a scratch store that ends the run."""
        conn = self._conn
        assert conn is not None
        if not ops:
            return
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            _apply(conn, ops)
            self._uncommitted += len(ops)
            if self._uncommitted >= SCRATCH_BATCH:
                self._end_scratch_transaction()
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._uncommitted = 0
            self._mark(exc)
            self.on_failure(exc)
            raise StoreError(self.last_error) from exc
        self.healthy = True

    def _end_scratch_transaction(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("COMMIT")
            self.commits += 1
        self._uncommitted = 0

    def _commit(self, ops: list[Op]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            _apply(conn, ops)
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


def _apply(conn: sqlite3.Connection, ops: list[Op]) -> None:
    """Run ops in order inside the open transaction; consecutive ops with the same statement
    go to executemany: far fewer round trips."""
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


def _rows(sql: str, params: Sequence[Any], conn: sqlite3.Connection) -> list[sqlite3.Row]:
    cur = conn.execute(sql, params)
    cur.row_factory = sqlite3.Row
    return cur.fetchall()


def _sql(op: Op) -> str | None:
    return None if callable(op) else op[0]


def _params(op: Op) -> Sequence[Any]:
    assert not callable(op)
    return op[1]
