"""A non-editable install works (issue 11): the wheel carries every file read at run time.

The wheel is built from a clean copy of the tree (the files git knows, without .venv, build/ or
*.egg-info) and installed with ``pip install --no-deps`` into a fresh venv outside the checkout, as
``firmware_config/install.sh`` does with ``pip install .``. The third-party dependencies come from this
test run's own site-packages through a plain ``.pth`` line, which adds the folder to ``sys.path`` but
processes none of the ``.pth`` files in it: the editable install's finder is never loaded, so ``device``,
``webui``, ``sync`` and ``model_conversion`` can only come from the wheel. Every command runs from a
folder outside the checkout, with no ``ALLSCOPE_*`` variable and an empty configuration file.

The build backend must be setuptools >= 77 (``pyproject.toml`` uses a PEP 639 license string). It is
taken from this environment when it has it (the dev extra installs it), else fetched once from the
configured package index into a temporary folder, as pip's build isolation would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TEST_PASSWORD, free_port, stop_process, wait_until_serving

PACKAGES = ("device", "webui", "sync", "model_conversion")
# Top-level folders the wheel carries as data files (pyproject.toml: share/allscope/<name>/ under the prefix).
SHIPPED = {"models": ("allscope_blast_int8.tflite", "model_card.json", "model_card.md"),
           "models/paper": ("allscope_blast_int8.tflite", "allscope_blast_float32.tflite", "model_card.json",
                            "model_card.md"),
           "firmware_config/mosquitto": ("allscope.conf.template", "acl")}
MIN_SETUPTOOLS = 77

pytestmark = pytest.mark.skipif(not (REPO_ROOT / ".git").exists() or not shutil.which("git"),
                                reason="the clean copy is made from git's file list: needs a git checkout "
                                       "and the git command")


def run(command: list, *, check: bool = True, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wheel-install")
    assert REPO_ROOT.resolve() not in path.resolve().parents, "the temporary folder must be outside the checkout"
    return path


@pytest.fixture(scope="module")
def build_env(work) -> dict:
    """Environment in which ``python -m pip wheel --no-build-isolation`` finds setuptools >= 77."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        have = _version_tuple(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        have = (0,)
    if have >= (MIN_SETUPTOOLS,):
        return env
    tools = work / "build-tools"
    done = run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                "--target", tools, f"setuptools>={MIN_SETUPTOOLS}"], check=False)
    if done.returncode != 0:
        pytest.skip(f"setuptools>={MIN_SETUPTOOLS} (the build backend) is neither installed here nor available "
                    f"from the configured package index:\n{done.stderr[-800:]}")
    env["PYTHONPATH"] = str(tools)
    return env


@pytest.fixture(scope="module")
def source(work) -> Path:
    """A clean copy of the tree: the files git tracks or would track (.gitignore'd ones left out)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT).stdout
    copy = work / "src"
    for name in filter(None, listed.split("\0")):
        origin = REPO_ROOT / name
        if not origin.is_file():
            continue  # deleted in the working tree but not yet in git
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, copy / name, follow_symlinks=False)
    return copy


def _pip_wheel(target, out: Path, env: dict) -> Path:
    out.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--wheel-dir", out, target], env=env, cwd=out)
    (wheel,) = out.glob("allscope-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(work, source, build_env) -> Path:
    """The wheel ``pip install .`` builds from the tree (what install.sh does on a device)."""
    return _pip_wheel(source, work / "dist", build_env)


@pytest.fixture(scope="module")
def venv(work, wheel) -> dict:
    """A fresh venv outside the checkout with the wheel installed non-editable; returns paths and env."""
    root = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-index", wheel])
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies: this run's site-packages, added as plain paths (their .pth files are not processed).
    deps = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "_allscope_test_deps.pth").write_text("".join(f"{path}\n" for path in deps))
    cwd = work / "elsewhere"
    cwd.mkdir()
    config = work / "empty.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALLSCOPE_", "PYTHON")) and k not in ("VIRTUAL_ENV",)}
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               ALLSCOPE_CONFIG=str(config))
    return {"root": root, "python": python, "allscope": root / "bin" / "allscope", "site": site, "cwd": cwd,
            "env": env}


def in_venv(venv: dict, *args, **kwargs) -> subprocess.CompletedProcess:
    return run(list(args), cwd=venv["cwd"], env=venv["env"], **kwargs)


def test_wheel_carries_every_runtime_file(wheel, source):
    """Templates, static files, demo frames, the shipped model with its card and the broker templates."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {path.relative_to(source).as_posix()
                for package in ("device", "webui", "sync") for path in (source / package).rglob("*")
                if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts}
    data = next(n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".data"))
    for folder, required in SHIPPED.items():
        assert {p.name for p in (source / folder).iterdir()} >= set(required)
        target = folder if folder.startswith("models") else Path(folder).name  # models/paper keeps its sub-folder
        expected |= {f"{data}/data/share/allscope/{target}/{name}" for name in required}
    assert sorted(expected - names) == []
    modules = {p.relative_to(source).as_posix() for package in PACKAGES for p in (source / package).rglob("*.py")}
    assert sorted(modules - names) == []


