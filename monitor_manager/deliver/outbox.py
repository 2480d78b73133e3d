"""The durable outbox: send-with-retry and record, one row per (notification, channel).

A row is written together with its notification, before any network call. The worker claims
due rows with a conditional update (`... WHERE state IN ('pending', 'retrying')`), so no two
workers ever send one row, then sends and records the outcome. A crash between sending and
recording leaves the row `sending`; `recover()` at the next start turns it back into
`retrying`: a message may repeat, none is lost.

Failures: `ChannelError.permanent` stops at once; anything else retries with exponential
backoff and jitter from `retry_initial` up to `retry_max`, until `give_up_after` has passed
since the row was written. A channel may ask for a longer pause (`retry_after`, e.g. a WeCom
frequency block). When only some recipients are to be tried again (`PartlySent`), the row
keeps their addresses in `only_to` and later attempts go to them alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from monitor_manager.channels.base import Channel, ChannelError, PartlySent
from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import DIGEST_LOG_KEY, Entry, HighAvailability
from monitor_manager.cluster.legacy_keys import content_hash_v1, log_key_v1
from monitor_manager.config import DeliveryConfig
from monitor_manager.metrics import Metrics
from monitor_manager.models import GroupView, Message
from monitor_manager.store import Op, Store, StoreError

log = logging.getLogger(__name__)

MAX_MERGE = 50  # messages merged into one send for a rate-limited channel
BATCH = 200  # rows looked at per poll
SWEEP_SECONDS = 60.0  # how often rows left `sending` with nothing in flight are looked for
SUPERSEDED = "with a newer state of the alert group went out first"
MARK_SUPERSEDED = (  # note appended to what earlier attempts noted
    "UPDATE deliveries SET state = 'delivered', "
    "note = CASE WHEN note = '' THEN ? ELSE note || '; then ' || ? END, updated_at = ?, "
    "delivered_at = ?, next_attempt_at = NULL WHERE id = ?"
)


@dataclass
class Delivery:
    id: int
    notification_id: int
    channel: str
    attempts: int
    created_at: float
    message: Message
    group_key: str | None = None
    content_hash: str = ""
    note: str = ""  # what earlier attempts delivered, when they reached only some recipients
    only_to: tuple[str, ...] = ()  # the recipients still owed the message; () for all

    @property
    def log_key(self) -> str | None:
        """Its key in the notification log: the alert group, or one key for the contact
        group's digests (equal digests from two instances are the same message)."""
        if self.group_key:
            return self.group_key
        return DIGEST_LOG_KEY if self.message.kind == "digest" else None

    def log_entry(self, sent_at: float, instance: str) -> Entry:
        """Its notification log entry, in both release-2 and release-1 words."""
        key = self.log_key or ""
        return Entry(
            self.message.contact_group,
            key,
            self.channel,
            self.content_hash,
            sent_at,
            instance,
            log_key_v1(self.message, key),
            content_hash_v1(self.message),
        )


@dataclass
class Outcome:
    delivered: bool
    permanent: bool = False
    error: str = ""
    note: str = ""
    retry_after: float | None = None
    only_to: tuple[str, ...] = ()  # PartlySent: the others got it; retry for these
    recipients_refused: bool = False  # the failure is about recipients, not the channel


class DeliveryObserver(Protocol):
    """Told every outcome per channel (the watchdog raises DeliveryFailed, ChannelFailing)."""

    def delivered(self, channel: str) -> None: ...
    def retrying(self, channel: str, error: str, now: float) -> None: ...
    def failed(self, channel: str, error: str, now: float) -> None: ...


