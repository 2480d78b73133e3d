"""The channels' log of messages sent in parts, kept in the store.

WeCom takes a long message as several calls. When one fails, the retry resumes after the
parts that went out; kept here, that survives a restart too, instead of the whole message
arriving again. Best effort: a store that refuses the write only costs that guarantee.
"""

from __future__ import annotations

import logging

from monitor_manager.clock import Clock
from monitor_manager.store import Op, Store, StoreError

log = logging.getLogger(__name__)


class StoredPartsLog:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._done: dict[str, tuple[int, float]] = {}

    async def load(self) -> None:
        rows = await self.store.query("SELECT key, done, updated_at FROM channel_parts")
        self._done = {r[0]: (r[1], r[2]) for r in rows}

    def get(self, key: str) -> int:
        entry = self._done.get(key)
        return entry[0] if entry else 0

    async def set(self, key: str, done: int) -> None:
        now = self.clock()
        self._done[key] = (done, now)
        await self._write(
            (
                "INSERT OR REPLACE INTO channel_parts (key, done, updated_at) VALUES (?, ?, ?)",
                (key, done, now),
            )
        )

    def expire(self, before: float) -> list[Op]:
        """Entries are kept after the last part (a crash before the delivery is recorded
        must not send every part again) until the retention has passed."""
        for key in [k for k, (_, at) in self._done.items() if at < before]:
            del self._done[key]
        return [("DELETE FROM channel_parts WHERE updated_at < ?", (before,))]

    async def _write(self, op: Op) -> None:
        if not self.store.healthy:  # e.g. the direct StoreFailing page: do not wait on it
            return
        try:
            await self.store.write([op])
        except StoreError as exc:
            log.warning("could not record the progress of a message sent in parts: %s", exc)
