"""Reference servers for the ingest benchmark, each a separate process on 127.0.0.1.

    python bench/baselines.py KIND --port PORT [--db PATH]

KIND:
- `trivial`: a bare asyncio protocol that frames HTTP requests by Content-Length and answers
  each with a canned 200, without parsing the body. It only exists to show how fast the load
  generator can go, so that a figure limited by wrk is not mistaken for one limited by a server.
- `a`: a minimal aiohttp server: reads the body, parses the JSON, answers 200 with a JSON body.
- `b`: (a) plus durability: every alert of the payload upserted into SQLite (WAL,
  synchronous=FULL, the service's settings) in one transaction per request, committed before
  the answer. The commit runs inline on the event loop: the simplest durable-before-200 server,
  one fsync per request, nothing shared between requests. That is the floor cost the service
  is compared with.

Every kind also answers GET /healthz with 200, so the runner can wait for it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import sqlite3
import time
from typing import Any

from aiohttp import web

PATH = "/webhook/alertmanager"

# -- trivial -----------------------------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CANNED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
    b'\r\n{"status":"ok"}'
)


class TrivialProtocol(asyncio.Protocol):
    """Answers every complete request with the same bytes; keeps the connection open."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            match = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            assert self.transport is not None
            self.transport.write(_CANNED)


async def serve_trivial(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, "127.0.0.1", port, backlog=1024)
    await _until_signal()
    server.close()


# -- a and b -----------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    ends_at TEXT,
    generator_url TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
)
"""
UPSERT = (
    "INSERT INTO alerts (fingerprint, labels, annotations, status, starts_at, ends_at, "
    "generator_url, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET annotations = excluded.annotations, "
    "status = excluded.status, starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
    "generator_url = excluded.generator_url, updated_at = excluded.updated_at"
)


def open_db(path: str) -> sqlite3.Connection:
    """The service's settings: WAL, synchronous=FULL, autocommit mode with explicit BEGIN."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    return conn


def fingerprint(labels: dict[str, str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(labels):
        h.update(name.encode())
        h.update(b"\xff")
        h.update(labels[name].encode())
        h.update(b"\xff")
    return h.hexdigest()


def upsert_rows(alerts: list[dict[str, Any]], now: float) -> list[tuple[Any, ...]]:
    return [
        (
            fingerprint(a["labels"]),
            json.dumps(a["labels"]),
            json.dumps(a.get("annotations", {})),
            a["status"],
            a["startsAt"],
            a.get("endsAt"),
            a.get("generatorURL", ""),
            now,
        )
        for a in alerts
    ]


def make_app(conn: sqlite3.Connection | None) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
            alerts = data["alerts"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad payload"}, status=400)
        if conn is not None:
            rows = upsert_rows(alerts, time.time())
            # Inline on purpose: one transaction and one fsync per request, answered after.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(UPSERT, rows)
                conn.execute("COMMIT")
            except sqlite3.Error:
                conn.execute("ROLLBACK")
                return web.json_response({"error": "store"}, status=503)
        return web.json_response({"status": "ok", "accepted": len(alerts), "duplicates": 0})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post(PATH, webhook)
    app.router.add_get("/healthz", healthz)
    return app


async def serve_app(port: int, conn: sqlite3.Connection | None) -> None:
    runner = web.AppRunner(make_app(conn), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    await _until_signal()
    await runner.cleanup()
    if conn is not None:
        conn.close()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["trivial", "a", "b"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="baseline.db", help="SQLite file for kind b")
    args = parser.parse_args()
    if args.kind == "trivial":
        asyncio.run(serve_trivial(args.port))
    else:
        asyncio.run(serve_app(args.port, open_db(args.db) if args.kind == "b" else None))


if __name__ == "__main__":
    main()
