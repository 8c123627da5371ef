"""The README's screenshots: the review page at the 800x480 panel and page 1 of the PDF report.

    python -m webui.screenshots --out webui/screenshots        (or: make screenshots)

Starts ``allscope serve`` on a temporary data directory and a free loopback port with a technician and a
pathologist, registers a demo patient, uploads the shipped demo frames (``device.resources.DEMO_FRAMES``)
through the JSON API and lets the real worker analyse them with the shipped model; then, as the pathologist in
Chromium (Debian's package, driven by Playwright) at 800x480, saves ``review-800x480.png`` of the review page,
saves a draft conclusion, and renders page 1 of its PDF with ``pdftoppm`` (poppler-utils) to
``report-page1.png``. Both images are reduced to 256 colours to stay small. Needs the dev extra (playwright).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from device.resources import DEMO_FRAMES

VIEWPORT = {"width": 800, "height": 480}
PDF_DPI = 70
REPO_ROOT = Path(__file__).resolve().parents[1]


class ScreenshotError(RuntimeError):
    """Something the screenshots need is missing or failed (one line)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*args: str, stdin: str = "") -> None:
    subprocess.run([sys.executable, "-m", "device.cli", *args], input=stdin, text=True, check=True,
                   capture_output=True, cwd=REPO_ROOT)


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ScreenshotError("allscope serve exited early")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ScreenshotError(f"allscope serve did not answer within {timeout:.0f} s")


def _login(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_load_state()


def _api(page, method: str, url: str, **kwargs):
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    response = page.request.fetch(url, method=method, headers={"X-CSRFToken": token}, **kwargs)
    if not response.ok:
        raise ScreenshotError(f"{method} {url}: {response.status} {response.text()[:200]}")
    return response.json()


def _demo_sample(page, base: str, frames: list[Path], timeout: float = 300.0) -> int:
    """As the technician: a demo patient and sample with ``frames`` uploaded and analysed; the sample id."""
    patient = _api(page, "POST", base + "/api/patients", data={
        "identifier": "DEMO-0001", "name": "Demo Patient", "date_of_birth": "1968-05-17", "sex": "female",
        "referring_clinician": "Dr. Example", "symptoms": "fatigue, bruising", "wbc": 38.5, "hemoglobin": 8.9,
        "platelets": 41})["patient"]
    sample = _api(page, "POST", f"{base}/api/patients/{patient['id']}/samples", data={})["sample"]
    files = [{"name": frame.name, "mimeType": "image/jpeg", "buffer": frame.read_bytes()} for frame in frames]
    for file in files:  # one request per file: multipart with a list is one field per file in Playwright
        _api(page, "POST", f"{base}/api/samples/{sample['id']}/captures", multipart={"files": file})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        captures = _api(page, "GET", f"{base}/api/samples/{sample['id']}/captures")["captures"]
        if captures and all(c["status"] in ("done", "failed") for c in captures):
            return sample["id"]
        time.sleep(1.0)
    raise ScreenshotError(f"the demo frames were not analysed within {timeout:.0f} s")


def _small_png(path: Path) -> None:
    """256 colours, optimised: a screenshot of a few hundred kB becomes ~100 kB."""
    from PIL import Image

    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    reduced.save(path, optimize=True)


def take(out: Path, frames: list[Path] | None = None) -> list[Path]:
    """The two screenshots in ``out``; returns their paths."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise ScreenshotError("chromium is not installed (apt-get install chromium)")
    if shutil.which("pdftoppm") is None:
        raise ScreenshotError("pdftoppm is not installed (apt-get install poppler-utils)")
    frames = frames or sorted(DEMO_FRAMES.glob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="allscope-shots-") as tmp:
        data_dir = Path(tmp) / "var"
        for username, role in (("tech", "technician"), ("path", "pathologist")):
            _cli("users", "create", username, "--role", role, "--data-dir", str(data_dir), stdin=password + "\n")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with open(Path(tmp) / "server.log", "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "device.cli", "serve", "--data-dir", str(data_dir),
                                       "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log,
                                      cwd=REPO_ROOT)
        try:
            _wait_for(base + "/login", server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                _login(page, base, "tech", password)
                sample_id = _demo_sample(page, base, frames)
                context.close()
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                _login(page, base, "path", password)
                page.goto(f"{base}/samples/{sample_id}/review")
                page.wait_for_load_state("networkidle")
                review_png = out / "review-800x480.png"
                page.screenshot(path=str(review_png))
                page.fill('textarea[name="conclusion"]', "Demo frames (BCCD): no blasts seen. For illustration "
                                                         "only.")
                page.get_by_role("button", name="Save draft").click()
                page.wait_for_load_state()
                report_href = page.get_attribute('#report a[href^="/reports/"]', "href")
                pdf = page.request.get(f"{base}{report_href}.pdf")
                if not pdf.ok:
                    raise ScreenshotError(f"the PDF report did not render: {pdf.status}")
                pdf_path = Path(tmp) / "report.pdf"
                pdf_path.write_bytes(pdf.body())
                browser.close()
            report_png = out / "report-page1.png"
            subprocess.run(["pdftoppm", "-png", "-r", str(PDF_DPI), "-f", "1", "-l", "1", "-singlefile",
                            str(pdf_path), str(report_png.with_suffix(""))], check=True, capture_output=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    for path in (review_png, report_png):
        _small_png(path)
    return [review_png, report_png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "webui" / "screenshots",
                        help="folder for the PNG files (default: webui/screenshots)")
    args = parser.parse_args(argv)
    try:
        paths = take(args.out)
    except (ScreenshotError, subprocess.CalledProcessError) as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path} ({path.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
