"""A model file corrupted at start fails the analyses with one line, not the server; allscope doctor names the problem."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TEST_PASSWORD, csrf_from, free_port, stop_process, wait_until_serving
from fault_helpers import frame_png, wait_for
from figures import report

DEMO = sorted((REPO_ROOT / "device" / "demo").glob("*.jpg"))
MODEL = REPO_ROOT / "models" / "allscope_blast_int8.tflite"


# --- model file corrupted at start ----------------------------------------------------------------------------

def _damaged_model(tmp_path: Path, kind: str) -> Path:
    data = MODEL.read_bytes()
    if kind == "truncated":
        damaged = data[: len(data) // 3]
    else:  # the flatbuffer garbled, the appended metadata intact: it still *looks* like an allscope model
        damaged = data[:64] + bytes(b ^ 0x5A for b in data[64:4096]) + data[4096:]
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(damaged)
    return path


@pytest.mark.parametrize("kind", ["truncated", "garbled"])
def test_corrupt_model_at_start_fails_analyses_not_the_server(tmp_path, users_database, kind):
    model = _damaged_model(tmp_path, kind)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = dict(os.environ, ALLSCOPE_DATA_DIR=str(data_dir))
    env.pop("ALLSCOPE_CONFIG", None)
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "device.cli", "serve", "--data-dir", str(data_dir),
                                    "--host", "127.0.0.1", "--port", str(port), "--model", str(model)],
                                   stdout=log, stderr=log, cwd=REPO_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base + "/login", log_path)
        tech = _session(base, "tech")
        token = csrf_from(tech.get(base + "/").text)
        headers = {"X-CSRFToken": token}
        patient = tech.post(base + "/api/patients", json={"identifier": "P-MODEL", "name": "Model Fault"},
                            headers=headers)
        assert patient.status_code == 201, patient.text
        sample = tech.post(base + f"/api/patients/{patient.json()['patient']['id']}/samples", json={},
                           headers=headers)
        assert sample.status_code == 201, sample.text
        sample_id = sample.json()["sample"]["id"]

        failures = []
        for index in range(2):  # the second job proves the worker survived the first failure
            upload = tech.post(base + f"/api/samples/{sample_id}/captures", headers=headers,
                               files={"files": (f"f{index}.png", frame_png(index), "image/png")})
            assert upload.status_code == 201, upload.text
            capture_id = upload.json()["captures"][0]

            def finished():
                poll = tech.get(base + f"/api/captures/{capture_id}/poll").json()
                return poll if poll["status"] in ("done", "failed") else None

            result = wait_for(finished, "the analysis to finish", timeout=60, step=0.2)
            assert result["status"] == "failed", result
            assert "\n" not in result["error"] and model.name in result["error"], result["error"]
            failures.append(result["error"])
        assert process.poll() is None, "the server died"

        admin = _session(base, "admin")
        status = admin.get(base + "/admin/status")
        assert status.status_code == 200
        assert model.name in status.text and _problem_shown(status.text), "the status page does not say what is wrong"
        log_text = log_path.read_text()
        assert log_text.count("Traceback") == 0, log_text[-2000:]
        assert log_text.count("allscope web UI on") == 1  # started once: no crash loop

        doctor = subprocess.run([sys.executable, "-m", "device.cli", "doctor"], capture_output=True, text=True,
                                cwd=REPO_ROOT, env=dict(env, ALLSCOPE_MODEL=str(model)), timeout=120)
        model_lines = [line for line in doctor.stdout.splitlines() if re.match(r"\w+\s+model\b", line)]
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        assert len(model_lines) == 1 and model_lines[0].startswith("FAIL") and model.name in model_lines[0], \
            doctor.stdout
        assert "Traceback" not in doctor.stdout + doctor.stderr
        report("corrupt model: analyses failed with one line while the UI kept serving", len(failures))
    finally:
        stop_process(process)


def _session(base: str, username: str):
    import requests

    session = requests.Session()
    token = csrf_from(session.get(base + "/login").text)
    response = session.post(base + "/login", data={"csrf_token": token, "username": username,
                                                   "password": TEST_PASSWORD, "next": ""}, allow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return session


def _problem_shown(html: str) -> bool:
    """An error-level element of the status page that names what is wrong with the model."""
    return bool(re.search(r'class="[^"]*\berror\b[^"]*">(?:(?!</div>).)*?'
                          r"(not a loadable TFLite model|no allscope metadata|not a TFLite model)", html, re.S))
