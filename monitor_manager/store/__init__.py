"""Durable state on SQLite: the writer with group commit (`writer`), the schema as numbered
migrations (`migrations`), and the statements that record the pipeline's decisions."""

from monitor_manager.store.migrations import migrations
from monitor_manager.store.writer import (
    Op,
    Statement,
    Store,
    StoreError,
    failure_reason,
    probe_op,
)

__all__ = ["Op", "Statement", "Store", "StoreError", "failure_reason", "migrations", "probe_op"]
