"""Where the console's pages are: the one place that builds their paths.

`group_path(key)` is the page of one alert group, the target of the "open in Monitor Manager"
link of every message: `f"{external_url}{group_path(key)}"`.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from monitor_manager.links import group_path

__all__ = ["group_path"]  # the message link builds on the same path

GROUP_KEY = r"[A-Za-z0-9_-]{1,128}"  # hex digests, and StoreFailing's fixed name
_GROUP_KEY = re.compile(GROUP_KEY)

OVERVIEW = "/"
NOTIFICATIONS = "/notifications"
WATCHDOG = "/watchdog"
CONTACT_GROUPS = "/contact-groups"
ROUTE_TEST = "/contact-groups/route-test"
SILENCES = "/silences"
NEW_SILENCE = "/silences/new"
ACK = "/ack"  # + "/{token}": the signed acknowledge link of a message
LOGIN = "/login"
LOGOUT = "/logout"
STATIC = "/static/console"


def ack_path(token: str) -> str:
    return f"{ACK}/{quote(token, safe='.')}"


def silence_anchor(silence_id: str) -> str:
    """The id of a silence's row on the silences page (ids are uuids; anything else is made
    safe for an HTML id and a URL fragment)."""
    return "s-" + re.sub(r"[^A-Za-z0-9_-]", "_", silence_id)


def expire_path(silence_id: str) -> str:
    return f"{SILENCES}/{quote(silence_id, safe='')}/expire"


def is_group_key(text: str) -> bool:
    return _GROUP_KEY.fullmatch(text) is not None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site (`//evil`,
    `/\\evil`, `https://evil` all become the overview)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x21 for c in target)
        or len(target) > 2048
    ):
        return OVERVIEW
    return target
