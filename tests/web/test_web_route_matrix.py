"""The role × route matrix: every route of the URL map, for a stranger, a clinician, a researcher and an
admin, is allowed or refused exactly as ``ROUTE_ACTIONS`` (which action a route needs) and
``ROLE_ACTIONS`` (what each role may do) say. A route without a rule fails here (and is refused to
everyone by the app).

Requests carry ids that do not exist and empty bodies: an allowed role gets past the permission check
and is answered by the view (404, 400, 415, a page); a refused one is answered 403 (a stranger: 401 from
the API, the sign-in page from the dashboard) before the view runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from werkzeug.routing import IntegerConverter, PathConverter, Rule

from services.web.access import ROLE_ACTIONS
from services.web.route_access import PUBLIC, ROUTE_ACTIONS

from .conftest import PASSWORD, WEB_REDIS_URL, sign_in

ROLES = ("anonymous", "clinician", "researcher", "admin")
SKIPPED = {"static"}  # Flask's own file route: public, no view of ours
METHODS_CHECKED = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """One app for the whole matrix: a user per role, each with a token and a signed-in dashboard client."""
    import redis

    from bmcore.accounts import create_token, create_user
    from bmcore.config import get_settings
    from bmcore.db import User, dispose_engines, session_factory
    from services.web import create_app

    client = redis.Redis.from_url(WEB_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis unreachable at {WEB_REDIS_URL} ({exc}); set BMSEG_TEST_WEB_REDIS_URL")
    client.flushdb()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT"):
            patch.delenv(name, raising=False)
        patch.setenv("BMSEG_DATA_DIR", str(tmp_path_factory.mktemp("matrix") / "data"))
        patch.setenv("BMSEG_REDIS_URL", WEB_REDIS_URL)
        patch.setenv("BMSEG_ENV", "test")
        get_settings.cache_clear()
        app = create_app({"TESTING": True})
        tokens, emails = {}, {}
        with session_factory(app.config["DATABASE_URL"])() as session:
            for role in ROLES[1:]:
                user = create_user(session, f"{role}@example.org", PASSWORD, is_admin=role == "admin")
                session.get(User, user.id).role = role
                session.commit()
                emails[role] = user.email
                tokens[role] = create_token(session, user.email, "matrix")
        clients = {role: app.test_client() for role in ROLES}
        for role in ROLES[1:]:
            assert sign_in(clients[role], emails[role]).status_code == 303
        yield SimpleNamespace(app=app, tokens=tokens, emails=emails, clients=clients)
        get_settings.cache_clear()
        dispose_engines()
    client.flushdb()
    client.close()


def placeholder_url(app, rule: Rule) -> str:
    """The rule's URL with ids that exist nowhere (an int, a word, a file name)."""
    values = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        values[name] = (
            999999
            if isinstance(converter, IntegerConverter)
            else "nope.txt"
            if isinstance(converter, PathConverter)
            else "nope"
        )
    return app.url_map.bind("localhost").build(rule.endpoint, values)


def is_refusal(response, role: str, api: bool) -> bool:
    """Whether the app refused the request before the view: 403 from the role check (the only 403 a
    request with placeholder ids can get); for a stranger 401 from the API, the sign-in page from the
    dashboard (401 JSON for its .json and .png routes)."""
    if role != "anonymous":
        body = response.get_json(silent=True) or {}
        return response.status_code == 403 and "may not" in body.get("error", response.text)
    if api:
        challenge = response.headers.get("WWW-Authenticate", "")
        return response.status_code == 401 and challenge.startswith("Bearer")
    location = response.headers.get("Location", "")
    return (response.status_code == 302 and "/sign-in" in location) or (
        response.status_code == 401 and response.get_json(silent=True) == {"error": "sign in first"}
    )


