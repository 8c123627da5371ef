"""Helpers of the admin page tests: a logged-in admin, users and audit events, posting a form with its token."""

from __future__ import annotations

import pytest
from conftest import csrf_from

from device.store.records import AuditEvent, User


def user(app, name: str) -> User:
    with app.app_context():
        return User.get(User.username == name)


def events(app, **where) -> list[AuditEvent]:
    with app.app_context():
        query = AuditEvent.select().order_by(AuditEvent.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEvent, key) == value)
        return list(query)


def post(client, url: str, data: dict | None = None, page: str = "/admin/users"):
    token = csrf_from(client.get(page).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **(data or {})})


@pytest.fixture
def admin(client, auth):
    assert auth.login("admin").status_code == 302
    return client
