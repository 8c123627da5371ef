"""The analysis worker's hang policy and latency figure, with a fake clock (no thread, no model)."""

from __future__ import annotations

import datetime as dt

from device.services.job_health import WorkerHealth

NOON = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)


def test_a_hang_is_counted_and_the_capture_gets_one_line_with_the_backend():
    health = WorkerHealth(configured_kind="edgetpu")
    message = health.hung(7, "edgetpu", 30.0, NOON)
    assert "\n" not in message and "within 30 s (edgetpu hung?)" in message and "run the analysis again" in message
    assert health.restarts == 1 and health.hangs_in_a_row == 1 and health.cpu_reason is None
    assert health.watchdog_problem == f"2026-12-03 12:00 UTC, capture #7: {message}"


def test_two_hangs_in_a_row_on_an_accelerator_fall_back_to_the_cpu_for_good():
    health = WorkerHealth(configured_kind="edgetpu")
    health.hung(1, "edgetpu", 30.0, NOON)
    health.hung(2, "edgetpu", 30.0, NOON + dt.timedelta(minutes=1))
    assert health.cpu_reason == "edgetpu delegate hung 2 times in a row; running on the CPU until the service restarts"
    assert health.watchdog_problem.startswith("2026-12-03 12:01 UTC, capture #2:")
    health.finished(10, 25.0)  # the CPU answers: the count starts over, the fallback stays
    health.hung(3, "cpu-xnnpack/1 thread", 30.0, NOON)
    assert health.hangs_in_a_row == 1 and health.restarts == 3 and health.cpu_reason.startswith("edgetpu delegate")


def test_a_finished_frame_between_hangs_keeps_the_accelerator():
    health = WorkerHealth(configured_kind="edgetpu")
    health.hung(1, "edgetpu", 30.0, NOON)
    health.finished(5, 10.0)
    health.hung(2, "edgetpu", 30.0, NOON)
    assert health.cpu_reason is None and health.restarts == 2


def test_the_cpu_never_falls_back_to_itself():
    health = WorkerHealth(configured_kind="cpu")
    for number in range(4):
        health.hung(number, "cpu-xnnpack/1 thread", 30.0, NOON)
    assert health.cpu_reason is None and health.restarts == 4


def test_latency_is_the_median_per_cell_over_a_bounded_window_of_frames_with_cells():
    health = WorkerHealth()
    assert health.latency_ms() is None
    health.finished(0, 5.0)          # a frame without cells says nothing about per-cell time
    health.finished(10, 20.0)        # 2.0 ms per cell
    health.finished(4, 4.0)          # 1.0
    health.finished(2, None)         # no timing recorded
    health.finished(1, 3.0)          # 3.0
    assert health.latency_ms() == 2.0 and len(health.latencies) == 3
    for _ in range(health.latencies.maxlen):
        health.finished(1, 9.0)
    assert health.latency_ms() == 9.0 and len(health.latencies) == health.latencies.maxlen