def send(matrix, role: str, rule: Rule, method: str):
    url = placeholder_url(matrix.app, rule)
    api = rule.rule.startswith("/api/")
    if api:
        client = matrix.app.test_client()
        headers = {"Authorization": f"Bearer {matrix.tokens[role]}"} if role != "anonymous" else {}
    else:
        client = matrix.clients[role]
        if rule.endpoint == "dashboard.sign_out" and role != "anonymous":
            client = matrix.app.test_client()  # signing out must not end the shared session
            sign_in(client, matrix.emails[role])
        headers = {"X-CSRF-Token": client.csrf} if role != "anonymous" and method != "GET" else {}
    return client.open(url, method=method, headers=headers), api


def test_every_route_has_a_rule(matrix):
    """Each endpoint of the URL map is in ROUTE_ACTIONS with a known action, and the table lists no route
    that is gone."""
    endpoints = {rule.endpoint for rule in matrix.app.url_map.iter_rules()}
    assert sorted(endpoints - set(ROUTE_ACTIONS)) == [], "routes without a rule in ROUTE_ACTIONS"
    assert sorted(set(ROUTE_ACTIONS) - endpoints) == [], "rules for routes that do not exist"
    known = set().union(*ROLE_ACTIONS.values()) | {PUBLIC}
    assert {e: a for e, a in ROUTE_ACTIONS.items() if a not in known} == {}


@pytest.mark.parametrize("endpoint", sorted(set(ROUTE_ACTIONS) - SKIPPED))
@pytest.mark.parametrize("role", ROLES)
def test_role_route_matrix(matrix, endpoint, role):
    action = ROUTE_ACTIONS[endpoint]
    allowed = action == PUBLIC or (role != "anonymous" and action in ROLE_ACTIONS[role])
    rules = [rule for rule in matrix.app.url_map.iter_rules() if rule.endpoint == endpoint]
    assert rules, f"{endpoint} is in ROUTE_ACTIONS but not in the URL map"
    for rule in rules:
        for method in sorted(set(rule.methods or ()) & set(METHODS_CHECKED)):
            response, api = send(matrix, role, rule, method)
            where = f"{role} {method} {rule.rule} ({action}): {response.status_code} {response.text[:200]}"
            if allowed:
                assert not is_refusal(response, role, api) and response.status_code != 403, where
                assert response.status_code < 500 or response.status_code == 503, where
            else:
                assert is_refusal(response, role, api), where


def test_a_route_without_a_rule_is_refused_to_everyone(matrix):
    """Fail closed: a route the table does not know answers 403, to an admin too."""
    from flask import Blueprint

    from services.web import create_app
    from services.web.route_access import init_route_access

    app = create_app({"TESTING": True})
    app.add_url_rule("/unlisted", "unlisted", lambda: "reached")
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/extra/unlisted", "unlisted", lambda: "reached")
    app.register_blueprint(extra)
    init_route_access(app, [extra])
    client = app.test_client()
    for path in ("/unlisted", "/extra/unlisted"):
        response = client.get(path)
        assert response.status_code == 403 and "no permission rule" in response.text, path
    assert client.get("/healthz").status_code in (200, 503)  # a listed public route still answers


def test_a_role_refused_an_action_gets_403_naming_who_may(matrix, monkeypatch):
    """The check reads the table at request time: a route made admin-only refuses the others."""
    monkeypatch.setitem(ROUTE_ACTIONS, "api.list_studies", "manage")
    headers = {"Authorization": f"Bearer {matrix.tokens['researcher']}"}
    refused = matrix.app.test_client().get("/api/v1/studies", headers=headers)
    assert refused.status_code == 403
    assert refused.json == {"error": "your role (researcher) may not manage; that needs: admin"}
    admin = {"Authorization": f"Bearer {matrix.tokens['admin']}"}
    assert matrix.app.test_client().get("/api/v1/studies", headers=admin).status_code == 200
    page = matrix.clients["clinician"].get("/studies")
    assert page.status_code == 200  # the dashboard's own route keeps its rule
    monkeypatch.setitem(ROUTE_ACTIONS, "dashboard.studies", "train")
    page = matrix.clients["clinician"].get("/studies")
    assert page.status_code == 403 and "may not train" in page.text
    assert matrix.clients["researcher"].get("/studies").status_code == 200


def test_the_matrix_covers_every_role_in_the_table():
    assert set(ROLES[1:]) == set(ROLE_ACTIONS)
