"""Where a message's links lead: the console's page of an alert group.

A leaf module (messages are built far from the web layer): `f"{external_url}{group_path(key)}"`
is the "open in Monitor Manager" link of every message.
"""

from __future__ import annotations

from urllib.parse import quote


def group_path(key: str) -> str:
    """The alert group's page, e.g. `/groups/3f2a9c0d1e4b5a69`."""
    return f"/groups/{quote(key, safe='')}"
