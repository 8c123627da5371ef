"""The README's central walkthrough, step by step, with a real PostgreSQL, a real mosquitto and real processes.

Every block the README marks ``<!-- walkthrough ... -->`` is run as it is written (``walkthrough_kit`` maps its
paths, users and ports to this machine), in the README's order; blocks that wait for something to be seen
(``until=``) run last, after the device's patient was registered through the JSON API block. What the
walkthrough cannot do here is named in NOT_RUN (installing Debian packages and ``install.sh``, which
``test_central_install.py`` covers) and emulated in :func:`_as_install_sh_leaves_it`. It ends with a device's
record in PostgreSQL, through the broker and a receiver, seen by ``psql`` and on the admin UI's Records page.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import walkthrough_kit as kit
from conftest import REPO_ROOT
from sync_fixtures import PostgresServer

from sync.bench import postgres
from sync.fleet.broker import find_mosquitto, free_port

PASSWORD = "walkthrough-password-1"
NOT_RUN = {  # README lines this test does not run, and why
    "sudo apt-get install -y postgresql mosquitto git python3-venv curl": "the packages are installed here",
    "sudo firmware_config/install.sh --role central --with-broker": "tests/central/test_central_install.py",
}
DEADLINE = 90.0  # seconds: a bound on waiting for the record, never a measurement


def _missing() -> str:
    for tool in ("setpriv", "curl", "psql", "createuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not find_mosquitto():
        return "mosquitto is not installed (apt-get install mosquitto)"
    if postgres.unavailable():
        return f"PostgreSQL: {postgres.unavailable()}"
    if os.geteuid() != 0:
        return "the walkthrough runs its sudo lines as root (chown, setpriv to the service users)"
    return ""


@pytest.fixture
def world():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    top = Path(tempfile.mkdtemp(prefix="allscope-walk-"))  # not pytest's 0700 tmp: the service users cross it
    top.chmod(0o755)
    server = PostgresServer(superuser="postgres")
    world = kit.World(top=str(top), repo=str(REPO_ROOT), python=sys.executable, pg_port=server.port,
                      mqtt_port=free_port(), web_port=free_port(), device_port=free_port())
    opened = _let_others_traverse(REPO_ROOT)
    try:
        server.start()
        world.save()
        world.install_shims()
        yield world
    finally:
        if (top / "run").exists():
            kit.stop_all(world)
        server.stop()
        for path, mode in opened:
            path.chmod(mode)
        if not os.environ.get("WALKTHROUGH_KEEP"):  # set it to look at the logs and files after a failure
            shutil.rmtree(top, ignore_errors=True)


def _let_others_traverse(repo: Path) -> list[tuple[Path, int]]:
    """The service user runs this checkout's code: a checkout in a 0700 folder (mktemp -d, as CI may clone
    into) cannot be crossed by it. Add search (x, never read) for others on each folder above the checkout
    that lacks it, for the test's length; returns what to restore."""
    opened = []
    for folder in [repo, *repo.parents]:
        mode = folder.stat().st_mode & 0o7777
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
            opened.append((folder, mode))
    return opened


def _chown(path: Path, user: str) -> None:
    """chown to the README's ``user`` as this machine has it (allscope: nobody:nogroup)."""
    owner, group = kit.USERS.get(user, (user, user))
    subprocess.run(["chown", "-R", f"{owner}:{group}", str(path)], check=True)


def _as_install_sh_leaves_it(world: kit.World) -> None:
    """What install.sh leaves on each host, for the two lines NOT_RUN (its own test checks install.sh)."""
    central, device = world.root("central"), world.root("device")
    for folder in (central / "etc/allscope/mosquitto", central / "etc/mosquitto/conf.d", central / "var/lib",
                   device / "etc/allscope", device / "var/lib/allscope", Path(world.top) / "media/usb"):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "firmware_config/mosquitto/acl", central / "etc/allscope/mosquitto/acl")
    (device / "etc/allscope/allscope.toml").write_text(
        f'[device]\ndata_dir = "{device}/var/lib/allscope"\nport = {world.device_port}\n')
    _chown(device / "var/lib/allscope", "allscope")
    (device / "var/lib/allscope").chmod(0o700)
    _chown(Path(world.top) / "media/usb", "allscope")
    # the appliance is installed and running, with a technician (README: "Installing on a Raspberry Pi")
    _run(world, "device", "sudo -u allscope /opt/allscope/bin/allscope users create tech --role technician "
         "--data-dir /var/lib/allscope",
         stdin=True)
    _run(world, "device", "sudo systemctl enable --now allscope-device")


