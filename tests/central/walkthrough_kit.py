"""Running the README's central walkthrough for real: its marked blocks, with every path under a temporary root.

The README marks each block of its central walkthrough with ``<!-- walkthrough HOST [OPTIONS] -->`` on the line
before the fence; HOST is ``central`` or ``device`` (two machines). Options: ``stdin`` (the block reads the
password on its standard input), ``file=PATH`` (the block is that file's content, not commands) and
``until=TEXT`` (run it again until its output holds TEXT: what the reader waits for by looking).

:class:`World` maps what the README names on a real machine to this test machine:

- ``/etc/``, ``/var/`` of each host go under ``<top>/<host>/``; ``/media/`` (the USB stick) is shared;
- ``/opt/allscope/bin/allscope`` and ``@PREFIX@/bin/allscope`` are a shim running this checkout's code;
- the system user ``allscope`` is ``nobody`` and its group ``nogroup`` (real, unprivileged: every file the
  services need is checked against them by the kernel, as in production); ``postgres`` and ``mosquitto``
  are the real users;
- ``mqtt.example.org`` is 127.0.0.1; ports 8883, 8090 and 8080 are free ports; the PostgreSQL URL
  ``postgresql://allscope@/allscope`` (peer authentication over the local socket) is the test server's TCP
  address with trust authentication.

``sudo`` and ``systemctl`` are shims too (``python walkthrough_kit.py sudo|systemctl ...``): ``sudo -u U``
drops to U with ``setpriv``; ``systemctl`` starts what the unit files in ``systemd/`` say (ExecStart, User,
Environment, EnvironmentFile), and mosquitto with the configuration the walkthrough wrote.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MARK = re.compile(r"<!-- walkthrough (?P<host>central|device)(?P<options>[^>]*?)\s*-->[ ]*\n"
                  r"(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<body>.*?)\n[ ]*```", re.DOTALL)
USERS = {"allscope": ("nobody", "nogroup")}
UNITS = Path(__file__).resolve().parents[2] / "systemd"


@dataclass(frozen=True)
class Block:
    host: str
    lang: str
    body: str
    stdin: bool = False
    file: str = ""
    until: str = ""


def blocks(readme: str) -> list[Block]:
    found = []
    for match in MARK.finditer(readme):
        options = dict(re.findall(r"(\w+)=(\S+)", match["options"]))
        body = "\n".join(line.removeprefix(match["indent"]) for line in match["body"].splitlines())
        found.append(Block(match["host"], match["lang"], body, stdin="stdin" in match["options"].split(),
                           file=options.get("file", ""), until=options.get("until", "")))
    return found


@dataclass
class World:
    top: str
    repo: str
    python: str
    pg_port: int
    mqtt_port: int
    web_port: int
    device_port: int
    extra_env: dict = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return Path(self.top) / "bin"

    def root(self, host: str) -> Path:
        return Path(self.top) / host

    def save(self) -> Path:
        path = Path(self.top) / "world.json"
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: str) -> World:
        return cls(**json.loads(Path(path).read_text()))

    def substitute(self, text: str, host: str) -> str:
        text = text.replace("postgresql://allscope@/allscope",
                            f"postgresql://allscope@127.0.0.1:{self.pg_port}/allscope")
        text = text.replace("/opt/allscope/bin/allscope", str(self.bin / "allscope"))
        text = text.replace("@PREFIX@/bin/allscope", str(self.bin / "allscope")).replace("@PREFIX@", self.repo)
        text = text.replace("mqtt.example.org", "127.0.0.1")
        for port, ours in (("8883", self.mqtt_port), ("8090", self.web_port), ("8080", self.device_port)):
            text = re.sub(rf"(?<![\d.]){port}(?!\d)", str(ours), text)
        for user, (ours, group) in USERS.items():
            text = re.sub(rf"(-u|-o) {user}\b", rf"\1 {ours}", text)
            text = re.sub(rf"User={user}\b", f"User={ours}", text)
            text = re.sub(rf"-g {user}\b", f"-g {group}", text)
        text = re.sub(r"(?<![\w./])/media/", f"{self.top}/media/", text)
        return re.sub(r"(?<![\w./])/(etc|var)/", lambda m: f"{self.root(host)}/{m[1]}/", text)

    def env(self, host: str) -> dict:
        return {**os.environ, **self.extra_env, "PATH": f"{self.bin}:{os.environ['PATH']}",
                "PYTHONPATH": self.repo, "PYTHONUNBUFFERED": "1", "HOME": self.top,
                "PGHOST": "127.0.0.1", "PGPORT": str(self.pg_port),
                "ALLSCOPE_CONFIG": str(self.root(host) / "etc/allscope/allscope.toml"),
                "WALKTHROUGH_WORLD": str(Path(self.top) / "world.json"), "WALKTHROUGH_HOST": host}

    def install_shims(self) -> None:
        self.bin.mkdir(parents=True, exist_ok=True)
        me = Path(__file__).resolve()
        shims = {"allscope": f'exec "{self.python}" -m device.cli "$@"',
                 "sudo": f'exec "{self.python}" "{me}" sudo "$@"',
                 "systemctl": f'exec "{self.python}" "{me}" systemctl "$@"'}
        for name, line in shims.items():
            path = self.bin / name
            path.write_text(f"#!/bin/sh\n{line}\n")
            path.chmod(0o755)


def as_user(user: str, command: list[str]) -> list[str]:
    """``command`` run as ``user`` (root: as it is), the README's users mapped to this machine's."""
    user = USERS.get(user, (user, ""))[0]
    if Path(command[0]).name == "allscope":  # the shim, as its interpreter: setpriv runs it (a #! script as
        command = [sys.executable, "-m", "device.cli", *command[1:]]  # another user may not reach the venv's)
    if user == "root":
        return command
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *command]


# --- the shims ---------------------------------------------------------------------------------------------

def sudo(args: list[str]) -> int:
    user = "root"
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "-u":
            user = args.pop(0)
    os.execvp(as_user(user, args)[0], as_user(user, args))
    return 1


def _unit(world: World, host: str, name: str) -> tuple[list[str], dict, str]:
    """(command, environment, user) of ``systemd/<name>.service`` as systemd would start it."""
    text = world.substitute((UNITS / f"{name}.service").read_text(), host)
    env, command, user = {}, [], "root"
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name_, _, val = value.partition("=")
            env[name_] = val
        elif key == "EnvironmentFile":
            path = Path(value.lstrip("-"))
            if path.exists():
                for row in path.read_text().splitlines():
                    if "=" in row and not row.lstrip().startswith("#"):
                        name_, _, val = row.partition("=")
                        env[name_.strip()] = val.strip()
        elif key == "ExecStart":
            command = shlex.split(value)
        elif key == "User":
            user = value
    return command, env, user


def _pid_file(world: World, host: str, unit: str) -> Path:
    run = Path(world.top) / "run"
    run.mkdir(exist_ok=True)
    return run / f"{host}-{unit}.pid"


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_all(world: World) -> None:
    for pid_file in (Path(world.top) / "run").glob("*.pid"):
        stop_pid(int(pid_file.read_text()))


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _start(world: World, host: str, unit: str) -> int:
    pid_file = _pid_file(world, host, unit)
    if pid_file.exists():
        stop_pid(int(pid_file.read_text()))
    log = Path(world.top) / "log" / f"{host}-{unit}.log"
    log.parent.mkdir(exist_ok=True)
    if unit == "mosquitto":
        command, env, user = ["/usr/sbin/mosquitto", "-c",
                              str(world.root(host) / "etc/mosquitto/conf.d/allscope.conf")], {}, "root"
    else:
        command, env, user = _unit(world, host, unit)
    with open(log, "a") as out:
        process = subprocess.Popen(as_user(user, command), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=world.top, env={**world.env(host), **env},
                                   start_new_session=True)
    pid_file.write_text(str(process.pid))
    ready = {"mosquitto": lambda: _port_open(world.mqtt_port),
             "allscope-central": lambda: "receiving on" in log.read_text(),
             "allscope-central-web": lambda: _port_open(world.web_port),
             "allscope-device": lambda: _port_open(world.device_port)}.get(unit, lambda: True)
    deadline = time.monotonic() + 90
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"systemctl: {unit} did not start:\n{log.read_text()[-2000:]}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 0


def systemctl(args: list[str]) -> int:
    world = World.load(os.environ["WALKTHROUGH_WORLD"])
    host = os.environ["WALKTHROUGH_HOST"]
    now = "--now" in args
    words = [arg for arg in args if not arg.startswith("-")]
    verb, units = words[0], [unit.removesuffix(".service") for unit in words[1:]]
    if verb == "daemon-reload" or (verb == "enable" and not now):
        return 0
    if verb not in ("enable", "start", "restart"):
        print(f"systemctl shim: {verb} is not part of the walkthrough", file=sys.stderr)
        return 1
    for unit in units:
        if _start(world, host, unit):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit({"sudo": sudo, "systemctl": systemctl}[sys.argv[1]](sys.argv[2:]))
