"""Watching the watchers: heartbeats, peer probes, and the internal alerts they raise."""
