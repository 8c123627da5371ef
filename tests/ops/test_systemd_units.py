"""The systemd units: `systemd-analyze verify` on each one as install.sh renders it, the hardening each one
promises, the kiosk launcher, MemoryDenyWriteExecute against the real analysis stack, and the graceful stop
of `allscope serve` on SIGTERM with the analysis worker busy (finished or re-run, never half-written).

Units are verified inside a temporary root: install.sh renders them there (``--root``), the root gets the
host's own top-level systemd unit files (what any image with systemd has: sysinit.target and friends) and,
because install.sh never builds the venv below ``--root`` (see firmware_config/README.md), a stand-in
``/opt/allscope/bin/allscope`` that runs this checkout's ``allscope``: verify checks that ExecStart exists.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from unit_files import one, read_unit, values

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted(p.name for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".timer"))
SERVICES = [u for u in UNITS if u.endswith(".service")]
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
needs_analyze = pytest.mark.skipif(not os.access(ANALYZE, os.X_OK), reason="systemd-analyze is not installed "
                                   "(apt install systemd): the units cannot be verified here")


# --- the rendered units -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("install.sh needs root (it chowns to the service user); run as root or in a container")
    if not shutil.which("systemd-sysusers"):
        pytest.skip("systemd-sysusers is not installed: install.sh cannot create the user below --root")
    root = tmp_path_factory.mktemp("root")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("pi:x:1000:1000:Desktop user:/home/pi:/bin/bash\n")
    done = subprocess.run(["bash", str(REPO / "firmware_config/install.sh"), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    system_units = root / "usr/lib/systemd/system"
    system_units.mkdir(parents=True)
    for unit in Path("/usr/lib/systemd/system").glob("*"):
        if unit.is_file() and not unit.is_symlink():
            shutil.copy2(unit, system_units / unit.name)
    stand_in = root / "opt/allscope/bin/allscope"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text(f"#!/bin/sh\nexec {sys.executable} -m device.cli.main \"$@\"\n")
    stand_in.chmod(0o755)
    return root


def verify(root: Path, unit_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no", str(unit_path)],
                          capture_output=True, text=True, timeout=60)


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_passes_without_a_word(rendered, name):
    """verify exits 0 even for unknown keys (it only warns), so any output at all is a failure."""
    path = rendered / "etc/systemd/system" / name
    assert path.is_file(), f"install.sh did not install {name}"
    done = verify(rendered, path)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(rendered, tmp_path):
    """The check above can fail: a misspelt key, and an ExecStart that does not exist, are both reported."""
    good = (rendered / "etc/systemd/system/allscope-device.service").read_text()
    broken = rendered / "etc/systemd/system/allscope-broken.service"
    try:
        broken.write_text(good.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
        assert "Unknown key" in verify(rendered, broken).stderr
        broken.write_text(good.replace("/opt/allscope/bin/allscope", "/opt/allscope/bin/no-such-program"))
        done = verify(rendered, broken)
        assert done.returncode != 0 and "no-such-program" in done.stderr
    finally:
        broken.unlink()


@needs_analyze
def test_services_are_well_hardened_by_systemd_analyze_security(rendered):
    """systemd's own exposure score (0 best, 10 worst); the kiosk runs a browser as the desktop user."""
    limits = {name: 7.0 if name == "allscope-kiosk.service" else 2.5 for name in SERVICES}
    for name, limit in limits.items():
        done = subprocess.run([ANALYZE, "security", "--offline=yes", f"--root={rendered}", "--no-pager",
                               f"--threshold={int(limit * 10)}", f"/etc/systemd/system/{name}"],
                              capture_output=True, text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
        assert match, done.stdout[-2000:] + done.stderr
        assert float(match.group(1)) <= limit, f"{name}: exposure {match.group(1)} > {limit}\n{done.stdout}"


def test_placeholders_are_all_filled_and_paths_follow_the_prefix(rendered):
    for name in UNITS:
        text = (rendered / "etc/systemd/system" / name).read_text()
        assert not re.search(r"@[A-Z_]+@", text), f"{name}: a placeholder is left"
    device = read_unit(rendered / "etc/systemd/system/allscope-device.service")
    assert one(device, "Service", "ExecStart") == "/opt/allscope/bin/allscope serve"
    model = one(device, "Service", "Environment")
    assert "ALLSCOPE_MODEL=/opt/allscope/models/allscope_blast_int8.tflite" in values(device, "Service",
                                                                                        "Environment"), model
    assert (rendered / "opt/allscope/models/allscope_blast_int8.tflite").is_file()
    kiosk = read_unit(rendered / "etc/systemd/system/allscope-kiosk.service")
    assert one(kiosk, "Service", "User") == "pi"
    assert "XDG_RUNTIME_DIR=/run/user/1000" in values(kiosk, "Service", "Environment")


# --- what each unit promises (read from the sources) ------------------------------------------------------

def test_every_service_runs_hardened_as_the_service_user():
    for name in SERVICES:
        unit = read_unit(REPO / "systemd" / name)
        get = lambda key: one(unit, "Service", key)  # noqa: E731
        assert get("NoNewPrivileges") == "yes" and get("ProtectKernelTunables") == "yes", name
        assert get("ProtectControlGroups") == "yes" and get("LockPersonality") == "yes", name
        assert get("RestrictAddressFamilies"), name
        assert get("StandardOutput") == "journal" and get("StandardError") == "journal", name
        if name == "allscope-kiosk.service":  # a browser: its own sandbox, JIT, GPU, X11 socket in /tmp
            assert get("User") == "@KIOSK_USER@" and get("Restart") == "always"
            assert get("MemoryDenyWriteExecute") is None and get("PrivateTmp") is None
            after = one(unit, "Unit", "After").split()
            assert "allscope-device.service" in after and "graphical.target" in after
            continue
        assert get("User") == "allscope" and get("Group") == "allscope", name
        assert get("ProtectSystem") == "strict" and get("ProtectHome") == "yes" and get("PrivateTmp") == "yes"
        assert get("MemoryDenyWriteExecute") == "yes", name
        assert get("KillSignal") == "SIGTERM" and get("TimeoutStopSec"), name
        assert get("StateDirectory") in ("allscope", "allscope-central"), name
        assert "ALLSCOPE_CONFIG=/etc/allscope/allscope.toml" in values(unit, "Service", "Environment"), name
        if get("Type") != "oneshot":
            assert get("Restart") == "on-failure" and get("RestartSec"), name
        if name == "allscope-device.service":  # cameras and the Edge TPU are devices
            assert get("PrivateDevices") is None and get("DevicePolicy") == "closed"
            allowed = " ".join(values(unit, "Service", "DeviceAllow"))
            for device_class in ("char-video4linux", "char-media", "char-dma_heap", "char-usb_device", "char-apex"):
                assert device_class in allowed
            assert set(get("SupplementaryGroups").split()) == {"video", "plugdev"}
        else:
            assert get("PrivateDevices") == "yes", name
        if get("LoadCredential"):
            assert get("LoadCredential") == "allscope-db-key:/etc/allscope/db.key", name


def test_timer_runs_the_backup_service_and_catches_up():
    timer = read_unit(REPO / "systemd/allscope-backup.timer")
    assert one(timer, "Timer", "Unit") == "allscope-backup.service"
    assert one(timer, "Timer", "Persistent") == "true" and one(timer, "Timer", "OnCalendar")
    assert one(timer, "Install", "WantedBy") == "timers.target"
    backup = read_unit(REPO / "systemd/allscope-backup.service")
    assert one(backup, "Service", "Type") == "oneshot"
    assert one(backup, "Service", "ExecStart") == "@PREFIX@/bin/allscope backup create"


def test_sync_waits_for_enrolment_instead_of_failing_in_a_loop():
    sync = read_unit(REPO / "systemd/allscope-sync.service")
    assert one(sync, "Unit", "ConditionPathExists") == "/var/lib/allscope/sync/bundle.json"
    assert 'sync_dir / "bundle.json"' in (REPO / "sync/agent/config.py").read_text()  # where the agent reads it


# --- the kiosk launcher -----------------------------------------------------------------------------------

def test_kiosk_launcher_waits_for_the_session_and_the_ui_then_starts_chromium(tmp_path):
    runtime, bin_dir = tmp_path / "run", tmp_path / "bin"
    runtime.mkdir(mode=0o700)
    bin_dir.mkdir()
    args_file = tmp_path / "chromium-args"
    fake = bin_dir / "chromium"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args_file}\necho \"WAYLAND=$WAYLAND_DISPLAY\" >> {args_file}\n")
    fake.chmod(0o755)
    with socket.socket() as web:
        web.bind(("127.0.0.1", 0))
        web.listen()
        port = web.getsockname()[1]
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime),
               "ALLSCOPE_KIOSK_URL": f"http://127.0.0.1:{port}/", "ALLSCOPE_KIOSK_WAIT_S": "20"}
        launcher = subprocess.Popen(["bash", str(REPO / "firmware_config/raspberry-pi/allscope-kiosk.sh")],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert launcher.poll() is None and not args_file.exists(), "started before the desktop session was up"
        session = socket.socket(socket.AF_UNIX)
        session.bind(str(runtime / "wayland-1"))  # wayfire's socket name
        try:
            output, _ = launcher.communicate(timeout=15)
        finally:
            session.close()
    assert launcher.returncode == 0, output
    args = args_file.read_text().splitlines()
    assert args[:2] == ["--kiosk", f"http://127.0.0.1:{port}/"]
    for flag in ("--ozone-platform=wayland", "--noerrdialogs", "--disable-infobars", "--incognito",
                 "--check-for-update-interval=31536000", "--disable-background-networking"):
        assert flag in args
    assert f"--user-data-dir={runtime}/allscope-kiosk" in args and "WAYLAND=wayland-1" in args


def test_kiosk_launcher_gives_up_with_one_line_when_the_ui_never_answers(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chromium").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "chromium").chmod(0o755)
    session = socket.socket(socket.AF_UNIX)
    session.bind(str(tmp_path / "wayland-0"))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        done = subprocess.run(["bash", str(REPO / "firmware_config/raspberry-pi/allscope-kiosk.sh")],
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path),
                                   "ALLSCOPE_KIOSK_URL": f"http://127.0.0.1:{port}/", "ALLSCOPE_KIOSK_WAIT_S": "2"},
                              capture_output=True, text=True, timeout=30)
    session.close()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"allscope-kiosk: http://127.0.0.1:{port}/ does not answer "
                                                "after 2 s (systemctl status allscope-device)"]


# --- MemoryDenyWriteExecute against the real stack ---------------------------------------------------------

MDWE_PROBE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    print("no-mdwe", ctypes.get_errno()); sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("W+X mapping allowed: MDWE not in force"); sys.exit(4)
except OSError:
    pass
from device.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_analysis_runs_with_memory_deny_write_execute(tmp_path):
    """The kernel's PR_SET_MDWE refuses writable+executable memory, like the units' MemoryDenyWriteExecute:
    the model loads and a demo frame is analysed by LiteRT/XNNPACK and OpenCV without any JIT."""
    frame = sorted((REPO / "device/demo").glob("*.jpg"))[0]
    done = subprocess.run([sys.executable, "-c", MDWE_PROBE, "analyze", "--json", "--threads", "2", str(frame)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode == 3:
        pytest.skip(f"this kernel has no PR_SET_MDWE (Linux 6.3+): {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert '"cell_count"' in done.stdout
