"""Issue 14 in the real Chromium at 800×480 (the kiosk's panel), against `allscope serve` as a real process:
the technician's view, forms that keep input, and a kiosk with a way back.

Records a test needs (a frame the quality gate refused, a signed report) are written into the server's own
database by an in-process app on the same data directory, through the same helpers as the Flask tests; every
action under test is done in the browser.
"""

from __future__ import annotations

import re

import pytest
from browser_kit import PANEL, assert_fits_panel, needs_chromium
from browser_kit import login as _login
from browser_kit import new_page as _page
from conftest import TEST_PASSWORD, serve
from review_data import STANDARD_CELLS, add_capture, add_sample

from device.core.quality import ADVICE
from device.store.records import Capture, Patient, Sample, db_proxy

pytestmark = needs_chromium


def unexpected(errors: list[str], status: int) -> list[str]:
    """The console errors besides the refused form's own answer (a 400 page is what the test asks for)."""
    return [e for e in errors if f"status of {status}" not in e]


def expect():
    return pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def records(live_server, tmp_path):
    """An in-process app on the live server's data directory, to write the records a test starts from."""
    from webui.app import create_app

    app = create_app(data_dir=tmp_path / "var", start_workers=False)
    yield app
    app.appliance.stop()


def _signed_report(app) -> tuple[int, int]:
    """(sample id, report id) of a report signed by "path"."""
    from device.services import signoff

    sample_id, _ = add_sample(app, cells=STANDARD_CELLS[:2])
    with app.app_context():
        report = signoff.sign(Sample.get_by_id(sample_id), "No blasts seen.", username="path",
                              override_reason="Test sample of two cells.")
    return sample_id, report.id


def test_capture_page_says_why_a_frame_is_unusable_and_a_technician_discards_it(live_server, records, browser):
    sample_id, _ = add_sample(records)
    add_capture(records, sample_id, [])
    with records.app_context(), db_proxy.atomic():
        empty = Capture.select().where(Capture.sample == sample_id).order_by(Capture.id.desc()).first().id
        Capture.update(flag="unusable_image", quality={"usable": False, "problems": ["empty field"]}
                       ).where(Capture.id == empty).execute()
    context, page, errors = _page(browser, PANEL)
    page.on("dialog", lambda dialog: dialog.accept())  # "Discard frame #N?"
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/samples/{sample_id}/capture")
    item = page.locator(f'.capture-item[data-capture-id="{empty}"]')
    expect()(item.locator('[data-field="advice"]')).to_contain_text("Unusable: empty field")
    expect()(item.locator('[data-field="advice"]')).to_contain_text(ADVICE["empty field"])
    item.get_by_role("button", name="Discard frame").click()
    page.wait_for_load_state()
    expect()(page.locator(".flash").first).to_contain_text(f"Frame #{empty} discarded")
    expect()(page.locator(f'.capture-item[data-capture-id="{empty}"]')).to_have_attribute("data-status", "discarded")
    with records.app_context():
        assert Capture.get_by_id(empty).status == "discarded"
    assert not errors, errors
    context.close()


def test_technician_sees_outlined_frames_and_cells_read_only_and_who_is_logged_in(live_server, records, browser):
    sample_id, cells = add_sample(records)
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    expect()(page.locator("#who .who-name")).to_be_visible()  # who is logged in, at 800 px too
    expect()(page.locator("#who .who-name")).to_have_text("tech")
    page.goto(f"{live_server}/samples/{sample_id}")
    assert page.get_by_role("link", name="Report", exact=True).count() == 0  # no report yet: no dead end
    page.get_by_role("link", name="Results").click()
    page.wait_for_url(re.compile(rf".*/samples/{sample_id}/results$"))
    expect()(page.locator("svg.rs-overlay rect")).to_have_count(len(cells))
    assert page.locator("svg.rs-overlay rect").first.bounding_box()["width"] > 0  # drawn over the frame
    expect()(page.locator("article.rs-cell")).to_have_count(len(cells))
    assert page.locator("button.label-btn").count() == 0 and page.get_by_role("button", name="Sign report").count() == 0
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"results page scrolls sideways by {overflow}px at 800x480"
    assert not errors, errors
    context.close()


