"""When a revocation takes effect, and the one step that makes it take effect on a live connection.

Mosquitto checks the CRL only during the TLS handshake: a reload (SIGHUP) rebuilds the listener's TLS
context, so new connections of a revoked device are refused, but its open connection stays as it is, and
nothing in stock mosquitto (without the dynamic-security plugin, which the certificate-only set-up does not
use) disconnects one client on demand.
So a revocation takes effect in two steps:

1. at once, on the central: every envelope of the device is refused and counted (the receivers check the
   device's state on each message);
2. at the broker's next **restart**: every connection is closed, and the revoked device's reconnection is
   refused by the CRL. ``[central] broker_restart_command`` (e.g. ``systemctl restart mosquitto``, or
   ``sudo -n systemctl restart mosquitto`` for an unprivileged admin UI) lets ``allscope central revoke
   --restart-broker`` and the admin UI's revoke page do it right away. Devices and receivers reconnect on
   their own back-off; sessions and queued messages survive the restart (persistence).
"""

from __future__ import annotations

import shlex
import subprocess

from device.errors import AllscopeError

DEFAULT_RESTART = "systemctl restart mosquitto"
REFUSED_NOW = "its envelopes are refused by the receivers from now on"


def pending_line(device_id: str, command: str = "") -> str:
    """What is still to do after a revocation without a restart (one line)."""
    return (f"{device_id} stays connected to the broker until the broker restarts (a reload refuses only its new "
            f"connections): "
            f"run `{command or DEFAULT_RESTART}`; from then on the broker refuses its certificate")


def done_line(device_id: str) -> str:
    return f"the broker was restarted: {device_id}'s connection is closed and its certificate refused from now on"


def restart_broker(command: str, timeout_s: float = 120.0) -> None:
    """Run the configured restart command; an AllscopeError (one line) when it fails or is not configured."""
    if not command.strip():
        raise AllscopeError("no broker restart command is configured ([central] broker_restart_command)")
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout_s,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        raise AllscopeError(f"could not restart the broker with `{command}`: {error}") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1][:300]
        raise AllscopeError(f"`{command}` failed (exit {result.returncode}): {last}")