class Outbox:
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        config: DeliveryConfig,
        clock: Clock,
        metrics: Metrics,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.channels = channels
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.rng = rng
        self.observer: DeliveryObserver | None = None
        self.ha: HighAvailability | None = None
        self._semaphore = asyncio.Semaphore(max(config.concurrency, 1))
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._next_sweep = 0.0  # when to look for rows left `sending` with nothing in flight

    def wake(self) -> None:
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def recover(self) -> int:
        """Rows left `sending` by a crash are sent again (at least once)."""

        def reset(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, "
                "last_error = 'interrupted while sending (restart); sending again' "
                "WHERE state = 'sending'",
                (self.clock(),),
            )
            return cur.rowcount

        return await self.store.transaction(reset)

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.dispatch_due()
                delay = await self._until_next_due()
            except StoreError:
                delay = 1.0  # the store is failing; readyz says so, try again shortly
            except Exception:  # a bug must not stop delivery for good
                log.exception("outbox poll failed")
                delay = 1.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
            except TimeoutError:
                pass

    async def stop(self, timeout: float = 10.0) -> None:
        """Claim nothing more; let sends in flight finish within `timeout`."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def drain(self) -> None:
        """Dispatch what is due now and wait for those sends (tests, send-test)."""
        await self.dispatch_due()
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    # -- dispatch ----------------------------------------------------------------------------------
    async def dispatch_due(self) -> int:
        """Claim every due row that may go now, in one transaction, and start sending them."""
        if self._stopping:
            return 0
        now = self.clock()
        if now >= self._next_sweep:
            await self._release_stuck(now)
        rows = await self.store.run(lambda conn: _due_rows(conn, now, self._inflight))
        deferred: list[Op] = []
        ready: list[tuple[Channel | None, list[Delivery]]] = []
        for batch in self._batches(rows):
            channel = self.channels.get(batch[0].channel)
            if channel is not None:
                slot = channel.ready_at(_message_of(batch))
                if slot > now:  # rate limited: wait for the slot, keep the rows pending
                    deferred += [
                        (
                            "UPDATE deliveries SET next_attempt_at = ? WHERE id = ? "
                            "AND state IN ('pending', 'retrying')",
                            (slot, d.id),
                        )
                        for d in batch
                    ]
                    continue
            ready.append((channel, batch))
        if deferred:
            await self.store.write(deferred)
        if not ready:
            return 0
        ids = [d.id for _, batch in ready for d in batch]
        claimed = await self.store.transaction(lambda conn: _claim(conn, ids, now))
        # Claimed rows are `sending`: in flight until a send records them, or written off as
        # superseded or sent by a peer. Should one of those writes fail, the row is left
        # `sending` with nothing in flight, and the next sweep hands it back.
        self._inflight.update(claimed)
        sending: set[int] = set()
        try:
            for channel, batch in ready:
                batch = await self._drop_superseded([d for d in batch if d.id in claimed])
                batch = await self._drop_sent_by_peers(batch)
                if not batch:
                    continue
                sending.update(d.id for d in batch)
                task = asyncio.create_task(self._send(channel, batch, _message_of(batch)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except StoreError:
            self._next_sweep = 0.0
            raise
        finally:
            self._inflight.difference_update(claimed - sending)
        return len(sending)

    async def _release_stuck(self, now: float) -> None:
        """Rows `sending` with no send in flight (recording their outcome failed) are due
        again: sent once more rather than never (at least once)."""
        inflight = list(self._inflight)

        def release(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(inflight))
            return conn.execute(
                "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, "
                "last_error = 'its outcome could not be recorded; sending again' "
                f"WHERE state = 'sending' AND id NOT IN ({marks})",
                (now, *inflight),
            ).rowcount

        released = await self.store.transaction(release)
        if released:
            log.warning(
                "%d deliveries were left sending with nothing in flight; sending them again",
                released,
            )
        self._next_sweep = now + SWEEP_SECONDS

    def _batches(self, rows: list[Delivery]) -> list[list[Delivery]]:
        batches: list[list[Delivery]] = []
        merging: dict[tuple[str, str], list[Delivery]] = {}
        for row in rows:
            channel = self.channels.get(row.channel)
            if channel is not None and channel.merges_backlog and not row.only_to:
                key = (row.channel, row.message.contact_group)
                if key not in merging:
                    merging[key] = []
                    batches.append(merging[key])
                if len(merging[key]) < MAX_MERGE:
                    merging[key].append(row)
            else:
                batches.append([row])
        return batches

    async def _drop_superseded(self, batch: list[Delivery]) -> list[Delivery]:
        """A retry that was in flight while a newer message of its alert group went out
        through the channel would arrive stale: it is not sent (see `_supersede_older`)."""
        retries = [d for d in batch if d.attempts and d.group_key]
        if not retries:
            return batch
        now = self.clock()
        newer = await self.store.run(lambda conn: {d.id: _superseded_by(conn, d) for d in retries})
        ops: list[Op] = [
            (MARK_SUPERSEDED, (why, why, now, now, d.id))
            for d in retries
            if (n := newer[d.id]) is not None
            for why in [f"not sent: notification {n} {SUPERSEDED}"]
        ]
        if not ops:
            return batch
        await self.store.write(ops)
        return [d for d in batch if newer.get(d.id) is None]

    async def _drop_sent_by_peers(self, batch: list[Delivery]) -> list[Delivery]:
        """High availability: a peer already sent this content through this channel."""
        if self.ha is None or not self.ha.enabled:
            return batch
        ops: list[Op] = []
        keep = []
        now = self.clock()
        for d in batch:
            peer = (
                None
                if d.log_key is None
                else self.ha.sent_by_peer(
                    d.log_entry(now, self.ha.instance),
                    d.created_at,
                    newer_supersedes=d.log_key == d.group_key,
                )
            )
            if peer is None:
                keep.append(d)
                continue
            ops.append(
                (
                    "UPDATE deliveries SET state = 'delivered', attempts = ?, note = ?, "
                    "updated_at = ?, delivered_at = ?, next_attempt_at = NULL WHERE id = ?",
                    (
                        d.attempts,
                        f"not sent here: peer {peer} already sent it (or a newer state)",
                        now,
                        now,
                        d.id,
                    ),
                )
            )
        if ops:
            await self.store.write(ops)
        return keep

    async def _send(self, channel: Channel | None, batch: list[Delivery], message: Message) -> None:
        try:
            if batch[0].only_to and not message.recipients:  # a stored name matches nobody
                outcome = Outcome(
                    True,
                    note=f"never reached {', '.join(batch[0].only_to)}: "
                    "no longer among the message's recipients",
                )
            else:
                async with self._semaphore:
                    outcome = await self._attempt(channel, batch[0].channel, message)
            await self._record(batch, outcome)
        finally:
            self._inflight.difference_update(d.id for d in batch)

    async def _attempt(self, channel: Channel | None, name: str, message: Message) -> Outcome:
        if channel is None:
            return Outcome(False, permanent=True, error=f"channel {name!r} is not configured")
        try:
            note = await channel.send(message)
        except PartlySent as exc:
            return Outcome(
                False, error=exc.reason, note=exc.note, only_to=exc.retry, recipients_refused=True
            )
        except ChannelError as exc:
            return Outcome(
                False,
                permanent=exc.permanent,
                error=exc.reason,
                retry_after=exc.retry_after,
                recipients_refused=exc.recipients_refused,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel bug: retry, and make it visible
            log.exception("channel %s raised unexpectedly", name)
            # Its text may hold anything (a URL with a token): the log has it, the row does not.
            return Outcome(False, error=f"internal error in channel: {type(exc).__name__}")
        return Outcome(True, note=note or "")

    async def _record(self, batch: list[Delivery], outcome: Outcome) -> None:
        now = self.clock()
        ops: list[Op] = []
        failed: list[Delivery] = []
        sent: list[Entry] = []
        reached = outcome.delivered or bool(outcome.only_to)  # someone has the message now
        if reached and self.ha is not None and self.ha.enabled:
            sent = [d.log_entry(now, self.ha.instance) for d in batch if d.log_key]
            ops += self.ha.record(sent)
        for d in batch:
            attempts = d.attempts + 1
            note = "; then ".join(n for n in (d.note, outcome.note) if n)
            if reached and d.group_key:
                ops.append(_supersede_older(d, now))
            if outcome.delivered:
                ops.append(
                    (
                        "UPDATE deliveries SET state = 'delivered', attempts = ?, note = ?, "
                        "last_error = '', updated_at = ?, delivered_at = ?, next_attempt_at = NULL "
                        "WHERE id = ?",
                        (attempts, note, now, now, d.id),
                    )
                )
                self.metrics.notifications.labels(d.channel, "delivered").inc()
                self.metrics.delivery_latency.labels(d.channel).observe(max(now - d.created_at, 0))
                continue
            delay = self.backoff(attempts, outcome.retry_after)
            gave_up = now + delay - d.created_at > self.config.give_up_after
            if (outcome.permanent or gave_up) and (
                reached or (d.only_to and outcome.recipients_refused)
            ):
                # Others have it and these recipients were refused: a delivery whose note names
                # who never got it, as a recipient refused for good is; not a failing channel.
                missed = ", ".join(outcome.only_to or d.only_to)
                ops.append(
                    (
                        "UPDATE deliveries SET state = 'delivered', attempts = ?, note = ?, "
                        "last_error = ?, updated_at = ?, delivered_at = ?, next_attempt_at = NULL "
                        "WHERE id = ?",
                        (
                            attempts,
                            f"{note}; never reached {missed} ({attempts} attempts)",
                            outcome.error,
                            now,
                            now,
                            d.id,
                        ),
                    )
                )
                self.metrics.notifications.labels(d.channel, "delivered").inc()
                continue
            if outcome.permanent or gave_up:
                reason = (
                    outcome.error
                    if outcome.permanent
                    else (f"gave up after {attempts} attempts: {outcome.error}")
                )
                if d.only_to:  # the others have it; these never got it
                    note = f"{note}; never reached {', '.join(d.only_to)}"
                ops.append(
                    (
                        "UPDATE deliveries SET state = 'failed', attempts = ?, last_error = ?, "
                        "note = ?, updated_at = ?, next_attempt_at = NULL WHERE id = ?",
                        (attempts, reason, note, now, d.id),
                    )
                )
                self.metrics.notifications.labels(d.channel, "failed").inc()
                failed.append(d)
            else:
                only_to = (
                    json.dumps(outcome.only_to or d.only_to)
                    if (outcome.only_to or d.only_to)
                    else ""
                )
                ops.append(
                    (
                        "UPDATE deliveries SET state = 'retrying', attempts = ?, last_error = ?, "
                        "note = ?, only_to = ?, updated_at = ?, next_attempt_at = ? WHERE id = ?",
                        (attempts, outcome.error, note, only_to, now, now + delay, d.id),
                    )
                )
                self.metrics.notifications.labels(d.channel, "retried").inc()
        try:
            await self.store.write(ops)
        except StoreError:
            # The rows stay `sending`; the next sweep sends them again (at least once).
            log.error("could not record delivery outcome for %s", [d.id for d in batch])
            self._next_sweep = 0.0
            return
        channel = batch[0].channel
        if reached:
            if self.observer is not None:
                self.observer.delivered(channel)
            if sent and self.ha is not None:
                await self.ha.push(sent)
            if outcome.delivered:
                return
        self._wake.set()
        for d in failed:
            log.warning("delivery %s via %s failed for good: %s", d.id, d.channel, outcome.error)
        if self.observer is not None:
            if failed:
                self.observer.failed(channel, outcome.error, now)
            elif not reached and not (batch[0].only_to and outcome.recipients_refused):
                # A recipient deferred again while the others have the message says nothing
                # about the channel.
                self.observer.retrying(channel, outcome.error, now)

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        base = min(self.config.retry_max, self.config.retry_initial * 2 ** max(attempts - 1, 0))
        delay = base * (0.5 + self.rng() / 2)  # jitter: half to all of the step
        return max(delay, retry_after or 0.0)

    async def _until_next_due(self) -> float:
        rows = await self.store.query(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')"
        )
        at = rows[0][0] if rows else None
        return 1.0 if at is None else min(max(at - self.clock(), 0.0), 1.0)

    async def gauges(self) -> tuple[int, float]:
        """(rows waiting to be delivered, age in seconds of the oldest one)."""
        rows = await self.store.query(
            "SELECT COUNT(*), MIN(created_at) FROM deliveries "
            "WHERE state IN ('pending', 'retrying', 'sending')"
        )
        count, oldest = rows[0][0], rows[0][1]
        age = max(self.clock() - oldest, 0.0) if oldest is not None else 0.0
        self.metrics.outbox_pending.set(count)
        self.metrics.outbox_oldest.set(age)
        return count, age


def _message_of(batch: list[Delivery]) -> Message:
    return merge([d.message for d in batch]) if len(batch) > 1 else batch[0].message


def merge(messages: list[Message]) -> Message:
    """Messages that queued up for a rate-limited channel, as one digest message."""
    latest: dict[str, GroupView] = {}
    for message in messages:
        for group in message.groups:
            latest[group.key] = group
    first = messages[0]
    return Message(
        id=first.id,
        kind="digest",
        contact_group=first.contact_group,
        recipients=first.recipients,
        groups=tuple(latest.values()),
        created_at=messages[-1].created_at,
        instance=first.instance,
        external_url=first.external_url,
        extra={"merged": [m.id for m in messages]},
    )


def _due_rows(conn: sqlite3.Connection, now: float, skip: set[int]) -> list[Delivery]:
    rows = conn.execute(
        "SELECT d.id, d.notification_id, d.channel, d.attempts, d.created_at, n.message, "
        "n.group_key, n.content_hash, d.note, d.only_to "
        "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "WHERE d.state IN ('pending', 'retrying') AND d.next_attempt_at <= ? "
        "ORDER BY d.next_attempt_at, d.id LIMIT ?",
        (now, BATCH + len(skip)),
    ).fetchall()
    return [
        _only_to(
            Delivery(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                Message.from_json(json.loads(r[5])),
                r[6],
                r[7],
                r[8],
                tuple(json.loads(r[9])) if r[9] else (),
            )
        )
        for r in rows
        if r[0] not in skip
    ]


def _supersede_older(sent: Delivery, now: float) -> Op:
    """A newer state of an alert group reached people through this channel: older messages
    of the group still waiting to retry there would arrive after it, stale. Those it covers
    (every alert they name is in it, with its newer state) are not sent; one that carries
    news the newer lacks (a resolution of an alert that has since left the group) still is."""
    covered = _fingerprints(sent.message)
    why = f"not sent: notification {sent.notification_id} {SUPERSEDED}"

    def step(conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT d.id, n.message FROM deliveries d JOIN notifications n "
            "ON n.id = d.notification_id WHERE n.group_key = ? AND n.id < ? AND d.channel = ? "
            "AND d.state IN ('pending', 'retrying')",
            (sent.group_key, sent.notification_id, sent.channel),
        ).fetchall()
        stale = [
            (why, why, now, now, row_id)
            for row_id, text in rows
            if _fingerprints(Message.from_json(json.loads(text))) <= covered
        ]
        conn.executemany(MARK_SUPERSEDED, stale)

    return step


def _fingerprints(message: Message) -> set[str]:
    return {a.fingerprint for g in message.groups for a in g.alerts}


def _superseded_by(conn: sqlite3.Connection, d: Delivery) -> int | None:
    """A newer message of the row's alert group that already went out through its channel
    and covers it (a retry that was in flight when that one went out). One that reached some
    recipients and is owed to the rest counts: everyone gets it, or has."""
    covered = _fingerprints(d.message)
    for notification_id, text in conn.execute(
        "SELECT n.id, n.message FROM notifications n JOIN deliveries d2 "
        "ON d2.notification_id = n.id WHERE n.group_key = ? AND n.id > ? AND d2.channel = ? "
        "AND (d2.state = 'delivered' AND d2.note NOT LIKE ? "
        "OR d2.state IN ('retrying', 'sending') AND d2.only_to != '') ORDER BY n.id DESC",
        (d.group_key, d.notification_id, d.channel, f"%{SUPERSEDED}%"),
    ):
        if covered <= _fingerprints(Message.from_json(json.loads(text))):
            return int(notification_id)
    return None


def _only_to(delivery: Delivery) -> Delivery:
    """The message as this attempt sends it: to the recipients still owed it, when some are."""
    if not delivery.only_to:
        return delivery
    owed = {name.strip().casefold() for name in delivery.only_to}
    recipients = tuple(
        m
        for m in delivery.message.recipients
        if owed & {v.strip().casefold() for v in m.addresses()}
    )
    return dataclasses.replace(
        delivery, message=dataclasses.replace(delivery.message, recipients=recipients)
    )


def _claim(conn: sqlite3.Connection, ids: list[int], now: float) -> set[int]:
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"UPDATE deliveries SET state = 'sending', updated_at = ? "
        f"WHERE id IN ({marks}) AND state IN ('pending', 'retrying') RETURNING id",
        (now, *ids),
    ).fetchall()
    return {r[0] for r in rows}
