"""`explain`: which contact groups and channels labels reach, and which route matched; always
the same answer as the router the pipeline uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builders import groups, make_config, routes
from monitor_manager.config import ChannelConfig, Config
from monitor_manager.converge.routing import RouteMatch, Router, explain

CONFIG = make_config(
    channels=(
        ChannelConfig("console", "console", None),
        ChannelConfig("mail", "email", None),
    ),
    contact_groups=(
        *groups("sre", channels=("mail", "console")),
        *groups("dba", channels=("mail",)),
        *groups("web"),
    ),
    routing={"default_groups": ("sre",)},
    routes=routes(
        {
            "match": {"team": "db"},
            "match_re": {"severity": "critical|page"},
            "groups": ("dba",),
            "continue_": True,
        },
        {"match_re": {"severity": "critical|page"}, "groups": ("sre", "dba")},
        {"match": {"team": "web"}, "groups": ("web",)},
    ),
)

CASES = {
    "nothing matches: the default groups": (
        {"alertname": "A"},
        [RouteMatch("sre", ("mail", "console"), "default")],
    ),
    "continue = true goes on; a group named twice counts once, for its first route": (
        {"team": "db", "severity": "critical"},
        [RouteMatch("dba", ("mail",), 0), RouteMatch("sre", ("mail", "console"), 1)],
    ),
    "the first match without continue stops": (
        {"team": "web", "severity": "page"},
        [RouteMatch("sre", ("mail", "console"), 1), RouteMatch("dba", ("mail",), 1)],
    ),
    "a regex is anchored": (
        {"team": "web", "severity": "critical!"},
        [RouteMatch("web", ("console",), 2)],
    ),
}


@pytest.mark.parametrize("labels, expected", CASES.values(), ids=CASES.keys())
def test_explain_names_groups_channels_and_the_route(
    labels: dict[str, str], expected: list[RouteMatch]
) -> None:
    assert explain(CONFIG, labels) == expected


def _agree(config: Config, labels: dict[str, str]) -> None:
    assert [m.name for m in explain(config, labels)] == Router(config).route(labels)


@given(
    st.dictionaries(
        st.sampled_from(["team", "severity", "alertname"]),
        st.sampled_from(["db", "web", "critical", "page", "warning", ""]),
    )
)
def test_explain_agrees_with_the_router(labels: dict[str, str]) -> None:
    _agree(CONFIG, labels)
