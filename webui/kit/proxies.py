"""The client's own address behind a reverse proxy, believed only from the proxies an administrator named.

    app.wsgi_app = TrustedProxies(app.wsgi_app, ("127.0.0.1", "10.0.0.0/8"))

A TLS-terminating proxy makes every request come from its own address, so the
log-in delays (per user name and address) and the audit trail would see one
client. ``X-Forwarded-For`` names the real one, but anybody can send that
header: it is honoured only when the request arrives from a trusted proxy, and
then read from the right, hop by hop, while the hops are trusted proxies too.
The first address that is not one is the client (a forged left part of the
header is never reached). With no trusted proxy (the default) nothing changes.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable


class TrustedProxies:
    """WSGI middleware setting ``REMOTE_ADDR`` to the client behind trusted proxies (the proxy's own address
    is kept in ``environ["allscope.proxy_addr"]``)."""

    def __init__(self, app, trusted: Iterable[str]):
        self.app = app
        self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in trusted)

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def client(self, remote: str, forwarded: str) -> str:
        client = remote
        for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
            if not self.trusted(client):
                break
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage in the header: the last trusted hop is as far as we can see
            client = hop
        return client

    def __call__(self, environ, start_response):
        remote = environ.get("REMOTE_ADDR", "")
        if self.networks and self.trusted(remote):
            environ["allscope.proxy_addr"] = remote
            environ["REMOTE_ADDR"] = self.client(remote, environ.get("HTTP_X_FORWARDED_FOR", ""))
        return self.app(environ, start_response)
