"""The listener's certificate, renewed by a reload without a restart."""

from __future__ import annotations

import ssl

from monitor_manager.config import ServerConfig, server_ssl_context


class ListenerTLS:
    """`context` is what the HTTPS listener holds for its life. `renew` hands it a context
    read anew from the files, and from then on every new handshake is moved onto that one in
    the server-name callback (OpenSSL runs it for every ClientHello, with or without SNI:
    clients that dial an IP address send none); connections already open keep the
    certificate they were made with.

    A whole context is swapped rather than load_cert_chain run on the live one: what is
    served is then exactly what the reload checked, and a file replaced halfway (a renewal
    writing the certificate, then the key) cannot leave the listener with a certificate and
    no matching key."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._current = context
        context.sni_callback = self._pick

    @classmethod
    def from_config(cls, server: ServerConfig) -> ListenerTLS | None:
        """None when the listener speaks plain http; TLSFileError when the files are bad."""
        context = server_ssl_context(server)
        return cls(context) if context is not None else None

    def renew(self, context: ssl.SSLContext) -> None:
        self._current = context

    def _pick(self, conn: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._current is not context:
            conn.context = self._current