def test_sdist_builds_the_same_wheel(work, source, wheel, build_env):
    """``python -m build`` goes through the sdist: it must carry the data files the wheel ships."""
    sdists = work / "sdist"
    sdists.mkdir()
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    name = run([sys.executable, "-c", build, sdists], cwd=source, env=build_env).stdout.strip().splitlines()[-1]
    with tarfile.open(sdists / name) as archive:
        in_sdist = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    for folder, required in SHIPPED.items():
        assert {f"{folder}/{file}" for file in required} <= in_sdist
    from_sdist = _pip_wheel(sdists / name, work / "dist-from-sdist", build_env)
    assert sorted(set(zipfile.ZipFile(from_sdist).namelist()) ^ set(zipfile.ZipFile(wheel).namelist())) == []


def test_packages_and_resources_come_from_the_wheel(venv):
    probe = """
import json, sys
import device, webui, sync, model_conversion
from device import resources
card = json.loads(resources.MODEL_CARD.read_text())
print(json.dumps({
    "modules": [m.__file__ for m in (device, webui, sync, model_conversion)],
    "editable_finders": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
    "files": [str(p) for p in (resources.DEFAULT_MODEL, resources.MODEL_CARD,
                               resources.MOSQUITTO_DIR / "allscope.conf.template", resources.MOSQUITTO_DIR / "acl")],
    "card_models": {str(resources.MODEL_CARD.parent / f["file"]): f["bytes"] for f in card["model_files"].values()},
    "demo": sorted(str(p) for p in resources.DEMO_FRAMES.glob("*.jpg")),
}))
"""
    found = json.loads(in_venv(venv, venv["python"], "-c", probe).stdout)
    site, prefix = venv["site"], venv["root"]
    for path in found["modules"] + found["demo"]:
        assert Path(path).is_relative_to(site), f"{path} is not from the installed wheel in {site}"
    for path in found["files"] + list(found["card_models"]):
        assert Path(path).is_relative_to(prefix / "share" / "allscope"), f"{path} is not the wheel's data file"
    assert found["editable_finders"] == []
    assert all(Path(path).is_file() for path in found["files"])
    for path, size in found["card_models"].items():  # the card's model files are beside it, as it describes them
        assert Path(path).stat().st_size == size, path
    assert len(found["demo"]) >= 1


def _login_page_with_css(venv, command: list, create_user: list, name: str) -> None:
    data_dir = venv["cwd"].parent / f"{name}-data"
    in_venv(venv, venv["allscope"], *create_user, "boss", "--role", "admin", "--data-dir", data_dir,
            input=TEST_PASSWORD + "\n")
    port = free_port()
    log_path = venv["cwd"].parent / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(venv["allscope"]), *command, "--data-dir", str(data_dir),
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log, stderr=log, cwd=venv["cwd"], env=venv["env"])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base + "/login", log_path, timeout=30)
        with urllib.request.urlopen(base + "/login", timeout=10) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "<form" in page and 'name="password"' in page
        sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
        assert sheets, f"the {name} login page links no stylesheet"
        for href in sheets:
            with urllib.request.urlopen(base + href, timeout=10) as response:
                assert response.status == 200, href
                assert response.headers.get_content_type() == "text/css", href
                assert response.read().strip(), f"{href} is empty"
        for src in re.findall(r'<script src="([^"]+)"', page):
            with urllib.request.urlopen(base + src, timeout=10) as response:
                assert response.status == 200 and response.read().strip(), src
    finally:
        stop_process(process)


def test_device_ui_serves_its_login_page_with_css(venv):
    _login_page_with_css(venv, ["serve"], ["users", "create"], "device")


def test_central_ui_serves_its_login_page_with_css(venv):
    _login_page_with_css(venv, ["central", "serve"], ["central", "users", "create"], "central")


def test_analyze_a_demo_frame_with_the_shipped_model(venv):
    frame = in_venv(venv, venv["python"], "-c", "from device.resources import DEMO_FRAMES; "
                    "print(sorted(DEMO_FRAMES.glob('*.jpg'))[0])").stdout.strip()
    done = in_venv(venv, venv["allscope"], "analyze", frame, "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)
    assert result["cell_count"] >= 1 and result["cells"], result
    assert result["flag"], result


def test_central_broker_config_from_the_wheel_names_its_installed_acl(venv):
    """Issue 16: broker-config from a non-editable install reads the shipped template and names a real ACL."""
    work = venv["cwd"].parent / "broker-config"
    (work / "persistence").mkdir(parents=True)
    in_venv(venv, venv["allscope"], "central", "pki", "init", "--dir", work / "pki")
    in_venv(venv, venv["allscope"], "central", "broker-config", "--pki", work / "pki", "--persistence",
            work / "persistence", "--user", "root", "--out", work / "allscope.conf")
    settings = dict(line.split(" ", 1) for line in (work / "allscope.conf").read_text().splitlines()
                    if line and not line.startswith("#"))
    acl = Path(settings["acl_file"])
    assert acl.is_file() and (acl.is_relative_to(venv["root"] / "share" / "allscope")
                              or acl == Path("/etc/allscope/mosquitto/acl")), acl
