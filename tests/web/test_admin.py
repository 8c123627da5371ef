"""Admin pages with the real app: users and roles, lock-out rules, settings, status, audit trail, role walls."""

from __future__ import annotations

import json

import pytest
from admin_helpers import admin, events, post, user  # noqa: F401  (admin: a fixture)
from conftest import REPO_ROOT, TEST_PASSWORD, Auth, csrf_from

from device.services import account_rules
from device.services.accounts import AccountError
from device.store.records import Setting, User

NEW_PASSWORD = "another-secret-77"


def admin_paths(app, user_id: int) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin."):
            with app.test_request_context():
                url = app.url_for(rule.endpoint, **({"user_id": user_id} if "user_id" in rule.arguments else {}))
            out += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


# --- who may see what ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["tech", "path"])
def test_clinical_roles_get_403_on_every_admin_page_and_action(app, client, auth, role):
    auth.login(role)
    token = csrf_from(client.get("/").get_data(as_text=True))
    paths = admin_paths(app, user(app, "chief").id)
    assert len(paths) >= 8
    for method, url in paths:
        response = client.open(url, method=method, headers={"X-CSRFToken": token} if method != "GET" else {})
        assert response.status_code == 403, (method, url)
        assert "Your role does not allow" in response.get_data(as_text=True)
    assert not user(app, "chief").disabled


def test_admin_only_user_gets_403_on_clinical_pages_and_no_clinical_nav(app, admin):
    assert admin.get("/").status_code == 403
    nav = admin.get("/admin/status").get_data(as_text=True).split('class="mainnav"')[1].split("</nav>")[0]
    assert ">Admin<" in nav and "Patients" not in nav and "Capture" not in nav


def test_admin_who_is_also_a_pathologist_sees_both(app, client, auth):
    auth.login("chief")
    assert client.get("/admin/users").status_code == 200
    assert client.get("/").status_code == 200


def test_anonymous_is_sent_to_login(client):
    response = client.get("/admin/status")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- users -------------------------------------------------------------------------------------------------------

