"""Counts with a denominator in a real Chromium at the 800x480 touchscreen, against `allscope serve` running as a
real process (fixtures of test_browser.py): giving a cell its class, the differential updating, accepting the
remaining AI labels, sign-off refused below the minimum (one line) and signed with an override reason that the
report shows; the technician's capture page showing "n of 200 white cells counted".

The sample is written into the server's database by this process (real SQLite, real crops of a demo frame),
so the test needs no minutes of analysis: the analysis itself is covered by test_browser.py.
"""

from __future__ import annotations

import contextlib
import re
from types import SimpleNamespace

import pytest
from browser_kit import PANEL, needs_chromium
from browser_kit import login as _login
from browser_kit import new_page as _page
from review_data import add_sample

pytestmark = needs_chromium


def seed_sample(data_dir, identifier: str) -> tuple[int, list[int]]:
    """A sample with one capture of a demo frame and its six standard cells (four counted, two flagged), written
    into the running server's database."""
    from device.store.datadir import DataDir
    from device.store.records import db_proxy, open_database

    database = open_database(data_dir / "allscope.db")
    seeder = SimpleNamespace(appliance=SimpleNamespace(data=DataDir(data_dir)), app_context=contextlib.nullcontext)
    try:
        return add_sample(seeder, identifier=identifier)
    finally:
        database.close()
        db_proxy.initialize(None)


def no_sideways_scroll(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_differential_accept_and_override_at_800x480(live_server, browser, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    sample_id, cells = seed_sample(tmp_path / "var", "CLN-1414")
    context, page, errors = _page(browser, PANEL)
    page.on("dialog", lambda dialog: dialog.accept())  # "Accept the AI's label ...?", "Sign this report?"
    _login(page, live_server, "path")
    page.goto(f"{live_server}/samples/{sample_id}/review")
    differential = page.locator("#differential")
    expect(differential).to_contain_text("4 of 200 white cells counted")

    # the reviewer gives the unflagged "normal" cell its class: the tile and the differential follow, no reload
    tile = page.locator(f"#cell-{cells[1]}")
    tile.locator(".thumb").click()  # tap the thumbnail: the enlarged cell, one button per class
    tile.locator('button[value="lymphocyte"]').click()
    expect(tile.locator("[data-reviewer]")).to_have_text("lymphocyte")
    tile.locator("[data-close]").click()
    expect(differential.locator('tr[data-class="lymphocyte"] td').nth(1)).to_have_text("1")
    expect(differential.locator('tr[data-class="lymphocyte"] td').nth(2)).to_have_text("25.0 %")
    expect(differential.locator('tr[data-class="normal"] td').nth(1)).to_have_text("1")

    # the two flagged cells need the reviewer's own label (one tap each)
    for cell_id, label in ((cells[2], "blast"), (cells[3], "normal")):
        tile = page.locator(f"#cell-{cell_id}")
        tile.locator(".thumb").click()
        tile.locator(f'button[value="{label}"]').click()
        expect(tile).not_to_have_class(re.compile(r"needs-review"))
        tile.locator("[data-close]").click()

    # accept the AI's label of the one cell left: recorded as accepted, not as the reviewer's own
    page.get_by_role("button", name=re.compile(r"Accept the remaining AI labels \(1\)")).click()
    page.wait_for_load_state()
    expect(page.locator(f"#cell-{cells[0]} [data-reviewer]")).to_have_text("blast (AI accepted)")
    expect(differential.locator(".review-statement")).to_have_text(
        "Of 4 cells (edge cells excluded): 3 labelled by path, 1 accepted as the AI labelled them by path, "
        "0 not reviewed (AI label).")
    assert no_sideways_scroll(page) <= 1
    page.screenshot(path=str(tmp_path / "review-differential-800x480.png"), full_page=True)

    # four white cells are fewer than the minimum of 100: refused in one line ...
    page.fill('textarea[name="conclusion"]', "Blasts present; recount on a new smear.")
    page.get_by_role("button", name="Sign report").click()
    page.wait_for_load_state()
    expect(page.locator("#page-message")).to_have_text(
        "Cannot sign yet: 4 white cells counted; at least 100 needed to sign, or give an override reason.")
    assert re.search(r"/samples/\d+/report/sign$", page.url)
    errors.remove("Failed to load resource: the server responded with a status of 409 (CONFLICT)")  # the refusal
    # ... and signed with an override reason, which the report prints with the differential
    page.fill('textarea[name="override_reason"]', "Only one frame could be taken: slide broken.")
    page.get_by_role("button", name="Sign report").click()
    page.wait_for_url(re.compile(r".*/reports/\d+$"))
    report = page.locator("main")
    expect(report.locator(".override-reason")).to_have_text(
        "Signed with 4 white cells counted (minimum 100, target 200). Override reason: Only one frame could be "
        "taken: slide broken.")
    expect(report.locator("#differential")).to_contain_text("Lymphocytes")
    expect(report.locator("#differential .review-statement")).to_contain_text("1 accepted as the AI labelled them")
    expect(report).not_to_contain_text("needs review")  # every flagged cell was reviewed: the frame says so
    expect(report).to_contain_text("all 2 flagged cell(s) reviewed")
    assert no_sideways_scroll(page) <= 1
    page.screenshot(path=str(tmp_path / "report-override-800x480.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_the_capture_page_shows_the_count_at_800x480(live_server, browser, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    sample_id, _ = seed_sample(tmp_path / "var", "CLN-1415")
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/samples/{sample_id}/capture")
    progress = page.locator("#count-progress")
    expect(progress).to_contain_text("4 of 200 white cells counted")
    expect(progress).to_contain_text("100 needed to sign")
    assert progress.is_visible() and progress.bounding_box()["y"] < PANEL["height"]  # on the first screen
    assert no_sideways_scroll(page) <= 1
    assert not errors, errors
    context.close()
