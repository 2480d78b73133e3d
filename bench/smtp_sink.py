"""A local SMTP sink for the benchmark: accepts every mail and logs it, one JSON line each.

    python bench/smtp_sink.py --port PORT --log FILE [--grep REGEX]

Prints "READY PORT" once it listens on 127.0.0.1. Each line of FILE is either
`{"event": "connect", "t": ..., "conn": N}` (a new client connection) or
`{"event": "mail", "t": ..., "conn": N, "rcpt": [...], "bytes": ..., "subject": ...,
"tokens": [...]}` where `tokens` are the distinct matches of REGEX in the subject and the
decoded text part (only when --grep is given: decoding costs CPU). `t` is the arrival time
(time.time(), taken when the DATA command completed). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import re
import signal
import sys
import time
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class Recorder:
    def __init__(self, log: IO[str], grep: re.Pattern[str] | None) -> None:
        self.log = log
        self.grep = grep
        self.ids = itertools.count(1)

    def write(self, record: dict[str, Any]) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()  # the runner reads the file while the sink runs

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        record: dict[str, Any] = {
            "event": "mail",
            "t": time.time(),
            "conn": getattr(server, "conn_id", 0),
            "rcpt": list(envelope.rcpt_tos),
            "bytes": len(raw),
        }
        if self.grep is not None:
            record.update(self._inspect(raw))
        self.write(record)
        return "250 2.0.0 Accepted"

    def _inspect(self, raw: bytes) -> dict[str, Any]:
        assert self.grep is not None
        message = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(message.get("Subject", ""))
        texts = [subject]
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                texts.append(part.get_content())  # type: ignore[attr-defined]
        tokens = sorted({m for text in texts for m in self.grep.findall(text)})
        return {"subject": subject, "tokens": tokens}


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP that logs each client connection (to show connection reuse)."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder, hostname="bench-sink", ident="bench-sink")
        self.recorder = recorder
        self.conn_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.conn_id = next(self.recorder.ids)
        self.recorder.write({"event": "connect", "t": time.time(), "conn": self.conn_id})


async def serve(port: int, log_path: str, grep: str) -> None:
    with open(log_path, "a", encoding="utf-8") as log:
        recorder = Recorder(log, re.compile(grep) if grep else None)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: CountingSMTP(recorder), "127.0.0.1", port)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY {port}", flush=True)
        await stop.wait()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--grep", default="", help="regular expression whose matches to log")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.log, args.grep))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
