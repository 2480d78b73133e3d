"""Ingest, step one for Grafana Alerting: validate its webhook contact point's payload.

The payload follows Grafana's documentation, "Configure webhook notifications", section "JSON
payload" (https://grafana.com/docs/grafana/latest/alerting/configure-notifications/
manage-contact-points/integrations/webhook-notifier/, the same for Grafana 11.5 to 12; source:
grafana/grafana docs/sources/alerting/configure-notifications/manage-contact-points/
integrations/webhook-notifier.md), and Grafana's `ExtendedAlert` that writes it
(grafana/alerting, templates/template_data.go), which also sends `valueString`. It is
Alertmanager's payload with `"version": "1"` and more fields, so `payload.parse_envelope` reads
it: the same rules, field paths, limits and screening as the Alertmanager webhook. Here is only
what Grafana adds:

- per alert, `dashboardURL`, `panelURL`, `silenceURL` and `imageURL` become the alert's links
  (`Extras.links`: "dashboard", "panel", "silence", "image"). Each must be a string or absent
  (null counts as absent; a number is a 400 naming e.g. `alerts[2].panelURL`). Grafana sends
  "" when an alert has no dashboard. A link is kept only when it is an absolute http(s) URL
  of at most MAX_LINK_CHARS without whitespace or control characters; anything else
  (`javascript:`, a relative path, a URL cut short) is dropped, not refused: an odd link must
  not cost the alert its page (a 400 would refuse every alert of the notification).
- per alert, `valueString` (`[ var='B' labels={...} value=44.2 ]`) becomes `Extras.value`,
  cut at MAX_EXTRA_VALUE_CHARS. `values` (numbers by query) says the same without labels and
  is not kept.
- `truncatedAlerts`: how many alerts the contact point's "Max Alerts" left out of this
  notification; a whole number or absent. The handler logs it: those alerts never arrive.
- ignored: `orgId`, `title`, `state` and `message` (Grafana's own rendering; messages here are
  built from the alerts), each alert's `fingerprint` (identity is the label set, Grafana's
  `grafana_folder` label included, so one rule seen by two Grafana instances is one alert),
  `groupLabels`, `commonLabels`, `commonAnnotations`, and any field Grafana adds later.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Any

from monitor_manager.ingest.payload import (
    MAX_EXTRA_VALUE_CHARS,
    Extras,
    Payload,
    PayloadError,
    kind,
    optional_str,
    parse_envelope,
)

VERSION = "1"
LINK_FIELDS = (
    ("dashboardURL", "dashboard"),
    ("panelURL", "panel"),
    ("silenceURL", "silence"),
    ("imageURL", "image"),
)
"""Grafana's per-alert URL fields and the names of the links they become."""
MAX_LINK_CHARS = 4096  # a silenceURL carries every label as a matcher: longer than most
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def parse_grafana(data: Any) -> Payload:
    """A decoded Grafana Alerting webhook body as a Payload, or PayloadError naming the
    offending field."""
    if isinstance(data, dict) and data.get("version") == "4":
        raise PayloadError(
            'version "4" is Alertmanager\'s webhook payload: point Alertmanager at '
            '/webhook/alertmanager; this endpoint takes Grafana Alerting\'s (version "1")',
            "version",
        )
    payload = parse_envelope(data, VERSION, read_extras)
    truncated = data.get("truncatedAlerts")  # a dict: parse_envelope checked
    if truncated is None:
        return payload
    if type(truncated) is not int or truncated < 0:
        raise PayloadError(
            f"expected a whole number of alerts, got {kind(truncated)}", "truncatedAlerts"
        )
    return dataclasses.replace(payload, truncated_alerts=truncated)


def read_extras(raw: dict[str, Any], i: int) -> Extras:
    """What Grafana adds to the alert at index `i`: its links and value string."""
    extras = Extras()
    links = {}
    for key, name in LINK_FIELDS:
        url = safe_link(optional_str(raw, key, f"alerts[{i}].{key}"))
        if url:
            links[name] = url
    if links:
        extras["links"] = links
    value = optional_str(raw, "valueString", f"alerts[{i}].valueString")
    if len(value) > MAX_EXTRA_VALUE_CHARS:
        value = value[: MAX_EXTRA_VALUE_CHARS - 1] + "…"
    if value:
        extras["value"] = value
    return extras


def safe_link(url: str) -> str:
    """`url` when it is an absolute http(s) URL fit to be a link anywhere (a mail's href, a
    chat's markdown, a console page), else ""."""
    if not url or len(url) > MAX_LINK_CHARS or _UNSAFE.search(url):
        return ""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return url
