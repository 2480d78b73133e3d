"""Converging alerts: dedup and grouping, routing, storm control, silences and maintenance
windows."""
