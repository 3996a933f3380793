"""Password checks (app/auth/password_checks.py): one at a time, at low priority, and a bounded
queue, so a flood of sign-ins cannot take the annotators' CPU."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.password_checks import NICENESS, PasswordChecks, SignInsBusy
from app.models import Role
from tests.conftest import TEST_PASSWORD, MakeAccount, post_login


def _thread_niceness() -> tuple[int, int]:
    return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice per thread is Linux's")
def test_checks_run_one_at_a_time_on_one_thread_of_lower_priority() -> None:
    checks = PasswordChecks()

    async def both() -> list[tuple[int, int]]:
        return await asyncio.gather(checks.run(_thread_niceness), checks.run(_thread_niceness))

    try:
        (first, second) = asyncio.run(both())
    finally:
        checks.shutdown()
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert first[0] == second[0] != threading.get_native_id()
    assert first[1] == min(19, own + NICENESS)


def test_beyond_the_waiting_limit_a_check_is_refused_at_once() -> None:
    checks = PasswordChecks(max_waiting=1)
    release = threading.Event()

    async def crowd() -> tuple[bool, BaseException | None]:
        slow = asyncio.ensure_future(checks.run(release.wait, 10))
        await asyncio.sleep(0.05)  # the slow one is waiting or running
        try:
            await checks.run(lambda: True)
        except SignInsBusy as exc:
            refused: BaseException | None = exc
        else:
            refused = None
        release.set()
        return await slow, refused

    try:
        finished, refused = asyncio.run(crowd())
    finally:
        checks.shutdown()
    assert finished is True
    assert isinstance(refused, SignInsBusy)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sign_in_refused_for_a_full_queue_is_a_503_that_costs_the_user_nothing(
    app: FastAPI, make_account: MakeAccount
) -> None:
    """The refusal says when to retry and does not count as a failed sign-in."""
    default_checks = app.state.password_checks
    name = make_account(Role.ANNOTATOR).user.username
    with TestClient(app) as client:
        app.state.password_checks = PasswordChecks(max_waiting=0)
        busy = [post_login(client, name, TEST_PASSWORD) for _ in range(10)]
        app.state.password_checks.shutdown()
        app.state.password_checks = default_checks
        signed_in = post_login(client, name, TEST_PASSWORD)

    assert {response.status_code for response in busy} == {503}
    assert all(response.headers["Retry-After"] == "5" for response in busy)
    assert signed_in.status_code == 303
