"""The sync benchmark's tools (``sync/bench/run.py``): child processes, a wire observer, envelope costs,
and the bench-only agent that can send without envelope encryption.

``python -m sync.bench.probes agent --data-dir D --plaintext`` is how the encryption-off run starts
its agent: the same ``SyncAgent`` as ``allscope sync run`` with only its sealer swapped for one that
seals with ``server_public=None``. It is kept out of the product's CLI on purpose: a device must never
be able to send plaintext by a setting.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from device.errors import AllscopeError

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- processes -----------------------------------------------------------------------------------------

class Process:
    """A child process with its output collected on a thread (a full pipe must never block it)."""

    def __init__(self, args: list[str], log_path: Path, prefix: list[str] = ()):
        """``python args...``; ``prefix`` goes before it (e.g. ``ip netns exec NS`` for the thin link)."""
        self.lines: list[str] = []
        self.log_path = log_path
        self.proc = subprocess.Popen([*prefix, sys.executable, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                if any(text in line for line in self.lines):
                    return
                raise AllscopeError(f"{self.describe()} did not say {text!r}: {self.tail()}")
            time.sleep(0.05)

    def describe(self) -> str:
        args = self.proc.args
        start = args.index(sys.executable) + 1 if sys.executable in args else 1
        return " ".join(args[start:start + 3])

    def tail(self, n: int = 3) -> str:
        return " | ".join(self.lines[-n:]) or "(no output)"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (both the agent and the central stop cleanly on it), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(5)
        return self.proc.returncode


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise AllscopeError(f"allscope {' '.join(args[:2])} failed: {(result.stderr or result.stdout).strip()[-300:]}")
    return result.stdout


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class WireObserver:
    """A second subscriber with the central's certificate on one device's ``up`` topic (not the shared
    subscription, so it takes nothing away from the receiver): what the broker can read of the envelopes."""

    def __init__(self, broker, pki, device_id: str):
        import paho.mqtt.client as mqtt

        from sync.wire import topics

        self.payloads: list[bytes] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-observer-{device_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.cert_path("central")),
                            keyfile=str(pki.key_path("central")))
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topics.up(device_id), qos=0)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, message: self.payloads.append(message.payload)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(20):
            self.stop()
            raise AllscopeError("the wire observer could not subscribe to the broker")

    def stop(self) -> dict:
        self.client.disconnect()
        self.client.loop_stop()
        encs: dict[str, int] = {}
        readable = 0
        for payload in self.payloads:  # readable: the patient identifier in the message or its decoded ct
            fields = json.loads(payload)
            encs[str(fields.get("enc"))] = encs.get(str(fields.get("enc")), 0) + 1
            readable += b"BENCH-" in payload or b"BENCH-" in base64.b64decode(fields.get("ct", ""))
        return {"observed": len(self.payloads), "enc": encs, "identifiers_readable": readable}


def envelope_costs(payload: bytes, repeats: int = 500) -> dict:
    """Microseconds to seal and to open (parse + verify + decrypt) one record envelope, in process."""
    from sync.wire import envelope as env_mod
    from sync.wire import keys

    signing, server = keys.generate_ed25519(), keys.generate_x25519()
    costs = {}
    for encrypt in (True, False):
        public = server.public_key() if encrypt else None
        sealed, started = [], time.perf_counter()
        for index in range(repeats):
            sealed.append(env_mod.seal(payload, kind="record", device_id="bench-seal", record=f"patient:{index + 1}",
                                       version=1, entry=index + 1, created="2026-01-01T00:00:00.000Z",
                                       signing_key=signing, server_public=public))
        seal_us = (time.perf_counter() - started) / repeats * 1e6
        started = time.perf_counter()
        for data in sealed:
            envelope = env_mod.parse(data)
            env_mod.verify(envelope, signing.public_key())
            env_mod.decrypt(envelope, server)
        open_us = (time.perf_counter() - started) / repeats * 1e6
        costs["encrypted" if encrypt else "plaintext"] = {"seal_us": round(seal_us, 1), "open_us": round(open_us, 1),
                                      "envelope_bytes": len(sealed[0]), "payload_bytes": len(payload)}
    return costs


# --- the encryption-off agent (bench only) --------------------------------------------------------------

def agent_main(argv: list[str]) -> int:
    """``python -m sync.bench.probes agent --data-dir D [--plaintext]``: ``allscope sync run`` for the bench.

    The same SyncAgent as ``allscope sync run``; with ``--plaintext`` its sealer seals with
    ``server_public=None`` (enc "none"), which only a central started with ``--allow-plaintext``
    accepts. Kept out of the product's CLI on purpose: a device must never be able to send plaintext.
    """
    import argparse
    import logging

    from sync.agent.config import load_config
    from sync.agent.service import SyncAgent

    parser = argparse.ArgumentParser(prog="python -m sync.bench.probes agent")
    parser.add_argument("command", choices=["agent"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--plaintext", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    agent = SyncAgent(load_config(args.data_dir))
    if args.plaintext:
        agent.sealer = dataclasses.replace(agent.sealer, server_public=None)
    agent.install_signal_handlers()
    print(f"bench agent: {agent.config.device_id} ({'plaintext' if args.plaintext else 'encrypted'})", flush=True)
    return agent.run()


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1:]))


def wait_for_progress(read_state, done, processes: list[Process], stalled, stall_s: float,
                      interval: float = 0.05) -> None:
    """Poll ``read_state()`` until ``done(state)``; one line if a process dies or the state stops changing.

    ``stalled(state)`` says, for the message, where it stood after ``stall_s`` seconds without change.
    """
    last, since = None, time.monotonic()
    while True:
        state = read_state()
        if done(state):
            return
        for process in processes:
            if process.proc.poll() is not None:
                raise AllscopeError(f"{process.describe()} exited ({process.proc.returncode}): {process.tail()}")
        if state != last:
            last, since = state, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise AllscopeError(f"no progress for {stall_s:.0f} s ({stalled(state)})")
        time.sleep(interval)