def _run(world: kit.World, host: str, body: str, stdin: bool = False) -> str:
    script = world.substitute(body, host)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=False, cwd=world.top, env=world.env(host),
                          input=f"{PASSWORD}\n" if stdin else "", capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        logs = "\n".join(f"--- {path.name}\n{path.read_text()[-1500:]}"
                         for path in sorted((Path(world.top) / "log").glob("*.log")))
        pytest.fail(f"README block on {host} failed ({done.returncode}):\n{body}\n--- stdout\n{done.stdout}\n"
                    f"--- stderr\n{done.stderr}\n{logs}")
    return done.stdout


def _runnable(block: kit.Block, skipped: list[str]) -> str:
    lines = []
    for line in block.body.splitlines():
        if line.strip() in NOT_RUN:
            skipped.append(line.strip())
        else:
            lines.append(line)
    return "\n".join(lines)


def _run_until(world: kit.World, block: kit.Block) -> str:
    deadline = time.monotonic() + DEADLINE
    while True:
        out = _run(world, block.host, block.body, block.stdin)
        if block.until in out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"README block on {block.host} never showed {block.until!r}:\n{block.body}\n{out}")
        time.sleep(0.5)


def test_the_readme_takes_a_new_admin_from_nothing_to_a_first_record_on_postgresql(world):
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = kit.blocks(readme)
    assert len(blocks) >= 10 and {block.host for block in blocks} == {"central", "device"}
    _as_install_sh_leaves_it(world)
    skipped: list[str] = []
    outputs = {}
    for block in [b for b in blocks if not b.until] + [b for b in blocks if b.until]:
        if block.file:
            path = Path(world.substitute(block.file, block.host))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(world.substitute(block.body, block.host) + "\n")
            continue
        body = _runnable(block, skipped)
        outputs[body] = _run_until(world, block) if block.until else _run(world, block.host, body, block.stdin)
    assert sorted(skipped) == sorted(NOT_RUN)

    by_command = {body.splitlines()[-1]: out for body, out in outputs.items()}
    receivers = next(out for line, out in by_command.items() if "central receivers" in line)
    assert "\trunning\t" in receivers
    psql = next(out for line, out in by_command.items() if "psql" in line)
    assert re.search(r"clinic-a-01\s*\|\s*patient\s*\|\s*1", psql), psql

    central = world.root("central")
    # custody: the device's TLS key is in its bundle only; the PKI keeps the certificate
    assert (Path(world.top) / "media/usb/clinic-a-01/device.key").is_file()
    assert (central / "var/lib/allscope-central/pki/issued/clinic-a-01.crt").is_file()
    assert not (central / "var/lib/allscope-central/pki/issued/clinic-a-01.key").exists()
    # the broker could write its persistence folder (mosquitto's own user, not root)
    assert "Permission denied" not in (Path(world.top) / "log/central-mosquitto.log").read_text()

    # the admin UI, as nginx would reach it, shows the record of the clinic
    page = _admin_page(world, "/records")
    assert "clinic-a-01" in page and "MRN-0001" in page
    # /metrics (loopback: allowed by default) counts the receiver systemd started, from its heartbeat
    from prometheus_client.parser import text_string_to_metric_families

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{world.web_port}/metrics", timeout=30).read().decode()
    running = [sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "allscope_central_receivers" and sample.labels["state"] == "running"]
    assert running == [1.0]


def _admin_page(world: kit.World, path: str) -> str:
    base = f"http://127.0.0.1:{world.web_port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login = opener.open(base + "/login", timeout=30).read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login) or \
        re.search(r'<meta name="csrf-token" content="([^"]+)"', login)
    data = urllib.parse.urlencode({"csrf_token": token[1], "username": "boss", "password": PASSWORD}).encode()
    opener.open(base + "/login", data=data, timeout=30).read()
    return opener.open(base + path, timeout=30).read().decode()
