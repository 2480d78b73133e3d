"""The row text of labels and annotations: byte for byte what json.dumps gives (the store and
every reader of it keep their meaning), built faster."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from monitor_manager.converge.alerts import to_json

# Every character payload.py lets into a label or annotation: any Unicode but lone surrogates
# (refused at the body), quotes, backslashes, controls, line separators, CJK.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(st.dictionaries(TEXT, TEXT, max_size=12))
def test_to_json_is_json_dumps_for_every_label_map(mapping: dict[str, str]) -> None:
    assert to_json(mapping) == json.dumps(mapping, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(to_json(mapping)) == mapping


def test_to_json_of_the_awkward_ones() -> None:
    for mapping in ({}, {"": ""}, {"a": '"\\\n\x00\x1f\u2028中文'}, {"k\u00ff": "v\U0001f600"}):
        assert to_json(mapping) == json.dumps(mapping, ensure_ascii=False, separators=(",", ":"))
