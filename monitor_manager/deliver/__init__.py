"""Delivery: the durable outbox, the message templates, the parts log of split messages."""
