"""Across instances: the shared notification log, the peer protocol, release 1's keys."""
