"""The analysis worker's decisions about hung jobs, and its latency figure, without a thread or a clock.

The worker (``device/services/jobs.py``) calls :meth:`WorkerHealth.hung` from the watchdog and
:meth:`WorkerHealth.finished` after each frame, under its own lock; the time comes in as an
argument, so the policy is tested with a fake clock (``tests/services/test_job_health.py``).
"""

from __future__ import annotations

import collections
import datetime as dt
import statistics
from dataclasses import dataclass, field

CPU_AFTER_HANGS = 2  # hangs in a row on an accelerator before the worker gives up on it until restarted
LATENCY_WINDOW = 50  # frames whose per-cell inference time makes up the median on the status page


@dataclass
class WorkerHealth:
    configured_kind: str = "cpu"               # the delegate the configuration asks for
    cpu_after_hangs: int = CPU_AFTER_HANGS
    restarts: int = 0                          # job threads the watchdog replaced since the start
    hangs_in_a_row: int = 0
    cpu_reason: str | None = None              # set once the worker gave up on the accelerator
    watchdog_problem: str | None = None        # the last intervention, as one line for the status page
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))

    def hung(self, capture_id: int, backend: str, seconds: float, now: dt.datetime) -> str:
        """A job did not finish in time: count it, maybe fall back to the CPU; the capture's one-line failure."""
        self.restarts += 1
        self.hangs_in_a_row += 1
        if self.configured_kind != "cpu" and self.hangs_in_a_row >= self.cpu_after_hangs and self.cpu_reason is None:
            self.cpu_reason = (f"{self.configured_kind} delegate hung {self.hangs_in_a_row} times in a row; "
                               "running on the CPU until the service restarts")
        message = (f"inference did not finish within {seconds:.0f} s ({backend} hung?); the analysis "
                   "worker was restarted and reloads the model: run the analysis again")
        self.watchdog_problem = f"{now:%Y-%m-%d %H:%M} UTC, capture #{capture_id}: {message}"
        return message

    def finished(self, cells: int, classify_ms: float | None) -> None:
        """A frame was analysed: the accelerator answered, and its per-cell time joins the median."""
        self.hangs_in_a_row = 0
        if cells and classify_ms is not None:
            self.latencies.append(float(classify_ms) / cells)

    def latency_ms(self) -> float | None:
        return round(statistics.median(self.latencies), 2) if self.latencies else None
