"""The recording of accepted webhook payloads (`[server] record = PATH`), for `replay`.

Format: JSON lines, one per accepted payload, in the order their commits completed:

    {"at": "2026-12-02T10:15:00.123Z", "payload": {...}}

`at` is when the webhook took the request (RFC 3339, UTC, milliseconds: the time convergence
used), `payload` the body as received and decoded (decompressed; unchanged otherwise). Only
payloads that were accepted and stored are written: a 4xx or a 503 leaves no line.

Why this shape:
- the webhook hands over the bytes it already read and goes on: a body on one line (what
  Alertmanager sends) is written as it came, without encoding it again; only a body that spans
  lines (pretty-printed by hand) is encoded once more, on one line;
- a background task writes what gathered every FLUSH_SECONDS (sooner once BUFFER_BYTES
  gathered) on a thread of its own: no webhook waits on the recording's disk;
- bounded in memory: past MAX_PENDING_BYTES waiting (a disk slower than the webhook) payloads
  are not recorded; bounded on disk: a file that would pass `max_bytes` becomes PATH.1
  (replacing the last PATH.1) and a new PATH starts, so at most twice `max_bytes` is kept (a
  single payload larger than `max_bytes` still gets a file to itself);
- never failing a webhook: a payload that could not be written is counted in
  `monitor_manager_record_payloads_total{result="failed"}` and the error is logged once per
  episode of failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from monitor_manager.clock import Clock, iso
from monitor_manager.ingest.payload import PayloadError, parse_time
from monitor_manager.metrics import Metrics

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5  # what gathered is written at least this often
BUFFER_BYTES = 1 << 20  # ... and as soon as this much gathered
MAX_PENDING_BYTES = 32 << 20  # more waiting than this: payloads are not recorded (counted)


def record_line(at: float, body: bytes, data: Any) -> bytes:
    """One line of the recording: `body` as received when it is one line of JSON, else `data`
    encoded again on one line."""
    body = body.strip(b" \t\r\n")
    if b"\n" in body or b"\r" in body or not body:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return b'{"at":"' + (iso(at) or "").encode() + b'","payload":' + body + b"}\n"


class RecordError(ValueError):
    """A line of a recording that cannot be read."""


def parse_line(text: str | bytes) -> tuple[float, Any]:
    """(at as Unix seconds, the payload as decoded JSON) of one line; RecordError if it is
    not one."""
    try:
        entry = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(entry, dict) or "at" not in entry or "payload" not in entry:
        raise RecordError('expected {"at": RFC3339, "payload": {...}}')
    try:
        at = parse_time(entry["at"], "at")
    except PayloadError as exc:
        raise RecordError(f"at: {exc.message}") from None
    if at is None:
        raise RecordError("at: the zero time")
    return at, entry["payload"]


class Recorder:
    def __init__(self, path: str, max_bytes: int, clock: Clock, metrics: Metrics) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.clock = clock
        self.metrics = metrics
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # One thread: writes and rotations happen in order, never two at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record")
        self._file: IO[bytes] | None = None
        self._size = 0
        self._failing = False  # in an episode of failures: logged once

    # -- the webhook's side: no I/O, no waiting ---------------------------------------------
    def record(self, at: float, body: bytes, data: Any) -> None:
        """An accepted payload, taken at `at`: queued for the writer."""
        if self._pending_bytes > MAX_PENDING_BYTES or self._closing:
            self._failed(1, "too much waiting to be written (the disk is slow)")
            return
        line = record_line(at, body, data)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= BUFFER_BYTES:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def close(self) -> None:
        """Write what is waiting, then close the file."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_file)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=FLUSH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug must not end recording for good, nor reach a webhook
                log.exception("recording payloads failed")

    async def flush(self) -> None:
        """Write what gathered (on the recorder's thread)."""
        if not self._pending:
            return
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        loop = asyncio.get_running_loop()
        written, error = await loop.run_in_executor(self._executor, self._write, lines)
        if written:
            self.metrics.record_payloads.labels("written").inc(written)
            if self._failing:
                log.warning("recording payloads to %s again", self.path)
            self._failing = False
        if error:
            self._failed(len(lines) - written, error)

    def _failed(self, count: int, why: str) -> None:
        self.metrics.record_payloads.labels("failed").inc(count)
        if not self._failing:
            log.error(
                "could not record %d webhook payload(s) to %s: %s (the webhooks were accepted; "
                "counted in monitor_manager_record_payloads_total)",
                count,
                self.path,
                why,
            )
        self._failing = True

    # -- the recorder's thread ----------------------------------------------------------------
    def _write(self, lines: list[bytes]) -> tuple[int, str]:
        """Append `lines`, rotating as the size requires: (lines written, error or "")."""
        written = 0
        try:
            if self._file is None:
                self._open()
            while written < len(lines):
                assert self._file is not None
                chunk: list[bytes] = []
                size = self._size
                for line in lines[written:]:
                    if size + len(line) > self.max_bytes and (size > 0 or chunk):
                        break
                    chunk.append(line)
                    size += len(line)
                if chunk:
                    self._file.write(b"".join(chunk))
                    self._file.flush()
                    self._size = size
                    written += len(chunk)
                if written < len(lines):
                    self._rotate()
        except OSError as exc:
            self._close_file()
            return written, exc.strerror or type(exc).__name__
        return written, ""

    def _open(self) -> None:
        self._file = open(self.path, "ab")  # kept open between writes
        self._size = self._file.seek(0, os.SEEK_END)

    def _rotate(self) -> None:
        self._close_file()
        if os.path.exists(self.path):  # someone may have moved it away meanwhile
            os.replace(self.path, self.path + ".1")
        self._open()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
