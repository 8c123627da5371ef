"""The whole clinical workflow in a real Chromium (Debian's package) driven by Playwright, against
`allscope serve` running as a real process on loopback with its analysis worker and the shipped model.

technician: log in → register a patient → new sample → upload a frame → wait for the analysis
pathologist: log in → review → reclassify a cell → review every flagged cell → sign → open the PDF
"""

from __future__ import annotations

import re

import pytest
from browser_kit import assert_fits_panel, needs_chromium
from browser_kit import login as _login
from browser_kit import new_page as _page
from conftest import REPO_ROOT

DEMO_FRAME = REPO_ROOT / "device" / "demo" / "BloodImage_00001.jpg"

pytestmark = needs_chromium


def test_technician_and_pathologist_workflow(live_server, browser, tmp_path):
    base = live_server
    frame = DEMO_FRAME if DEMO_FRAME.exists() else sorted((REPO_ROOT / "device" / "demo").glob("*.jpg"))[0]

    # --- technician at the 800x480 touchscreen ---------------------------------------------------
    context, page, errors = _page(browser, {"width": 800, "height": 480})
    _login(page, base, "tech")
    assert page.url.rstrip("/") == base
    page.get_by_role("link", name="New patient").click()
    page.fill('input[name="identifier"]', "CLN-0042")
    page.fill('input[name="name"]', "Amina Grünwald")
    page.fill('input[name="date_of_birth"]', "2016-03-09")
    page.fill('input[name="wbc"]', "48.5")
    page.get_by_role("button", name="Register patient").click()
    page.wait_for_load_state()
    assert "CLN-0042" in page.inner_text("main")
    patient_url = page.url
    page.get_by_role("link", name="New sample").click()
    page.get_by_role("button", name="Create sample").click()
    page.wait_for_url(re.compile(r".*/samples/\d+/capture$"))
    sample_id = int(re.search(r"/samples/(\d+)/capture", page.url).group(1))
    page.set_input_files('input[type="file"]', str(frame))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_load_state()
    expect = pytest.importorskip("playwright.sync_api").expect
    page.locator(".capture-item").first.wait_for()
    # the page polls the API; analysis runs in the background on the real model
    expect(page.locator('.capture-item [data-field="status"]').first).to_have_text("done", timeout=180_000)
    cells_found = int(page.inner_text('.capture-item [data-field="cell_count"]'))
    assert cells_found > 0
    page.screenshot(path=str(tmp_path / "capture-800x480.png"))
    # a technician may not review
    response = page.goto(f"{base}/samples/{sample_id}/review")
    assert response.status == 403
    errors.remove("Failed to load resource: the server responded with a status of 403 (FORBIDDEN)")
    page.goto(patient_url)
    assert not errors, errors
    context.close()

    # --- pathologist at 1280x800 ----------------------------------------------------------------
    context, page, errors = _page(browser, {"width": 1280, "height": 800})
    page.on("dialog", lambda dialog: dialog.accept())  # "Sign this report?"
    _login(page, base, "path")
    page.goto(f"{base}/review")
    page.click(f'a[href="/samples/{sample_id}/review"]')
    page.wait_for_load_state()
    tiles = page.locator("article.tile")
    assert tiles.count() >= cells_found
    expect = pytest.importorskip("playwright.sync_api").expect
    # one-tap reclassify the first (most uncertain) cell to the opposite of the AI's label
    first = tiles.first
    first.locator(".thumb").click()  # tap the thumbnail: the enlarged cell with its label buttons
    ai_label = first.locator(".who-said .badge").first.inner_text().strip()
    new_label = "normal" if ai_label == "blast" else "blast"
    first.locator(f'button[value="{new_label}"]').click()
    expect(first.locator("[data-reviewer]")).to_have_text(new_label)
    # the AI's own label is kept beside the reviewer's
    assert first.locator(".who-said .badge").first.inner_text().strip() == ai_label
    # review every cell still flagged with "Next flagged", accepting the AI's label
    first.locator("[data-close]").click()
    for _ in range(200):
        if page.locator("article.tile.needs-review").count() == 0:
            break
        page.locator("#next-flagged").click()
        open_tile = page.locator("article.tile.current")
        label = open_tile.get_attribute("data-ai")
        cell_id = open_tile.get_attribute("data-cell-id")
        open_tile.locator(f'button[value="{label}"]').click()
        expect(page.locator(f"#cell-{cell_id}")).not_to_have_class(re.compile(r"needs-review"))
        open_tile.locator("[data-close]").click()
    page.get_by_role("link", name="Sign").click()
    page.fill('textarea[name="conclusion"]', "Blasts present; correlate with flow cytometry.")
    page.fill('textarea[name="override_reason"]', "One frame only: a screening smear.")  # below 100 white cells
    page.get_by_role("button", name="Sign report").click()
    page.wait_for_url(re.compile(r".*/reports/\d+$"))
    report_text = page.inner_text("main")
    assert "CLN-0042" in report_text and "signed" in report_text.lower()
    assert "Decision support" in page.content()
    pdf_href = page.get_attribute('a:has-text("Download PDF")', "href")
    pdf = page.request.get(base + pdf_href)
    assert pdf.status == 200 and pdf.headers["content-type"].startswith("application/pdf")
    assert pdf.body().startswith(b"%PDF")
    page.screenshot(path=str(tmp_path / "report-1280x800.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_every_main_page_fits_a_800x480_panel(live_server, browser):
    """No horizontal scrolling on the smallest touchscreen, for each role's main pages."""
    context, page, errors = _page(browser, {"width": 800, "height": 480})
    _login(page, live_server, "chief")  # admin + pathologist: sees the most pages
    for path in ("/", "/patients/new", "/capture", "/review", "/admin/status", "/admin/users", "/admin/settings",
                 "/admin/audit"):
        page.goto(live_server + path)
        assert_fits_panel(page, path)
    assert not errors, errors
    context.close()
