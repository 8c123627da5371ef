"""A thin link for the sync benchmarks and tests: the device in its own network namespace behind a slow veth.

    link = ThinLink(rate="256kbit").start()
    agent = subprocess.Popen([*link.prefix, sys.executable, "-m", "device.cli", "sync", "run", ...])
    link.down(); ...; link.up()
    link.stop()

The device (the sync agent) runs in a network namespace of its own; a veth pair joins it
to this host, whose end has the address the broker listens on (``host_ip``). Each end has
a ``tbf`` qdisc at ``rate`` (netem is not available on these machines; tbf needs nothing
else), so both directions of the device's link are shaped, and only those: the broker and
the central talk over the host as they would in a data centre. :meth:`down` takes the
device's end down (the host keeps its address, so the central's own connection to the
broker stays up) until :meth:`up`. Byte counters are the host end's: what crossed the
device's link, TLS, TCP and IP included.

Needs root and iproute2 (``ip``, ``tc``): :func:`unavailable` says why not in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from device.errors import AllscopeError


def unavailable() -> str | None:
    """Why a thin link cannot be made here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "needs root (a network namespace and a tc qdisc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (Debian: apt-get install iproute2)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class ThinLink:
    def __init__(self, rate: str = "256kbit", tag: str | None = None):
        tag = tag or str(os.getpid() % 100_000)
        self.rate = rate
        self.namespace = f"allscope-thin-{tag}"
        self.host_if = f"asth{tag}"[:15]
        self.device_if = "asdev0"
        third = os.getpid() % 250 + 1
        self.host_ip, self.device_ip = f"10.213.{third}.1", f"10.213.{third}.2"
        self.started = False

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it on the device's side of the link."""
        return [_tool("ip"), "netns", "exec", self.namespace]

    def _run(self, *args: str, check: bool = True) -> None:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AllscopeError(f"{' '.join(args[:4])}: {(result.stderr or result.stdout).strip()[-200:]}")

    def start(self) -> "ThinLink":
        ip, tc = _tool("ip"), _tool("tc")
        shaping = ["root", "tbf", "rate", self.rate, "burst", "16kb", "latency", "400ms"]
        try:
            self._run(ip, "netns", "add", self.namespace)
            self.started = True
            self._run(ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.device_if,
                      "netns", self.namespace)
            self._run(ip, "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            self._run(ip, "link", "set", self.host_if, "up")
            self._run(ip, "-n", self.namespace, "addr", "add", f"{self.device_ip}/30", "dev", self.device_if)
            self._run(ip, "-n", self.namespace, "link", "set", self.device_if, "up")
            self._run(ip, "-n", self.namespace, "link", "set", "lo", "up")
            self._run(tc, "qdisc", "add", "dev", self.host_if, *shaping)
            self._run(ip, "netns", "exec", self.namespace, tc, "qdisc", "add", "dev", self.device_if, *shaping)
        except BaseException:
            self.stop()
            raise
        return self

    def down(self) -> None:
        self._run(_tool("ip"), "-n", self.namespace, "link", "set", self.device_if, "down")

    def up(self) -> None:
        self._run(_tool("ip"), "-n", self.namespace, "link", "set", self.device_if, "up")

    def bytes(self) -> int:
        """Bytes that crossed the device's link so far, both directions."""
        stats = Path("/sys/class/net") / self.host_if / "statistics"
        return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())

    def stop(self) -> None:
        if not self.started:
            return
        self._run(_tool("ip"), "link", "del", self.host_if, check=False)  # takes its peer with it
        self._run(_tool("ip"), "netns", "del", self.namespace, check=False)
        self.started = False

    def __enter__(self) -> "ThinLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
