"""The durable outbox: send-with-retry and record, one row per (notification, channel).

The rows belong to `store.deliveries` (states, claim, transitions); what an outcome does to a
row is `deliver.decide` (a pure function). This module runs the loop: every pass looks for
due rows and takes them through named steps, top to bottom:

0. in order: an alert group's rows go out through a channel one at a time; of those due
   together, one the newest covers waits for it (and is written off when it went out), any
   other goes first, oldest first;
1. defer: rows for a rate-limited channel wait for its next slot (still due);
2. claim: the rest become `sending` in one transaction (a conditional update: no row is sent
   twice);
3. supersede: a retry that a newer message of its alert group overtook is not sent;
4. peer dedup: with high availability, a row a reachable peer already sent is not sent;
5. send: the channel is called, several queued messages merged into one for a rate-limited
   channel;
6. record: the outcome becomes the row's new state, the notification log learns what went
   out, and the watchdog hears how the channel did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Protocol

from monitor_manager.channels.base import Channel, ChannelError, PartlySent
from monitor_manager.clock import Clock
from monitor_manager.cluster.ha import (
    ANNOUNCE_LOG_KEY,
    DIGEST_LOG_KEY,
    MAX_CALLS,
    REPORT_LOG_KEY,
    Entry,
    HighAvailability,
)
from monitor_manager.cluster.legacy_keys import content_hash_v1, log_key_v1
from monitor_manager.config import DeliveryConfig
from monitor_manager.deliver.decide import Attempted, Outcome, Transition, decide
from monitor_manager.metrics import Metrics
from monitor_manager.models import GroupView, Message
from monitor_manager.store import Op, Store, StoreError, deliveries
from monitor_manager.store.deliveries import SUPERSEDED, Delivery
from monitor_manager.store.notifications import content_hash
from monitor_manager.store.writer import probe_op

log = logging.getLogger(__name__)

MAX_MERGE = 50  # messages merged into one send for a rate-limited channel
BATCH = 200  # rows looked at per poll
SWEEP_SECONDS = 60.0  # how often rows left `sending` with nothing in flight are looked for
# Passes run at least every second: a longer gap means this instance did not run (stopped,
# suspended, starved), and peers' pushes to it failed meanwhile.
PAUSED_AFTER = 10.0

Batch = list[Delivery]  # rows sent as one message (several, merged, for a rate-limited channel)


def log_key(d: Delivery) -> str | None:
    """A row's key in the notification log: its alert group, or one key for the contact
    group's digests (equal digests from two instances are the same message), or one for its
    daily reports (a report's content hash names its period)."""
    if d.message.extra.get("announce"):
        return None  # told by the instance where it happened only: nothing to compare
    if d.group_key:
        return d.group_key
    return _LOG_KEYS.get(d.message.kind)


_LOG_KEYS = {"digest": DIGEST_LOG_KEY, "report": REPORT_LOG_KEY}


def counted_key(d: Delivery) -> str | None:
    """The key a sent row is logged under: its log key, or for an announcement one that
    peers compare with nothing but count in the platforms' rate limits (WeCom drops what
    goes beyond 30 a minute to a member, whichever instance sends it)."""
    if d.message.extra.get("announce"):
        return ANNOUNCE_LOG_KEY
    return log_key(d)


def log_entry(d: Delivery, sent_at: float, instance: str) -> Entry:
    """A row's notification log entry, in both release-2 and release-1 words (a report or an
    announcement has none in release 1's: release 1 sends neither)."""
    key = counted_key(d) or ""
    legacy = key not in (REPORT_LOG_KEY, ANNOUNCE_LOG_KEY)
    return Entry(
        d.message.contact_group,
        key,
        d.channel,
        d.content_hash,
        sent_at,
        instance,
        log_key_v1(d.message, key) if legacy else "",
        content_hash_v1(d.message) if legacy else "",
    )


def group_entries(d: Delivery, sent_at: float, instance: str) -> list[Entry]:
    """For a digest: one entry per alert group it names, as that group's own message would be
    logged (the same content hash), so that what a peer says about a group, in a group
    message or in its own digest, is compared group by group."""
    if d.message.kind != "digest" or d.group_key:
        return []
    out = []
    for group in d.message.groups:
        single = dataclasses.replace(d.message, kind="group", groups=(group,))
        out.append(
            Entry(
                d.message.contact_group,
                group.key,
                d.channel,
                content_hash(single),
                sent_at,
                instance,
                log_key_v1(single, group.key),
                content_hash_v1(single),
            )
        )
    return out


def _digest_of(d: Delivery, groups: tuple[GroupView, ...], note: str) -> Delivery:
    """The digest row `d` naming only `groups`, with a note saying why."""
    message = dataclasses.replace(d.message, groups=groups)
    return dataclasses.replace(
        d,
        message=message,
        content_hash=content_hash(message),
        note="; then ".join(n for n in (d.note, note) if n),
    )


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
        *,
        observer: DeliveryObserver | None = None,
        ha: HighAvailability | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.rng = rng
        self.observer = observer  # the watchdog: DeliveryFailed, ChannelFailing
        self.ha = ha
        self._semaphore = asyncio.Semaphore(max(config.concurrency, 1))
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()
        self._inflight_groups: set[tuple[str, str]] = set()  # (channel, alert group) sending
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._next_sweep = 0.0  # when to look for rows left `sending` with nothing in flight
        self._last_pass: float | None = None
        self._store_failed = False  # seen failing: ask the peers before sending again

    def wake(self) -> None:
        self._wake.set()

    def reconfigure(
        self,
        channels: dict[str, Channel],
        config: DeliveryConfig,
        observer: DeliveryObserver | None,
        ha: HighAvailability | None,
    ) -> None:
        """A reload: the outbox keeps running (and its queue), and what it claims from now on
        goes through these channels and settings; sends in flight finish on the old ones."""
        self.channels = channels
        self.observer = observer
        self.ha = ha
        if config.concurrency != self.config.concurrency:
            self._semaphore = asyncio.Semaphore(max(config.concurrency, 1))
        self.config = config
        self._wake.set()  # a changed channel may take rows its predecessor was holding back

    def sends_in_flight(self) -> set[asyncio.Task[None]]:
        return set(self._tasks)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def recover(self) -> int:
        """Rows left `sending` by a crash are sent again (at least once)."""
        return await self.store.transaction(lambda conn: deliveries.recover(conn, self.clock()))

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

    # -- one pass ----------------------------------------------------------------------------------
    async def dispatch_due(self) -> int:
        """Take every due row through the steps; return how many rows started sending."""
        if self._stopping:
            return 0
        now = self.clock()
        last, self._last_pass = self._last_pass, now
        if last is not None and now - last > PAUSED_AFTER:
            await self._catch_up(f"did not run for {now - last:.0f}s")
        if self._store_failed or not self.store.healthy:
            # While the store failed, peers' pushes to it failed and peers sent in its place:
            # once it commits again, it learns what they sent before sending it again.
            self._store_failed = True
            await self.store.write([probe_op(now)])  # a real commit; StoreError while it fails
            await self._catch_up("the store failed")
            self._store_failed = False
        if now >= self._next_sweep:
            await self._release_stuck(now)
        due = await self.store.run(lambda conn: deliveries.due(conn, now, self._inflight, BATCH))
        ready = await self._defer_rate_limited(self._batches(self._in_order(due)), now)
        if not ready:
            return 0
        claimed = await self._claim(ready, now)
        sending: set[int] = set()
        try:
            for batch in claimed:
                batch = await self._drop_superseded(batch, now)
                batch = await self._drop_sent_by_peers(batch, now)
                if batch:
                    sending.update(d.id for d in batch)
                    self._start_send(batch)
        except StoreError:
            self._next_sweep = 0.0  # rows claimed but not written off: handed back soon
            raise
        finally:
            self._inflight.difference_update(
                d.id for batch in claimed for d in batch if d.id not in sending
            )
        return len(sending)

    async def _catch_up(self, why: str) -> None:
        """After a gap in this instance's own running (or in its store's), and before it sends
        what fell due meanwhile: what the peers sent, as at start-up. Their pushes failed
        meanwhile, so it would resend what they already sent, and count nothing of it in the
        platforms' rate limits."""
        if self.ha is None or not self.ha.enabled:
            return
        log.warning("%s: asking the peers what they sent meanwhile", why)
        await self.store.write(await self.ha.pull())

    def _in_order(self, rows: list[Delivery]) -> list[Delivery]:
        """0. One row per alert group and channel at a time, so that people never get an older
        state after a newer one: after an outage a group's retries are all due at once, and
        sent side by side they arrived in any order. Of a group's due rows, those the newest
        covers (it names every alert they name, in a newer state) wait for it, to be written
        off once it went out (`supersede_older`); any other goes first, the oldest first."""
        keep: list[Delivery] = []
        groups: dict[tuple[str, str], list[Delivery]] = {}
        for row in rows:
            if row.group_key is None:
                keep.append(row)
            elif (row.channel, row.group_key) not in self._inflight_groups:
                groups.setdefault((row.channel, row.group_key), []).append(row)
        for group_rows in groups.values():
            group_rows.sort(key=lambda d: d.notification_id)
            newest = group_rows[-1]
            covered = deliveries.fingerprints(newest.message)
            news = [d for d in group_rows[:-1] if not deliveries.fingerprints(d.message) <= covered]
            keep.append(news[0] if news else newest)
        order = {row.id: i for i, row in enumerate(rows)}
        return sorted(keep, key=lambda d: order[d.id])

    def _batches(self, rows: list[Delivery]) -> list[Batch]:
        """One batch per row, except that a rate-limited channel's rows for one contact group
        go as one merged message (up to MAX_MERGE)."""
        batches: list[Batch] = []
        merging: dict[tuple[str, str], Batch] = {}
        for row in map(_owed_only, rows):
            channel = self.channels.get(row.channel)
            # A report stands alone: merged, it would become a digest of the others.
            mergeable = not row.only_to and row.message.kind != "report"
            if channel is not None and channel.merges_backlog and mergeable:
                key = (row.channel, row.message.contact_group)
                if key not in merging:
                    merging[key] = []
                    batches.append(merging[key])
                if len(merging[key]) < MAX_MERGE:
                    merging[key].append(row)
            else:
                batches.append([row])
        return batches

    async def _defer_rate_limited(self, batches: list[Batch], now: float) -> list[Batch]:
        """1. A channel with no slot now: its rows wait for the slot (still due)."""
        ready: list[Batch] = []
        deferred: list[Op] = []
        for batch in batches:
            channel = self.channels.get(batch[0].channel)
            slot = channel.ready_at(_message_of(batch)) if channel is not None else 0.0
            if slot > now:
                # The peers' sends count in the slot too (Channel.peer_sent): every instance
                # waits for the same slot, so each still waits its position after it, and the
                # first one's send is logged before the next one looks.
                if self.ha is not None:
                    slot += self.ha.send_delay()
                deferred += [deliveries.defer(d.id, slot) for d in batch]
            else:
                ready.append(batch)
        if deferred:
            await self.store.write(deferred)
        return ready

    async def _claim(self, batches: list[Batch], now: float) -> list[Batch]:
        """2. Due rows become `sending`, in one transaction; from then on they are in flight
        until recorded or written off (should that write fail, the sweep hands them back)."""
        ids = [d.id for batch in batches for d in batch]
        claimed = await self.store.transaction(lambda conn: deliveries.claim(conn, ids, now))
        self._inflight.update(claimed)
        kept = [[d for d in batch if d.id in claimed] for batch in batches]
        return [batch for batch in kept if batch]

    async def _drop_superseded(self, batch: Batch, now: float) -> Batch:
        """3. A row that a newer message of its alert group overtook through the channel would
        arrive stale: it is not sent (`deliveries.supersede_older` writes off the ones waiting
        when the newer goes out). Not only retries: a send handed back after its outcome could
        not be recorded (a crash, a store refusing writes) never counted as an attempt, and
        newer states of its group may have gone out meanwhile."""
        grouped = [d for d in batch if d.group_key]
        digests = [d for d in batch if not d.group_key and d.message.kind == "digest"]
        if not grouped and not digests:
            return batch
        newer, overtaken = await self.store.run(
            lambda conn: (
                {d.id: deliveries.superseded_by(conn, d) for d in grouped},
                {d.id: deliveries.overtaken_in_digest(conn, d) for d in digests},
            )
        )
        ops: list[Op] = [deliveries.superseded(d, by, now) for d, by in newer.items() if by]
        keep: Batch = []
        for d in batch:
            if newer.get(d.id):
                continue
            left_out = overtaken.get(d.id)
            if left_out:
                groups = tuple(g for g in d.message.groups if g.key not in left_out)
                if not groups:
                    ops.append(deliveries.overtaken(d.id, now))
                    continue
                d = _digest_of(d, groups, f"{len(left_out)} alert groups left out: {SUPERSEDED}")
            keep.append(d)
        if ops:
            await self.store.write(ops)
        return keep

    async def _drop_sent_by_peers(self, batch: Batch, now: float) -> Batch:
        """4. High availability: a peer already sent this content through this channel."""
        if self.ha is None or not self.ha.enabled:
            return batch
        ops: list[Op] = []
        keep = []
        for d in batch:
            key = log_key(d)
            peer = (
                None
                if key is None
                else self.ha.sent_by_peer(
                    log_entry(d, now, self.ha.instance),
                    d.created_at,
                    newer_supersedes=key == d.group_key,
                )
            )
            if peer is None and key == DIGEST_LOG_KEY:
                d, peer = self._without_groups_peers_told(d, now)
            if peer is None:
                keep.append(d)
            else:
                ops.append(deliveries.sent_by_peer(d.id, peer, now))
        if ops:
            await self.store.write(ops)
        return keep

    def _without_groups_peers_told(self, d: Delivery, now: float) -> tuple[Delivery, str | None]:
        """A storm digest less the alert groups a reachable peer already told: the same
        content, or anything after this digest was decided (ours would be stale). Each instance
        fills its digests from storm windows of its own, so whole digests seldom match while
        most of what they say was sent, in a peer's digest or as a peer's group message.
        (d, None) to send, reduced where peers told some; (d, peer) when they told it all."""
        assert self.ha is not None
        groups = d.message.groups
        keep: list[GroupView] = []
        told: set[str] = set()
        for group, entry in zip(groups, group_entries(d, now, self.ha.instance), strict=True):
            peer = self.ha.sent_by_peer(entry, d.created_at)
            if peer is None:
                keep.append(group)
            else:
                told.add(peer)
        if not told:
            return d, None
        if not keep:
            return d, min(told)
        note = (
            f"{len(groups) - len(keep)} of {len(groups)} alert groups not sent here: "
            f"peer {', '.join(sorted(told))} already sent them"
        )
        return _digest_of(d, tuple(keep), note), None

    def _start_send(self, batch: Batch) -> None:
        """5. The send runs as its own task; the pass goes on."""
        self._inflight_groups.update((d.channel, d.group_key) for d in batch if d.group_key)
        task = asyncio.create_task(self._send(self.channels.get(batch[0].channel), batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_stuck(self, now: float) -> None:
        """Rows `sending` with no send in flight (recording their outcome failed) are due
        again: sent once more rather than never (at least once)."""
        inflight = list(self._inflight)
        released = await self.store.transaction(
            lambda conn: deliveries.release_stuck(conn, now, inflight)
        )
        if released:
            log.warning(
                "%d deliveries were left sending with nothing in flight; sending them again",
                released,
            )
        self._next_sweep = now + SWEEP_SECONDS

    # -- sending and recording ---------------------------------------------------------------------
    async def _send(self, channel: Channel | None, batch: Batch) -> None:
        message = _message_of(batch)
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
            await self._record(batch, outcome, channel.calls(message) if channel else 1)
        finally:
            self._inflight.difference_update(d.id for d in batch)
            self._inflight_groups.difference_update(
                (d.channel, d.group_key) for d in batch if d.group_key
            )
            self._wake.set()  # a row of the same group may have waited for this one

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
                held=exc.held,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel bug: retry, and make it visible
            log.exception("channel %s raised unexpectedly", name)
            # Its text may hold anything (a URL with a token): the log has it, the row does not.
            return Outcome(False, error=f"internal error in channel: {type(exc).__name__}")
        return Outcome(True, note=note or "")

    async def _record(self, batch: Batch, outcome: Outcome, calls: int = 1) -> None:
        """6. The outcome, as each row's transition; the log of what went out (with the
        requests the send made per recipient); the watchdog."""
        now = self.clock()
        reached = outcome.delivered or bool(outcome.only_to)  # someone has the message now
        sent: list[Entry] = []
        ops: list[Op] = []
        if reached and self.ha is not None and self.ha.enabled:
            sent = [log_entry(d, now, self.ha.instance) for d in batch if counted_key(d)]
            sent += [e for d in batch for e in group_entries(d, now, self.ha.instance)]
            sent = [dataclasses.replace(e, calls=max(1, min(calls, MAX_CALLS))) for e in sent]
            ops += self.ha.record(sent)
        transitions: list[tuple[Delivery, Transition]] = []
        for d in batch:
            if reached and d.group_key:
                ops.append(deliveries.supersede_older(d, now))
            t = decide(
                Attempted(d.attempts, d.created_at, d.note, d.only_to),
                outcome,
                now,
                self.config,
                self.rng(),
            )
            ops.append(deliveries.record(d.id, t, now))
            transitions.append((d, t))
        try:
            await self.store.write(ops)
        except StoreError:
            # The rows stay `sending`; the next sweep sends them again (at least once).
            log.error("could not record delivery outcome for %s", [d.id for d in batch])
            self._next_sweep = 0.0
            return
        self._observe(batch[0].channel, outcome, transitions, reached, now)
        if sent and self.ha is not None:
            await self.ha.push(sent)
        if not outcome.delivered:
            self._wake.set()

    def _observe(
        self,
        channel: str,
        outcome: Outcome,
        transitions: list[tuple[Delivery, Transition]],
        reached: bool,
        now: float,
    ) -> None:
        failed = [d for d, t in transitions if t.result == "failed"]
        for d, t in transitions:
            self.metrics.notifications.labels(d.channel, t.result).inc()
            if outcome.delivered:
                self.metrics.delivery_latency.labels(d.channel).observe(max(now - d.created_at, 0))
        for d in failed:
            log.warning("delivery %s via %s failed for good: %s", d.id, d.channel, outcome.error)
        if self.observer is None:
            return
        if reached:
            self.observer.delivered(channel)
        if failed:
            self.observer.failed(channel, outcome.error, now)
        elif outcome.held:
            # Held back by this instance's own count of the platform's limit (the peers' sends
            # fill it too): the platform was not called. Counted as failing, a storm's backlog
            # paged ChannelFailing for a channel that worked (fault campaign).
            pass
        elif not reached and not (transitions[0][0].only_to and outcome.recipients_refused):
            # A recipient deferred again while the others have the message says nothing
            # about the channel.
            self.observer.retrying(channel, outcome.error, now)

    async def _until_next_due(self) -> float:
        at = await self.store.run(deliveries.next_due)
        return 1.0 if at is None else min(max(at - self.clock(), 0.0), 1.0)

    async def gauges(self) -> tuple[int, float]:
        """(rows waiting to be delivered, age in seconds of the oldest one)."""
        count, oldest = await self.store.run(deliveries.backlog)
        age = max(self.clock() - oldest, 0.0) if oldest is not None else 0.0
        self.metrics.outbox_pending.set(count)
        self.metrics.outbox_oldest.set(age)
        return count, age


def _message_of(batch: Batch) -> Message:
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


def _owed_only(delivery: Delivery) -> Delivery:
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
