"""`allscope bench sync`: a small real run (mosquitto with mutual TLS, central and agent processes).

Checks the figures' structure and the correctness checks the bench makes (nothing
lost, duplicated or altered; outbox empty), and what the broker could read in each
mode. Never asserts on speed: the machine is shared.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sync.bench.run import run_sync_bench
from sync.fleet.broker import find_mosquitto

REPO_ROOT = Path(__file__).resolve().parents[2]

MODE_KEYS = {"device_id", "records", "drain_s", "records_per_s", "central_records_per_s",
             "agent_start_to_first_record_s", "cpu_ms_per_record", "backlog_latency_ms", "live", "wire", "lost",
             "duplicated", "unexpected", "content_mismatches", "outbox_left", "ingest_errors", "central_summary",
             "exit_codes"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    if not find_mosquitto():
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto; `make test` installs it)")
    json_path = tmp_path_factory.mktemp("bench") / "sync.json"
    out = io.StringIO()
    report = run_sync_bench(200, json_path=json_path, out=out, live_rate=50, live_seconds=1)
    return report, out.getvalue(), json_path


def test_both_modes_deliver_every_record_exactly_once(small_run):
    report, _, _ = small_run
    assert report["records"] == 200
    assert list(report["modes"]) == ["encrypted", "plaintext"]
    for name, mode in report["modes"].items():
        assert set(mode) == MODE_KEYS, name
        assert mode["records"] == 200 and mode["live"]["records"] == 50
        assert (mode["lost"], mode["duplicated"], mode["unexpected"], mode["content_mismatches"]) == (0, 0, 0, 0)
        assert mode["outbox_left"] == 0 and mode["ingest_errors"] == 0
        # The receiver stored the 250 records and the hello, and rejected nothing.
        assert "stored 251" in mode["central_summary"] and "rejected" not in mode["central_summary"]
        assert mode["exit_codes"] == {"agent": 0, "central": 0}
        for stats in (mode["backlog_latency_ms"], mode["live"]["latency_ms"]):
            assert 0 <= stats["p50"] <= stats["p95"] <= stats["max"]
        assert mode["records_per_s"] > 0 and mode["drain_s"] > 0
    assert report["correct"] is True
    assert set(report["encryption_cost"]) == {"throughput_plaintext_over_encrypted",
                                              "central_rate_plaintext_over_encrypted",
                                              "live_p50_encrypted_over_plaintext"}
    assert isinstance(report["target_met"], bool)


def test_the_broker_reads_records_only_in_the_plaintext_run(small_run):
    report, _, _ = small_run
    sealed, plain = report["modes"]["encrypted"]["wire"], report["modes"]["plaintext"]["wire"]
    assert sealed["observed"] > 0 and set(sealed["enc"]) == {"x25519-hkdf-sha256-aes256gcm"}
    assert sealed["identifiers_readable"] == 0
    assert plain["observed"] > 0 and set(plain["enc"]) == {"none"}
    assert plain["identifiers_readable"] == plain["observed"]
    costs = report["envelope_costs"]
    assert costs["encrypted"]["envelope_bytes"] > costs["plaintext"]["envelope_bytes"] > \
        costs["encrypted"]["payload_bytes"] > 500


def test_figures_are_printed_and_written_as_json(small_run):
    report, printed, json_path = small_run
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    for mode in report["modes"].values():
        assert str(mode["records_per_s"]) in printed
        assert f"{mode['live']['latency_ms']['p50']} / {mode['live']['latency_ms']['p95']}" in printed
    assert "encryption cost: plaintext/encrypted throughput x" in printed
    assert "zero lost or duplicated" in printed


def test_cli_wiring_refuses_a_bad_record_count_in_one_line():
    result = subprocess.run([sys.executable, "-m", "device.cli", "bench", "sync", "--records", "0"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["allscope: --records must be at least 1"]
