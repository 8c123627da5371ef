"""The allscope mosquitto broker: rendering its configuration, and running one (tests, the sync bench).

The configuration lives in ``firmware_config/mosquitto/`` (``allscope.conf.template`` and ``acl``);
:func:`render_config` fills in the paths of a fleet PKI. :class:`Broker` runs mosquitto in the
foreground on a loopback port and knows it is ready only when a real mutual-TLS handshake with
the central certificate succeeds (the port being open is not enough).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import ssl
import string
import subprocess
import time
from pathlib import Path

from device.errors import AllscopeError
from device.resources import MOSQUITTO_DIR as CONFIG_DIR
from device.store.atomic import write_atomic
from sync.fleet.pki import Pki

TEMPLATE = CONFIG_DIR / "allscope.conf.template"
ACL = CONFIG_DIR / "acl"
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


def render_config(pki: Pki, *, port: int = 8883, persistence_dir: str | os.PathLike, bind: str = "",
                  acl_file: str | os.PathLike | None = None, user: str | None = None) -> str:
    """mosquitto.conf for a PKI; ``bind`` "" listens on every interface, ``user`` defaults to the current one.

    Paths must not contain spaces (mosquitto's configuration syntax has no quoting).
    """
    values = {
        "listen": f"{int(port)} {bind}" if bind else str(int(port)), "user": user or getpass.getuser(),
        "persistence_dir": str(Path(persistence_dir).resolve()),
        "acl_file": str(Path(acl_file or ACL).resolve()),
        "ca_file": str(pki.ca_cert.resolve()), "cert_file": str(pki.cert_path("broker").resolve()),
        "key_file": str(pki.key_path("broker").resolve()), "crl_file": str(pki.crl.resolve()),
    }
    spaced = [name for name, value in values.items() if " " in value and name.endswith(("_file", "_dir"))]
    if spaced:
        raise AllscopeError(f"mosquitto paths cannot contain spaces: {values[spaced[0]]}")
    return string.Template(TEMPLATE.read_text()).substitute(values)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def tls_context(ca_file, cert_file=None, key_file=None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


class Broker:
    """A mosquitto process on ``host:port`` with the allscope configuration; restartable, keeps its data."""

    def __init__(self, pki: Pki, workdir: str | os.PathLike, *, port: int | None = None,
                 host: str = "127.0.0.1", executable: str | None = None):
        self.pki, self.host = pki, host
        self.port = port or free_port(host)
        self.workdir = Path(workdir)
        self.executable = executable or find_mosquitto()
        if not self.executable:
            raise AllscopeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.persistence = self.workdir / "persistence"
        self.config = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Broker":
        self.persistence.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, render_config(self.pki, port=self.port, persistence_dir=self.persistence,
                                                bind=self.host).encode())
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.executable, "-c", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll until a TLS handshake with the central certificate completes (or mosquitto has exited)."""
        context = tls_context(self.pki.ca_cert, self.pki.cert_path("central"), self.pki.key_path("central"))
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AllscopeError(f"mosquitto exited with status {self.process.returncode}: "
                                    f"{self.log_tail(1)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as raw:
                    with context.wrap_socket(raw, server_hostname=self.host):
                        return
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise AllscopeError(f"mosquitto did not accept TLS on {self.host}:{self.port} within "
                                        f"{timeout:.0f} s: {self.log_tail(1)}") from None
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the ACL and the listener's certificate and key (not the CRL: restart)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (mosquitto saves its persistence database on the way out); SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: what a power cut does (messages since the last autosave are lost by the broker)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