def test_identifier_differing_in_case_is_refused_and_decimal_comma_is_typed(live_server, browser):
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/patients/new")
    page.fill('input[name="identifier"]', "mrn-2024-0117")
    page.fill('input[name="name"]', "Ana First")
    page.locator('input[name="wbc"]').press_sequentially("48,5")  # as typed on the on-screen keyboard
    assert page.input_value('input[name="wbc"]') == "48,5"
    page.get_by_role("button", name="Register patient").click()
    page.wait_for_load_state()
    expect()(page.locator("main")).to_contain_text("48.5")
    page.goto(f"{live_server}/patients/new")
    page.fill('input[name="identifier"]', "MRN-2024-0117")
    page.fill('input[name="name"]', "Ben Second")
    page.get_by_role("button", name="Register patient").click()
    page.wait_for_load_state()
    expect()(page.locator("#identifier-error")).to_contain_text("already registered to another patient")
    assert page.input_value('input[name="name"]') == "Ben Second"  # kept
    assert not unexpected(errors, 400), errors
    context.close()


@pytest.fixture
def empty_server(tmp_path):
    """`allscope serve` on a data directory without any account: /setup is open."""
    yield from serve(tmp_path / "fresh", tmp_path / "fresh-server.log")


def test_setup_keeps_what_was_typed_and_shows_every_error(empty_server, browser):
    context, page, errors = _page(browser, PANEL)
    page.goto(empty_server + "/setup")
    page.fill('input[name="username"]', "Dr Boss")
    page.fill('input[name="full_name"]', "Ana Boss")
    page.fill('input[name="password"]', "short")
    page.fill('input[name="password_again"]', "different")
    page.check('input[name="roles"][value="pathologist"]')
    page.get_by_role("button", name="Create administrator").click()
    page.wait_for_load_state()
    summary = page.locator("#error-summary")
    expect()(summary).to_be_visible()
    expect()(summary.locator("li")).to_have_count(3)
    assert summary.bounding_box()["y"] < PANEL["height"]  # at the top, seen without scrolling
    assert page.input_value('input[name="username"]') == "Dr Boss"
    assert page.input_value('input[name="full_name"]') == "Ana Boss"
    assert page.input_value('input[name="password"]') == ""  # never sent back
    assert page.is_checked('input[name="roles"][value="pathologist"]')
    for name in ("username", "password", "password_again"):
        expect()(page.locator(f"#{name}-error")).to_be_visible()
    summary.get_by_role("link", name="Password again").click()
    page.fill('input[name="username"]', "boss")
    page.fill('input[name="password"]', TEST_PASSWORD)
    page.fill('input[name="password_again"]', TEST_PASSWORD)
    page.get_by_role("button", name="Create administrator").click()
    page.wait_for_url(re.compile(r".*/login(#.*)?$"))  # the summary link's #field stays on the redirect
    expect()(page.locator(".flash").first).to_contain_text("Administrator created")
    assert not unexpected(errors, 400), errors
    context.close()


def test_pdf_and_fhir_download_and_the_pdf_viewer_has_a_way_back(live_server, records, browser):
    _, report_id = _signed_report(records)
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    report_url = f"{live_server}/reports/{report_id}"
    page.goto(report_url)
    with page.expect_download() as pdf:
        page.get_by_role("link", name="Download PDF").click()
    assert pdf.value.suggested_filename.endswith(".pdf")
    assert page.url == report_url  # still on the report: the kiosk user is not stranded
    with page.expect_download() as fhir:
        page.get_by_role("link", name="Download FHIR JSON").click()
    assert fhir.value.suggested_filename.endswith(".json")
    assert page.url == report_url
    page.get_by_role("link", name="View PDF").click()
    page.wait_for_url(re.compile(rf".*/reports/{report_id}/view$"))
    frame = page.locator("iframe#pdf-frame")
    expect()(frame).to_be_visible()
    assert frame.bounding_box()["height"] >= 200
    assert frame.get_attribute("src") == f"/reports/{report_id}.pdf?inline=1"
    expect()(page.get_by_role("button", name="Print")).to_be_visible()
    expect()(page.locator("#logout-form")).to_be_attached()  # inside the app: idle logout still runs
    page.get_by_role("link", name="Back to the report").click()
    page.wait_for_url(report_url)
    errors[:] = [e for e in errors if "pdf" not in e.lower()]  # headless Chromium has no PDF plugin
    assert not errors, errors
    context.close()


def _set_idle_minutes(page, base, minutes: int) -> None:
    _login(page, base, "admin")
    page.goto(base + "/admin/settings")
    page.fill('input[name="idle_minutes"]', str(minutes))
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_load_state()
    expect()(page.locator(".flash").first).to_contain_text("Settings saved")
    page.locator("#logout-form button").click()
    page.wait_for_load_state()


