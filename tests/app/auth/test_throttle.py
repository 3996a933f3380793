"""Sign-in throttling (app/auth/throttle.py): backoff per account and per client address,
refusals before the password is checked, and never a lockout that outlasts the longest delay."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from app.auth.throttle import LoginThrottle, TooManySignIns
from app.models import Role
from tests.conftest import TEST_PASSWORD, MakeAccount, post_login


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_beyond_the_free_ones_close_the_account_with_a_doubling_delay() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=3, base_delay=2, max_delay=60, clock=clock)
    for _ in range(3):
        throttle.check("Ann", "1.1.1.1")
        throttle.failed("Ann", "1.1.1.1")
    throttle.check("ann", "2.2.2.2")  # three failures are free
    throttle.failed("ann", "2.2.2.2")  # the fourth closes the account for 2 s
    with pytest.raises(TooManySignIns, match="try again in 2 s"):
        throttle.check("ann", "3.3.3.3")  # from any address
    clock.now += 2.5
    throttle.check("ann", "3.3.3.3")
    throttle.failed("ann", "3.3.3.3")  # the fifth: 4 s
    with pytest.raises(TooManySignIns, match="4 s"):
        throttle.check("ann", "3.3.3.3")
    throttle.check("bob", "4.4.4.4")  # other accounts from other addresses are not affected


def test_one_address_guessing_many_accounts_is_closed_too() -> None:
    throttle = LoginThrottle(free=2, base_delay=5, clock=Clock())
    for name in ("a", "b", "c"):
        throttle.failed(name, "6.6.6.6")
    with pytest.raises(TooManySignIns):
        throttle.check("d", "6.6.6.6")
    throttle.check("d", "7.7.7.7")


def test_delays_are_capped_and_forgotten_and_success_opens_the_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=1, base_delay=2, max_delay=60, clock=clock)
    for _ in range(30):
        throttle.failed("ann", "1.1.1.1")
    with pytest.raises(TooManySignIns, match="60 s"):
        throttle.check("ann", "9.9.9.9")
    clock.now += 61  # never longer than the longest delay
    throttle.check("ann", "9.9.9.9")
    throttle.failed("ann", "9.9.9.9")  # a fresh count: the first failure is free again
    throttle.check("ann", "9.9.9.9")
    throttle.failed("ann", "9.9.9.9")
    throttle.succeeded("ann", "9.9.9.9")
    throttle.check("ann", "9.9.9.9")


def test_a_closed_key_is_logged_once_per_closing_not_once_per_refusal() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=1, base_delay=10, clock=clock)
    throttle.failed("ann", "1.1.1.1")
    throttle.failed("ann", "1.1.1.1")  # closed for 10 s

    with capture_logs() as logs:
        for _ in range(50):
            with pytest.raises(TooManySignIns):
                throttle.check("ann", "1.1.1.1")
        clock.now += 11
        throttle.failed("ann", "1.1.1.1")  # closed again, for 20 s
        for _ in range(50):
            with pytest.raises(TooManySignIns):
                throttle.check("ann", "1.1.1.1")

    refusals = [entry for entry in logs if entry["event"] == "auth.login.throttled"]
    assert [entry["wait"] for entry in refusals] == [10, 20]


def _login(client: TestClient, username: str, password: str) -> int:
    return post_login(client, username, password).status_code


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_login_form_refuses_a_guesser_before_checking_the_password(
    app: FastAPI, make_account: MakeAccount
) -> None:
    clock = Clock()
    app.state.login_throttle = LoginThrottle(free=5, base_delay=30, refusal_delay=0, clock=clock)
    account = make_account(Role.ANNOTATOR)
    name = account.user.username
    with TestClient(app) as client:
        statuses = [_login(client, name, "wrong password") for _ in range(6)]
        refused = _login(client, name, TEST_PASSWORD)  # right, but the account is closed
        clock.now += 31
        allowed = _login(client, name, TEST_PASSWORD)

    assert statuses == [401] * 6
    assert refused == 429
    assert allowed == 303


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_refusal_is_held_before_it_is_answered_and_says_when_to_retry(
    app: FastAPI, make_account: MakeAccount
) -> None:
    """A guesser that retries the moment it is refused gets a few answers a second, not
    hundreds: each refusal waits ``refusal_delay`` first."""
    app.state.login_throttle = LoginThrottle(free=0, base_delay=30, refusal_delay=0.3)
    name = make_account(Role.ANNOTATOR).user.username
    with TestClient(app) as client:
        assert _login(client, name, "wrong password") == 401  # closes the account for 30 s
        started = time.monotonic()
        refused = post_login(client, name, "wrong again")
        held = time.monotonic() - started

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"
    assert "try again in 30 s" in refused.text
    assert held >= 0.3