def test_admin_creates_a_user_who_can_then_log_in(app, admin):
    response = post(admin, "/admin/users", {"username": "Nurse.Ada", "full_name": "Ada Lovelace",
                                            "roles": ["technician"], "password": NEW_PASSWORD,
                                            "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "User nurse.ada created (technician)" in page and "Ada Lovelace" in page
    created = user(app, "nurse.ada")
    assert created.role_set == {"technician"} and not created.disabled
    [event] = events(app, action="create", entity="user", entity_id=str(created.id))
    assert event.username == "admin" and event.after == {"username": "nurse.ada", "roles": ["technician"]}
    fresh = app.test_client()
    assert Auth(fresh).login("nurse.ada", NEW_PASSWORD).status_code == 302


CREATE_ERRORS = [
    ({"username": "bob", "roles": ["technician"], "password": NEW_PASSWORD, "confirm": "something-else-1"},
     "The two passwords differ."),
    ({"username": "bob", "roles": ["technician"], "password": "short", "confirm": "short"},
     "Use at least 10 characters."),
    ({"username": "bob", "roles": ["technician"], "password": "aaaaaaaaaaaa", "confirm": "aaaaaaaaaaaa"},
     "Password too simple"),
    ({"username": "bob", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "Choose at least one role."),
    ({"username": "bob", "roles": ["surgeon"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
     "is not a valid choice"),
    ({"username": "B o b", "roles": ["technician"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
     "Username must be 2-64 characters"),
    ({"username": "tech", "roles": ["technician"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
     "User &#39;tech&#39; already exists."),
]


def test_create_user_errors_are_shown_next_to_the_field_and_create_nothing(app, admin):
    before = len(events(app))
    for data, message in CREATE_ERRORS:
        response = post(admin, "/admin/users", data)
        assert response.status_code == 400
        page = response.get_data(as_text=True)
        errors = [part.split("</span>")[0] for part in page.split('class="field-error"')[1:]]
        assert len(errors) == 1 and message in errors[0], (message, errors)
        assert "Traceback" not in page
    with app.app_context():
        assert User.select().count() == 4
    assert len(events(app)) == before


def test_admin_changes_roles_and_it_is_audited(app, admin):
    tech = user(app, "tech")
    response = post(admin, f"/admin/users/{tech.id}/roles", {f"u{tech.id}-roles": ["technician", "pathologist"]})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"#user-{tech.id}")
    assert user(app, "tech").role_set == {"technician", "pathologist"}
    [event] = events(app, action="update", entity="user", entity_id=str(tech.id))
    assert event.username == "admin"
    assert event.before == {"roles": ["technician"]} and event.after == {"roles": ["technician", "pathologist"]}
    # no role at all is refused next to the check boxes
    response = post(admin, f"/admin/users/{tech.id}/roles", {})
    assert response.status_code == 400 and "Choose at least one role." in response.get_data(as_text=True)
    assert user(app, "tech").role_set == {"technician", "pathologist"}


def test_disabling_a_user_ends_their_session_and_login_and_enabling_restores_them(app, admin):
    tech_client = app.test_client()
    Auth(tech_client).login("tech")
    assert tech_client.get("/").status_code == 200
    tech = user(app, "tech")
    assert post(admin, f"/admin/users/{tech.id}/disable").status_code == 302
    assert user(app, "tech").disabled
    assert tech_client.get("/").status_code == 302  # logged out on the next request
    response = Auth(app.test_client()).login("tech")
    assert response.status_code == 401 and "disabled" in response.get_data(as_text=True)
    assert post(admin, f"/admin/users/{tech.id}/enable").status_code == 302
    assert Auth(app.test_client()).login("tech").status_code == 302
    actions = [e.action for e in events(app, entity="user", entity_id=str(tech.id)) if e.username == "admin"]
    assert actions == ["disable", "enable"]


def test_admin_resets_a_password(app, admin):
    path = user(app, "path")
    response = post(admin, f"/admin/users/{path.id}/password",
                    {f"p{path.id}-password": NEW_PASSWORD, f"p{path.id}-confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert Auth(app.test_client()).login("path", TEST_PASSWORD).status_code == 401
    assert Auth(app.test_client()).login("path", NEW_PASSWORD).status_code == 302
    [event] = events(app, action="password", entity_id=str(path.id))
    assert event.username == "admin" and "hash" not in json.dumps(event.after or {})
    mismatch = post(admin, f"/admin/users/{path.id}/password",
                    {f"p{path.id}-password": NEW_PASSWORD, f"p{path.id}-confirm": "not-the-same-1"})
    assert mismatch.status_code == 400
    page = mismatch.get_data(as_text=True)
    assert "The two passwords differ." in page and f'id="user-{path.id}"' in page and "<details open>" in page


def test_admin_cannot_disable_themself_or_drop_their_own_admin_role(app, admin):
    me = user(app, "admin")
    response = post(admin, f"/admin/users/{me.id}/disable")
    assert response.status_code == 409
    assert "You cannot disable your own account." in response.get_data(as_text=True)
    response = post(admin, f"/admin/users/{me.id}/roles", {f"u{me.id}-roles": ["pathologist"]})
    assert response.status_code == 400
    assert "You cannot remove your own admin role" in response.get_data(as_text=True)
    assert not user(app, "admin").disabled and user(app, "admin").role_set == {"admin"}
    # adding a role to oneself while keeping admin is fine
    assert post(admin, f"/admin/users/{me.id}/roles", {f"u{me.id}-roles": ["admin", "pathologist"]}).status_code == 302


def test_the_last_active_admin_can_never_be_disabled_or_demoted(app, admin):
    chief = user(app, "chief")
    assert post(admin, f"/admin/users/{chief.id}/roles", {f"u{chief.id}-roles": ["pathologist"]}).status_code == 302
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "You cannot disable your own account." in page  # admin is now the only admin: no button for it
    with app.app_context():
        last = User.get(User.username == "admin")
        for attempt in (lambda: account_rules.set_enabled(last, False, "cli:root"),
                        lambda: account_rules.change_roles(last, ["technician"], "cli:root")):
            with pytest.raises(AccountError, match="last active administrator"):
                attempt()
        # once a second admin exists, the first may be demoted by someone else
        account_rules.change_roles(User.get(User.username == "chief"), ["admin"], "cli:root")
        account_rules.change_roles(last, ["technician"], "cli:root")
        assert account_rules.active_admin_ids() == {chief.id}
        # a disabled admin does not count as an active one
        account_rules.set_enabled(User.get(User.username == "tech"), False, "cli:root")
        with pytest.raises(AccountError, match="last active administrator"):
            account_rules.set_enabled(User.get(User.username == "chief"), False, "cli:root")


def test_unknown_user_is_404(admin):
    assert post(admin, "/admin/users/9999/disable").status_code == 404


# --- settings ----------------------------------------------------------------------------------------------------

def settings_form(client, **changes) -> dict:
    page = client.get("/admin/settings").get_data(as_text=True)
    form = {"csrf_token": csrf_from(page), "threshold": "0.5", "review_low": "0.25", "review_high": "0.75",
            "camera_kind": "replay", "camera_source": "", "model_path": "", "idle_minutes": "10",
            "max_upload_mb": "64"}
    form.update(changes)
    return form


def test_settings_save_applies_and_audits(app, admin):
    response = admin.post("/admin/settings", data=settings_form(admin, threshold="0.45", idle_minutes="5",
                                                                model_path=str(REPO_ROOT / "models" /
                                                                               "allscope_blast_int8.tflite")))
    assert response.status_code == 302
    page = admin.get("/admin/settings").get_data(as_text=True)
    assert "Settings saved. Model and camera changes take effect when the device restarts." in page
    assert 'value="0.45"' in page
    assert app.appliance.settings.idle_minutes == 5
    [event] = events(app, entity="settings")
    assert event.username == "admin" and event.address == "127.0.0.1"
    assert set(event.after) == {"threshold", "idle_minutes", "model_path"} and event.before["threshold"] == 0.5
    # a restarted app picks the stored values up
    from webui.app import create_app

    again = create_app(data_dir=app.appliance.data.root, start_workers=False)
    assert again.appliance.settings.idle_minutes == 5
    assert again.appliance.model_path.name == "allscope_blast_int8.tflite"
    assert again.appliance.settings.model_path.endswith("allscope_blast_int8.tflite")  # the stored setting


def test_settings_errors_name_the_field_and_save_nothing(app, admin):
    response = admin.post("/admin/settings", data=settings_form(admin, threshold="0.45", idle_minutes="500",
                                                                model_path="/nowhere/model.tflite"))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert">Idle logout (minutes): must be between 1 and 120' in page
    assert 'role="alert">Model file: /nowhere/model.tflite: model file not found' in page
    assert "Nothing was saved" in page and 'value="0.45"' in page  # what was typed stays in the form
    response = admin.post("/admin/settings", data=settings_form(admin, review_low="0.6"))
    assert "Review band, low end: must not be above the decision threshold (0.5)" in response.get_data(as_text=True)
    with app.app_context():
        assert Setting.select().where(Setting.updated_by != "test").count() == 0  # only the test database's own
    assert events(app, entity="settings") == []
    assert app.appliance.settings.idle_minutes == 10


# --- web load benchmark (a smoke run: the numbers are printed, never asserted) ---------------------------------

def test_web_bench_smoke_run_prints_figures_and_returns_them(app, tmp_path, capsys):
    from webui.bench.web import DEFAULT_PAGES, Page, run_web_bench

    pages = DEFAULT_PAGES + (Page("not built", "nowhere.page"),)
    report = run_web_bench(clients=2, duration_s=2, pages=pages, patients=12, json_path=tmp_path / "web.json")
    printed = capsys.readouterr().out
    assert "p95 ms" in printed and "server peak RSS" in printed and "skipped not built" in printed
    assert report == json.loads((tmp_path / "web.json").read_text())
    assert report["clients"] == 2 and report["client_roles"] == {"technician": 1, "admin": 1}
    assert report["error_count"] == 0, report["errors"]
    assert report["pages"]["admin status"]["requests"] > 0 and report["pages"]["patient list"]["requests"] > 0
    assert report["overall"]["requests"] == sum(p["requests"] for p in report["pages"].values())
    assert "review queue" in report["skipped"]  # no pathologist among two clients
    assert report["server"]["peak_rss_mb"] > 0 and report["data"]["patients"] == 12
    with app.app_context():  # the caller's database is bound again afterwards
        assert User.select().count() == 4


def test_running_services_are_told_about_a_save_and_a_failure_to_apply_is_one_line(app, admin):
    seen = []
    app.appliance.listeners[:] = [lambda settings, changed: seen.append(changed)]
    admin.post("/admin/settings", data=settings_form(admin, threshold="0.4"))
    assert seen == [{"threshold"}]
    assert "Settings saved." in admin.get("/admin/settings").get_data(as_text=True)

    def broken(settings, changed):
        raise RuntimeError("camera\nunplugged")

    app.appliance.listeners[:] = [broken]
    response = admin.post("/admin/settings", data=settings_form(admin, threshold="0.4", camera_kind="opencv"))
    assert response.status_code == 302
    page = admin.get("/admin/settings").get_data(as_text=True)
    assert "Settings saved, but applying them failed (camera unplugged): restart the device." in page
    with app.app_context():
        assert Setting.get_by_id("camera_kind").value == "opencv"
