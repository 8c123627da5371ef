"""Who asks for a change: the user's name and where the request came from, for the audit trail.

The services take an ``Actor`` explicitly; the web layer builds one from the
logged-in user and the request (``webui/kit/runtime.py``), the CLI from its
own name. No service reads a web framework's globals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    username: str
    address: str = ""

    def audit_fields(self) -> dict[str, str]:
        """The keyword arguments of ``device.store.records.audit`` naming this actor."""
        return {"username": self.username, "address": self.address}
