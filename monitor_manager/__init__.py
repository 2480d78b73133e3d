"""Monitor Manager: the last link between an outage and a human being."""

__version__ = "0.1.0"
