"""The HTTP side: request bodies read strictly, the webhook and the JSON API."""
