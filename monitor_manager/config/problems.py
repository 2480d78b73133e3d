"""Collecting configuration problems, each named by its key path (`routes[0].groups`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_T = TypeVar("_T")


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self._reported: list[str] = []

    def add(self, path: str, text: str) -> None:
        self.items.append(f"{path or '(top level)'}: {text}")
        self._reported.append(path)

    def check(self, path: str, text: str) -> None:
        """A cross-check problem. Dropped where conversion already reported the value: its
        default stood in, and judging the default would only confuse."""
        if not self.reported(path):
            self.items.append(f"{path}: {text}")

    def reported(self, path: str) -> bool:
        """True when `path` or a table or array containing it had a conversion problem."""
        return any(path == bad or path.startswith((bad + ".", bad + "[")) for bad in self._reported)


def join_path(path: str, key: str) -> str:
    shown = key if CHANNEL_NAME.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def valid_items(items: Iterable[Any], cls: type[_T]) -> Iterator[tuple[int, _T]]:
    """(index, item) for the items that converted; placeholders of failed tables are skipped."""
    return ((i, item) for i, item in enumerate(items) if isinstance(item, cls))
