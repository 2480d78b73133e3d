"""Ingest: a webhook payload validated, then screened for alert-level oddities."""
