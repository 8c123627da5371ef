"""Web load benchmark: the served app on loopback under concurrent logged-in clients.

    from webui.bench.web import run_web_bench
    report = run_web_bench(clients=20, duration_s=20)

A benchmark, not a timed test. It fills a temporary data directory with
realistic records (patients, samples, captures of the bundled demo frames with
the cells the shipped model really finds in them, signed reports, an audit
trail), starts ``allscope serve`` as a subprocess on a free loopback port,
logs every client in through the real login form, and lets each client load
the main pages back to back (a closed loop with no think time: the worst case
for 20 people at once) for ``duration_s``. It prints p50/p95/max latency per
page and overall, requests per second, errors, and the server's peak resident
memory (VmHWM). Issue target on this class of machine: p95 <= 150 ms, server
under 300 MB resident.

Pages are Flask endpoint names resolved against the app's own URL map, so the
benchmark follows the routes as they change; endpoints that do not exist, or
answer 404, are skipped and listed. Only HTML is timed (not images or the live
camera stream). Clients use the standard library only (urllib + cookiejar).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_P95_MS = 150.0
TARGET_RSS_MB = 300.0


@dataclass(frozen=True)
class Page:
    """A page to load: a label, a Flask endpoint, who loads it ("clinical" | "pathologist" | "admin").

    ``pools`` maps a URL argument to the id pool it draws from when not the pool of the same name
    (a report page needs a sample that has a report).
    """

    label: str
    endpoint: str
    role: str = "clinical"
    query: dict = field(default_factory=dict, hash=False)
    pools: dict = field(default_factory=dict, hash=False)

    def pool(self, argument: str) -> str:
        return self.pools.get(argument, argument)


DEFAULT_PAGES = (
    Page("patient list", "patients.patient_list"),
    Page("patient search", "patients.patient_list", query={"q": "{search}"}),
    Page("patient", "patients.patient_page"),
    Page("sample", "patients.sample_page"),
    Page("sample capture", "capture.sample_capture"),
    Page("capture", "capture.capture_page"),
    Page("report", "reports.sample_report", pools={"sample_id": "reported_sample_id"}),
    Page("review queue", "review.queue", "pathologist"),
    Page("sample review", "review.sample_review", "pathologist"),
    Page("admin status", "admin.status", "admin"),
)

def resolve_pages(data_dir: Path, pages: Sequence[Page]):
    """([(page, its URL's arguments)] for the endpoints the app has, {label: why skipped}, the app for url_for)."""
    from webui.app import create_app

    app = create_app(data_dir=data_dir, start_workers=False)
    app.appliance.database.close()
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    found, skipped = [], {}
    for page in pages:
        rule = rules.get(page.endpoint)
        if rule is None:
            skipped[page.label] = f"no GET route {page.endpoint}"
        else:
            found.append((page, sorted(rule.arguments)))
    return found, skipped, app


def build_url(app, page: Page, args: list[str], ids: dict, rng: random.Random) -> str:
    values = {name: rng.choice(ids[page.pool(name)]) for name in args}
    query = {k: v.format(search=rng.choice(ids["search"])) for k, v in page.query.items()}
    with app.test_request_context():
        return app.url_for(page.endpoint, **values, **query)


# --- clients -----------------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # a redirect is an answer, not a hop
        return None


class Client:
    """One browser: its own cookie jar, logged in through the real form (CSRF token from the page)."""

    def __init__(self, base: str, timeout: float = 30.0):
        self.base = base
        self.timeout = timeout
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect())

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
            error.close()
            return error.code, body

    def login(self, username: str, password: str) -> None:
        _status, page = self.get("/login")
        match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if not match:
            raise RuntimeError("login page has no CSRF token")
        body = urllib.parse.urlencode({"csrf_token": match.group(1).decode(), "username": username,
                                       "password": password}).encode()
        try:
            with self.opener.open(urllib.request.Request(self.base + "/login", data=body), timeout=self.timeout) as r:
                status = r.status
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        if status != 302:
            raise RuntimeError(f"login as {username} failed (HTTP {status})")


# --- server ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int, model: Path | None, log_path: Path,
                 timeout_s: float = 60.0, config: Path | None = None) -> subprocess.Popen:
    """``allscope serve`` on 127.0.0.1:``port`` once its login page answers; ``config``: its configuration file."""
    command = [sys.executable, "-m", "device.cli", "serve", "--data-dir", str(data_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    if model is not None:
        command += ["--model", str(model)]
    env = dict(os.environ, ALLSCOPE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    if config is not None:
        env["ALLSCOPE_CONFIG"] = str(config)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"allscope serve exited early: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError(f"allscope serve did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident) and VmRSS of a process, in MB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":", 1)
                out["peak_rss_mb" if name == "VmHWM" else "rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


# --- the run -----------------------------------------------------------------------------------------------

def client_role(index: int) -> str:
    """Every fifth client (the second, seventh, ...) is an admin; the others alternate technician/pathologist."""
    if index % 5 == 1:
        return "admin"
    return "technician" if index % 2 == 0 else "pathologist"


def _eligible(page: Page, role: str) -> bool:
    return page.role == role or (page.role == "clinical" and role in ("technician", "pathologist"))


def _stats(samples_ms: list[float]) -> dict:
    if not samples_ms:
        return {"requests": 0}
    values = np.array(samples_ms)
    return {"requests": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1), "max_ms": round(float(values.max()), 1)}


def run_web_bench(clients: int = 20, duration_s: float = 20.0, pages: Sequence[Page] | None = None, *,
                  patients: int = 200, model: Path | None = None, json_path: Path | None = None,
                  data_dir: Path | None = None, out: TextIO | None = None, seed_value: int = 0,
                  think_s: float = 0.0) -> dict:
    """Run the web load benchmark; prints a table to ``out`` (stdout), writes ``json_path`` if given, returns it.

    ``think_s``: mean pause of a client between two pages (uniform 0.5-1.5 x); 0 = back to back, which
    measures the server saturated rather than 20 people tapping a screen every second or two.
    ``data_dir``: keep the generated data there (default: a temporary directory, removed afterwards).
    """
    from device.resources import model_in_force
    from device.store.records import db_proxy
    from webui.bench.web_data import CLIENT_USERS, seed

    out = out or sys.stdout
    pages = tuple(pages or DEFAULT_PAGES)
    model_file = model_in_force(model)  # the flag, else $ALLSCOPE_MODEL, else the shipped model
    password = secrets.token_urlsafe(16)
    previous_db = db_proxy.obj  # seeding binds the records to the bench database; give the caller theirs back
    temporary = tempfile.mkdtemp(prefix="allscope-bench-web-") if data_dir is None else None
    root = Path(data_dir or temporary)
    process = None
    try:
        started = time.monotonic()
        seeded = seed(root, model_file, patients, pool=min(20, patients), password=password)
        resolved, skipped, app = resolve_pages(root, pages)
        print(f"web bench: {seeded['counts']} seeded in {time.monotonic() - started:.1f} s", file=out, flush=True)
        port = free_port()
        process = start_server(root, port, model, root / "server.log")
        base = f"http://127.0.0.1:{port}"
        rng = random.Random(seed_value)
        roles = [client_role(i) for i in range(clients)]
        sessions = []
        for role in roles:
            client = Client(base)
            client.login(CLIENT_USERS[role], password)
            sessions.append(client)
        # one probe per page with a client of its role: pages that 404 (not built yet) are skipped
        live = []
        for page, args in resolved:
            prober = next((c for c, r in zip(sessions, roles) if _eligible(page, r)), None)
            if prober is None:
                skipped[page.label] = "no client has its role (use more clients)"
                continue
            if any(not seeded["ids"].get(page.pool(name)) for name in args):
                skipped[page.label] = f"no record for {', '.join(args)}"
                continue
            status, _ = prober.get(build_url(app, page, args, seeded["ids"], rng))
            if status in (404, 405):
                skipped[page.label] = f"answers {status}"
            else:
                live.append((page, args))
        urls = {page.label: [build_url(app, page, args, seeded["ids"], rng) for _ in range(50)]
                for page, args in live}
        timings: dict[str, list[float]] = {page.label: [] for page, _ in live}
        errors: dict[str, int] = {}
        lock = threading.Lock()
        stop_at = [0.0]
        barrier = threading.Barrier(clients + 1)

        def work(index: int) -> None:
            client, role = sessions[index], roles[index]
            mine = [page for page, _ in live if _eligible(page, role)]
            local_rng = random.Random(seed_value * 1000 + index)
            local: dict[str, list[float]] = {p.label: [] for p in mine}
            failures: dict[str, int] = {}
            barrier.wait()
            turn = index
            while mine and time.monotonic() < stop_at[0]:
                page = mine[turn % len(mine)]
                turn += 1
                url = local_rng.choice(urls[page.label])
                t0 = time.perf_counter()
                try:
                    status, _body = client.get(url)
                except Exception as error:  # noqa: BLE001 - a dropped connection is a counted error
                    status = type(error).__name__
                elapsed = (time.perf_counter() - t0) * 1000.0
                if status == 200:
                    local[page.label].append(elapsed)
                else:
                    key = f"{page.label}: {status}"
                    failures[key] = failures.get(key, 0) + 1
                if think_s > 0:
                    time.sleep(max(0.0, min(local_rng.uniform(0.5, 1.5) * think_s, stop_at[0] - time.monotonic())))
            with lock:
                for label, values in local.items():
                    timings[label].extend(values)
                for key, count in failures.items():
                    errors[key] = errors.get(key, 0) + count

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        stop_at[0] = time.monotonic() + duration_s
        barrier.wait()
        began = time.monotonic()
        for thread in threads:
            thread.join(duration_s + 60)
        elapsed = time.monotonic() - began
        memory = memory_mb(process.pid)
        everything = [v for values in timings.values() for v in values]
        overall = _stats(everything)
        total = len(everything) + sum(errors.values())
        report = {
            "clients": clients, "duration_s": round(elapsed, 2), "think_s": think_s, "client_roles": {r: roles.count(r) for r in set(roles)},
            "pages": {page.label: {"endpoint": page.endpoint, **_stats(timings[page.label])} for page, _ in live},
            "skipped": skipped, "overall": overall, "requests_per_s": round(total / elapsed, 1) if elapsed else 0.0,
            "errors": errors, "error_count": sum(errors.values()), "server": memory, "data": seeded["counts"],
            "targets": {"p95_ms": TARGET_P95_MS, "rss_mb": TARGET_RSS_MB,
                        "p95_met": bool(overall.get("p95_ms") is not None and overall["p95_ms"] <= TARGET_P95_MS),
                        "rss_met": bool(memory.get("peak_rss_mb") is not None
                                        and memory["peak_rss_mb"] < TARGET_RSS_MB)},
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform},
        }
    finally:
        if process is not None:
            stop_server(process)
        if previous_db is not None:
            db_proxy.initialize(previous_db)
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    print_report(report, out)
    if json_path is not None:
        from device.store.atomic import write_atomic

        write_atomic(Path(json_path), (json.dumps(report, indent=1) + "\n").encode())
        print(f"written {json_path}", file=out)
    return report


def print_report(report: dict, out: TextIO) -> None:
    print(f"\n{report['clients']} clients for {report['duration_s']} s "
          f"({', '.join(f'{n} {r}' for r, n in sorted(report['client_roles'].items()))}), "
          + (f"{report['think_s']:g} s think time" if report["think_s"] else "no think time (saturation)"), file=out)
    print(f"{'page':<18}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}", file=out)
    rows = list(report["pages"].items()) + [("overall", report["overall"])]
    for label, stats in rows:
        if stats.get("requests"):
            print(f"{label:<18}{stats['requests']:>9}{stats['p50_ms']:>9.1f}{stats['p95_ms']:>9.1f}"
                  f"{stats['max_ms']:>9.1f}", file=out)
        else:
            print(f"{label:<18}{0:>9}{'-':>9}{'-':>9}{'-':>9}", file=out)
    for label, reason in report["skipped"].items():
        print(f"skipped {label}: {reason}", file=out)
    print(f"requests/s {report['requests_per_s']}, errors {report['error_count']}"
          + (f" {report['errors']}" if report["errors"] else ""), file=out)
    memory = report["server"]
    targets = report["targets"]
    print(f"server peak RSS {memory.get('peak_rss_mb', '?')} MB (now {memory.get('rss_mb', '?')} MB); "
          f"targets: p95 <= {targets['p95_ms']:.0f} ms {'met' if targets['p95_met'] else 'NOT met'}, "
          f"RSS < {targets['rss_mb']:.0f} MB {'met' if targets['rss_met'] else 'NOT met'}", file=out, flush=True)
