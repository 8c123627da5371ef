"""Live views cannot take every server thread (issue 13, item 7): at most ui.max_live_streams MJPEG streams at a
time, more are refused with 503 and one line (the page falls back to snapshots), and pages stay served."""

from __future__ import annotations

import time
import urllib.error

import pytest
from conftest import ROLE_USERS, TEST_PASSWORD, Auth
from figures import report

from device.config.schema import AllscopeConfig, CameraSection, UISection


@pytest.fixture
def camera_app(tmp_path):
    from webui.app import create_app

    application = create_app(AllscopeConfig(camera=CameraSection(backend="replay"), ui=UISection(max_live_streams=2)),
                             data_dir=tmp_path / "var", start_workers=True)
    application.testing = True
    with application.app_context():
        from device.services import accounts

        accounts.create_user("tech", TEST_PASSWORD, ROLE_USERS["tech"], actor="test")
    yield application
    application.appliance.stop()


def test_a_third_live_view_is_refused_with_one_line_and_a_closed_one_frees_its_slot(camera_app):
    client = camera_app.test_client()
    Auth(client).login("tech")
    camera_app.appliance.grabber.wait_for_frame(0, timeout=10)
    first = client.get("/camera/live.mjpg", buffered=False)
    second = client.get("/camera/live.mjpg", buffered=False)
    assert first.status_code == second.status_code == 200
    third = client.get("/camera/live.mjpg", buffered=False)
    assert third.status_code == 503
    assert third.get_data(as_text=True) == ("Live view refused: 2 live views are open already (the most at a time); "
                                            "close one, or use the snapshots\n")
    assert client.get("/camera/live.jpg").status_code == 200  # snapshots hold no thread: always served
    first.close()  # the viewer went away
    again = client.get("/camera/live.mjpg", buffered=False)
    assert again.status_code == 200
    again.close()
    second.close()


def test_eight_live_views_on_the_real_server_leave_log_in_and_pages_answering(live_server):
    """waitress with its 8 threads: eight tabs streaming used to make /login time out."""
    from webui.bench.web import Client

    viewers, streams, refused = [], [], 0
    try:
        for _ in range(8):
            viewer = Client(live_server, timeout=10)
            viewer.login("tech", TEST_PASSWORD)
            viewers.append(viewer)
            try:
                stream = viewer.opener.open(live_server + "/camera/live.mjpg", timeout=10)
                assert stream.status == 200 and stream.read(7) == b"--frame"
                streams.append(stream)
            except urllib.error.HTTPError as error:
                assert error.code == 503 and error.read().startswith(b"Live view refused: 2 live views are open")
                error.close()
                refused += 1
        assert (len(streams), refused) == (2, 6)
        started = time.monotonic()
        newcomer = Client(live_server, timeout=5)
        assert newcomer.get("/login")[0] == 200
        newcomer.login("path", TEST_PASSWORD)
        assert newcomer.get("/")[0] == 200
        report("live views refused while pages stayed served", refused)
        assert time.monotonic() - started < 5
    finally:
        for stream in streams:
            stream.close()
