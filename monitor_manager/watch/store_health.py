"""StoreFailing: the one internal alert that cannot take the usual road.

When the store refuses writes nothing can enter the outbox, so after `store_failing_after` the
page goes straight to the watchdog groups' channels, once per episode, best effort. Its
resolution, once a real commit succeeds again, goes through the outbox like any message.
StoreFailing is never an alert row (it could not be stored when it fired): it is this object's
state, and nothing else decides about it.
"""

from __future__ import annotations

from monitor_manager.clock import format_time
from monitor_manager.config import Config
from monitor_manager.ingest.payload import IncomingAlert
from monitor_manager.watch.watchdog import TEXTS, internal_alert

STORE_FAILING = "StoreFailing"


class StoreHealth:
    def __init__(self, config: Config) -> None:
        self.after = config.watchdog.store_failing_after
        self.labels = {"instance": config.server.instance}
        self.texts = TEXTS[config.templates.language]
        self.zone = config.templates.zone
        self.failing_since: float | None = None
        self.error = ""
        self._paged_since: float | None = None  # the episode whose page went out

    def adopt(self, previous: StoreHealth) -> None:
        """A reload: an episode of refused writes goes on (paged once, resolved once)."""
        self.failing_since = previous.failing_since
        self.error = previous.error
        self._paged_since = previous._paged_since

    def failed(self, reason: str, now: float) -> None:
        """A commit failed (`reason` is a fixed phrase, store.failure_reason)."""
        if self.failing_since is None:
            self.failing_since = now
        self.error = reason

    def page(self, now: float) -> IncomingAlert | None:
        """The page, once per episode, when the store has refused writes long enough."""
        since = self.failing_since
        if since is None or self._paged_since is not None or now - since < self.after:
            return None
        self._paged_since = since
        return internal_alert(
            STORE_FAILING,
            "firing",
            self.labels,
            self.texts["store_summary"],
            self.texts["store_description"].format(
                since=format_time(since, self.zone), error=self.error
            ),
            since,
        )

    def recovered(self, now: float) -> IncomingAlert | None:
        """A real commit succeeded: the episode ends; its resolution, if it was paged."""
        paged, self._paged_since = self._paged_since, None
        self.failing_since = None
        if paged is None:
            return None
        return internal_alert(
            STORE_FAILING, "resolved", self.labels, self.texts["store_summary"], "", paged, now
        )
