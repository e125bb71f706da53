"""BMSEG_TRUSTED_PROXIES: the web believes X-Forwarded-Proto/-For/-Host only from the proxies it is told
to trust (docker-compose: 1, the TLS proxy). Behind it, requests are HTTPS and the sign-in throttle counts
each client, not the proxy; without it, a client cannot claim HTTPS or another address by sending them."""

from __future__ import annotations

import pytest
from flask import request

from bmcore.config import ConfigError, get_settings
from services.web.throttle import sign_in_key

from .conftest import PASSWORD, form_csrf

PROXY = "172.18.0.9"  # the proxy container's address, as gunicorn sees it
CLIENT = "203.0.113.7"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bmseg.example.org"}


def _trust(monkeypatch, count: str) -> None:
    monkeypatch.setenv("BMSEG_TRUSTED_PROXIES", count)
    get_settings.cache_clear()


def _seen(app, headers: dict[str, str]) -> dict[str, object]:
    """How the app saw a request to the open /healthz that reached gunicorn from the proxy's address."""
    seen: dict[str, object] = {}

    @app.after_request
    def record(response):
        seen.update(secure=request.is_secure, address=request.remote_addr, host=request.host)
        return response

    app.test_client().get("/healthz", headers=headers, environ_base={"REMOTE_ADDR": PROXY})
    return seen


def _via_proxy(app, client_address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = PROXY
    client.environ_base["HTTP_X_FORWARDED_FOR"] = client_address
    return client


def _fail_sign_in(client, email: str, password: str = "wrong-password") -> int:
    page = client.get("/sign-in")
    data = {"email": email, "password": password, "csrf_token": form_csrf(page.text)}
    return client.post("/sign-in", data=data).status_code


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(make_app):
    seen = _seen(make_app(), {**FORWARDED, "X-Forwarded-For": CLIENT})
    assert seen == {"secure": False, "address": PROXY, "host": "localhost"}


def test_behind_one_trusted_proxy_the_app_sees_https_and_the_client(make_app, monkeypatch):
    _trust(monkeypatch, "1")
    seen = _seen(make_app(), {**FORWARDED, "X-Forwarded-For": CLIENT})
    assert seen == {"secure": True, "address": CLIENT, "host": "bmseg.example.org"}
    # One hop only: what a client wrote in front of the proxy's own entry is not believed.
    seen = _seen(make_app(), {**FORWARDED, "X-Forwarded-For": f"198.51.100.66, {CLIENT}"})
    assert seen["address"] == CLIENT


def test_behind_the_proxy_the_sign_in_throttle_counts_each_client(make_app, monkeypatch, users, web_redis):
    _trust(monkeypatch, "1")
    app = make_app(SIGN_IN_MAX_FAILURES=2)
    attacker = _via_proxy(app, CLIENT)
    assert [_fail_sign_in(attacker, users.alice.email) for _ in range(3)] == [401, 401, 429]
    # alice, from her own address behind the same proxy, is not locked out by the attacker.
    assert _fail_sign_in(_via_proxy(app, "198.51.100.2"), users.alice.email, PASSWORD) == 303
    keys = [key.decode() for key in web_redis.keys("bmseg:sign-in-failures:*")]
    with app.app_context():  # the key names the app's limit
        assert keys == [sign_in_key(users.alice.email, CLIENT)]


def test_without_a_trusted_proxy_a_forged_address_does_not_escape_the_throttle(make_app, users, web_redis):
    app = make_app(SIGN_IN_MAX_FAILURES=2)
    codes = [_fail_sign_in(_via_proxy(app, f"198.51.100.{n}"), users.alice.email) for n in range(3)]
    assert codes == [401, 401, 429]  # counted by the connecting address, whatever the header says
    keys = [key.decode() for key in web_redis.keys("bmseg:sign-in-failures:*")]
    with app.app_context():  # the key names the app's limit
        assert keys == [sign_in_key(users.alice.email, PROXY)]


def test_a_negative_proxy_count_is_refused_by_name(monkeypatch):
    _trust(monkeypatch, "-1")
    with pytest.raises(ConfigError, match="BMSEG_TRUSTED_PROXIES"):
        get_settings()
    get_settings.cache_clear()