def test_idle_warning_counts_down_and_a_half_typed_form_survives_the_logout(live_server, browser):
    context, page, errors = _page(browser, PANEL)
    _set_idle_minutes(page, live_server, 1)
    page.clock.install()  # the page's timers run on a clock the test moves: no waiting
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/patients/new")
    page.fill('input[name="identifier"]', "DRAFT-7")
    page.fill('input[name="name"]', "Half Typed")
    page.fill('input[name="wbc"]', "7,5")
    page.clock.fast_forward(31_000)  # the last minute's final half: the warning
    warning = page.locator("#idle-warning")
    expect()(warning).to_be_visible()
    first = int(re.search(r"in (\d+) second", warning.inner_text()).group(1))
    page.clock.fast_forward(5_000)
    later = int(re.search(r"in (\d+) second", warning.inner_text()).group(1))
    assert 0 < later < first <= 30
    warning.get_by_role("button", name="Stay logged in").click()
    expect()(warning).to_be_hidden()
    page.clock.fast_forward(61_000)  # nobody touches the screen for a whole minute
    page.wait_for_url(re.compile(r".*/login"))
    expect()(page.locator(".flash").first).to_contain_text("Logged out after a period without activity")
    # the same technician logs in again: the half-typed form is back
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/patients/new")
    expect()(page.locator(".draft-note")).to_contain_text("A draft you had not saved was restored")
    assert page.input_value('input[name="identifier"]') == "DRAFT-7"
    assert page.input_value('input[name="name"]') == "Half Typed"
    assert page.input_value('input[name="wbc"]') == "7,5"
    page.get_by_role("button", name="Register patient").click()
    page.wait_for_load_state()
    expect()(page.locator("main")).to_contain_text("DRAFT-7")
    page.goto(f"{live_server}/patients/new")  # sent and accepted: no draft any more
    assert page.locator(".draft-note").count() == 0 and page.input_value('input[name="name"]') == ""
    assert not errors, errors
    context.close()


def test_another_user_does_not_get_a_draft(live_server, browser):
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/patients/new")
    page.fill('input[name="name"]', "Not For You")
    page.locator('input[name="identifier"]').press_sequentially("X-1")
    page.wait_for_function("() => Object.keys(localStorage).some(k => k.startsWith('allscope-draft:tech:'))")
    page.get_by_role("button", name="Log out").click()  # a deliberate log-out drops them
    page.wait_for_url(re.compile(r".*/login"))
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('allscope-draft:'))") == []
    _login(page, live_server, "path")
    page.goto(f"{live_server}/patients/new")
    assert page.locator(".draft-note").count() == 0 and page.input_value('input[name="name"]') == ""
    assert not errors, errors
    context.close()


def test_two_camera_stills_in_a_row_are_two_frames(live_server, records, browser):
    with records.app_context(), db_proxy.atomic():  # a sample without frames (add_sample stores a demo frame)
        patient = Patient.create(identifier="CAM-1", name="Camera Test")
        sample_id = Sample.create(patient=patient, created_by="tech").id
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    page.goto(f"{live_server}/samples/{sample_id}/capture")
    expect()(page.locator("#camera-status")).to_have_text("Camera: ok", timeout=30_000)
    for _ in range(2):
        page.get_by_role("button", name="Capture", exact=True).click()
        page.wait_for_load_state()
        expect()(page.locator(".flash").first).to_contain_text("analysis queued")
    with records.app_context():
        stills = list(Capture.select().where((Capture.sample == sample_id) & (Capture.source == "camera")))
    assert len(stills) == 2 and stills[0].sha256 != stills[1].sha256
    assert stills[0].camera_meta["file"] != stills[1].camera_meta["file"]
    # a 503 is the live view while the camera starts or while the previous page's stream still holds its slot:
    # the page falls back to snapshots (webui/kit/static/capture.js)
    assert not unexpected(errors, 503), errors
    context.close()


def test_new_pages_fit_the_panel_with_fingertip_buttons(live_server, records, browser):
    sample_id, report_id = _signed_report(records)
    with records.app_context():
        assert Patient.select().count() == 1
    context, page, errors = _page(browser, PANEL)
    _login(page, live_server, "tech")
    for path in (f"/samples/{sample_id}/results", f"/reports/{report_id}/view", f"/samples/{sample_id}/capture"):
        page.goto(live_server + path)
        assert_fits_panel(page, path)
    page.goto(f"{live_server}/samples/{sample_id}/capture")
    file_button = page.locator('input[type="file"]')
    if file_button.count():
        assert file_button.bounding_box()["height"] >= 44
    errors[:] = [e for e in errors if "pdf" not in e.lower()]
    assert not errors, errors
    context.close()
