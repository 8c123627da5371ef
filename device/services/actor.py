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


def cli_actor_name() -> str:
    """``cli:<system user>`` for the audit trail of a command: the user behind sudo when there is one.

    $USER alone is unset under systemd, cron and many sudo set-ups (hence "cli:unknown" before issue 16);
    ``getpass.getuser`` falls back to the password database entry of the process's uid.
    """
    import getpass
    import os

    sudo_user = os.environ.get("SUDO_USER", "")
    if sudo_user and os.geteuid() == 0:
        return f"cli:{sudo_user[:64]}"
    try:
        return f"cli:{getpass.getuser()[:64]}"
    except (OSError, KeyError):  # no name for this uid (a container's arbitrary uid)
        return f"cli:uid-{os.getuid()}"
