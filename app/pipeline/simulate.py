"""Simulated annotators: they review a dataset's queues through the real HTTP API, answering
from a ground-truth file (:mod:`app.pipeline.truth`) with a chosen error rate.

Each simulated annotator signs in through the login form (a session cookie and the CSRF token),
leases batches from every open queue of the dataset, and decides them in one request per batch.
An engineer's (or, to create the accounts, an admin's) API token maps sample ids to paths.
With probability ``error_rate`` an answer is wrong: a junk question flipped, a wrong class; a
keep/drop of a whole class is flipped with probability ``class_error_rate`` (default: the same),
since a team may double-check those few, weighty decisions. The answers are reproducible for
a given seed and order of work.

A class drop needs votes from several people (the pipeline's ``class_drop_votes``), and nobody
is asked about a class twice: when an open class question is one none of the simulated people
may answer, the simulator signs in one more (it can when it created its accounts), so the loop
never waits for a vote that no one would give. With ``--follow``, it says what the loop waits
for while it has nothing to do (:class:`WaitLog`).
"""

from __future__ import annotations

import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import httpx

from app.errors import Invalid
from app.pipeline.truth import Truth

__all__ = ["Annotator", "SimulationStats", "Simulator", "WaitLog"]

_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
BATCH = 50

ClientFactory = Callable[[], httpx.Client]


@dataclass
class SimulationStats:
    decisions: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    unmatched: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.decisions.values())


@dataclass
class Annotator:
    """A signed-in simulated annotator: an HTTP client with the session cookie and the CSRF
    token its writes need."""

    username: str
    client: httpx.Client
    csrf: str

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json=body, headers={"X-CSRF-Token": self.csrf})


@dataclass
class WaitLog:
    """Says what the simulation waits for, without flooding: a new state at most every
    ``every`` seconds, and the same one again every ``repeat`` seconds."""

    say: Callable[[str], None]
    every: float = 5.0
    repeat: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _said: tuple[str, ...] = ()
    _at: float | None = None

    def __call__(self, lines: Sequence[str]) -> None:
        now = self.clock()
        if self._at is not None:
            since = now - self._at
            due = since >= self.repeat or (tuple(lines) != self._said and since >= self.every)
            if not due:
                return
        for line in lines:
            self.say(line)
        self._said, self._at = tuple(lines), now


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        raise Invalid(f"{what} failed: HTTP {response.status_code} {response.text[:500]}")
    return response


def sign_in(client: httpx.Client, username: str, password: str) -> Annotator:
    """Signs in through the login form, as a browser does."""
    _check(client.get("/login"), "opening the login page")
    token = client.cookies.get("thresher_login_csrf")
    if not token:
        raise Invalid("the login page set no CSRF cookie")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/"},
        follow_redirects=False,
    )
    if response.status_code != 303:
        raise Invalid(f"{username} could not sign in (HTTP {response.status_code})")
    page = _check(client.get("/", follow_redirects=True), "opening the review page")
    found = _CSRF.search(page.text)
    if not found:
        raise Invalid("the review page carries no CSRF token")
    return Annotator(username=username, client=client, csrf=found.group(1))


class Simulator:
    """Plays ``annotators`` people on one dataset (see the module docstring)."""

    def __init__(
        self,
        *,
        client_factory: ClientFactory,
        token: str,
        dataset: str,
        truth: Truth,
        annotators: int = 1,
        error_rate: float = 0.0,
        class_error_rate: float | None = None,
        seed: int = 0,
        accounts: list[tuple[str, str]] | None = None,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise Invalid("the error rate must be between 0 and 1")
        if class_error_rate is not None and not 0.0 <= class_error_rate <= 1.0:
            raise Invalid("the class error rate must be between 0 and 1")
        if annotators < 1 and not accounts:
            raise Invalid("at least one annotator")
        self.client_factory = client_factory
        self.tag = secrets.token_hex(3)
        self.creates_accounts = not accounts
        self.engineer = client_factory()
        self.engineer.headers["Authorization"] = f"Bearer {token}"
        self.truth = truth
        self.error_rate = error_rate
        self.class_error_rate = error_rate if class_error_rate is None else class_error_rate
        self.rng = random.Random(seed)
        self.stats = SimulationStats()
        self.dataset_id = self._dataset_id(dataset)
        self.classes = self._classes()
        self.class_ids = {name: cid for cid, name in self.classes.items()}
        self.real_classes = {label for label in truth.labels.values() if label is not None}
        self.paths = self._paths()
        index = truth.index()
        self.labels: dict[int, str | None] = {}
        self.known: set[int] = set()
        for sample_id, path in self.paths.items():
            parts = PurePosixPath(path).parts
            for key, table in ((path, "path"), ("/".join(parts[-2:]), "tail"), (parts[-1], "name")):
                if key in index[table]:
                    self.labels[sample_id] = index[table][key]
                    self.known.add(sample_id)
                    break
        self.people = [
            sign_in(client_factory(), name, password)
            for name, password in (accounts or self._create_accounts(annotators))
        ]

    # --- setup ----------------------------------------------------------------------------------

    def _dataset_id(self, dataset: str) -> int:
        if dataset.isdigit():
            return int(dataset)
        found = _check(self.engineer.get("/api/datasets"), "listing the datasets").json()
        for item in found:
            if item["dataset"]["name"] == dataset:
                return int(item["dataset"]["id"])
        raise Invalid(f"no dataset named {dataset!r}")

    def _classes(self) -> dict[int, str]:
        response = _check(
            self.engineer.get(f"/api/datasets/{self.dataset_id}/classes"), "listing the classes"
        )
        return {int(item["id"]): item["name"] for item in response.json()}

    def _paths(self) -> dict[int, str]:
        paths: dict[int, str] = {}
        after: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if after is not None:
                params["after_id"] = after
            page = _check(
                self.engineer.get(f"/api/datasets/{self.dataset_id}/samples", params=params),
                "listing the samples",
            ).json()
            paths.update({int(s["id"]): s["path"] for s in page["samples"]})
            after = page["next_after_id"]
            if after is None:
                return paths

    def _create_accounts(self, n: int, *, first: int = 1) -> list[tuple[str, str]]:
        accounts = []
        for i in range(first, first + n):
            name, password = f"sim-{self.tag}-{i}", secrets.token_urlsafe(18)
            _check(
                self.engineer.post(
                    "/api/users", json={"username": name, "role": "annotator", "password": password}
                ),
                "creating an annotator account (needs an admin token)",
            )
            _check(
                self.engineer.post(
                    "/api/grants", json={"username": name, "dataset_id": self.dataset_id}
                ),
                "granting the annotator the dataset (needs an admin token)",
            )
            accounts.append((name, password))
        return accounts

    # --- answers --------------------------------------------------------------------------------

    def _wrong(self, rate: float | None = None) -> bool:
        wrong = self.rng.random() < (self.error_rate if rate is None else rate)
        self.stats.wrong += wrong
        return wrong

    def answer(self, task: dict[str, Any]) -> dict[str, Any]:
        """The decision on a leased task: the truth's, or (error rate) a wrong one."""
        kind = task["kind"]
        if kind == "class_check":
            keep = self.classes.get(task["class_id"]) in self.real_classes
            if self._wrong(self.class_error_rate):
                keep = not keep
            return {"verdict": "keep" if keep else "drop"}
        sample_id = task["sample_id"]
        if sample_id not in self.known:
            self.stats.unmatched += 1
            return {"verdict": "not_junk" if kind != "label_check" else "unsure"}
        label = self.labels[sample_id]
        if kind in ("junk_check", "junk_audit"):
            junk = label is None
            if self._wrong():
                junk = not junk
            return {"verdict": "junk" if junk else "not_junk"}
        given = self.classes.get(task["given_class_id"])
        if label is None:
            correct: dict[str, Any] = {"verdict": "junk"}
        elif label == given:
            correct = {"verdict": "accept"}
        elif label in self.class_ids:
            correct = {"verdict": "relabel", "class_id": self.class_ids[label]}
        else:
            correct = {"verdict": "unsure"}
        if not self._wrong():
            return correct
        others = [
            {"verdict": "relabel", "class_id": cid}
            for cid in sorted(self.classes)
            if cid != task["given_class_id"] and correct.get("class_id") != cid
        ]
        options: list[dict[str, Any]] = [{"verdict": "accept"}, {"verdict": "junk"}, *others[:5]]
        return self.rng.choice([o for o in options if o != correct])

    # --- work -----------------------------------------------------------------------------------

    def open_kinds(self, person: Annotator) -> list[str]:
        queues = _check(person.client.get("/api/review/queues"), "reading the queues").json()
        return sorted(
            q["kind"] for q in queues if q["dataset_id"] == self.dataset_id and q["pending"] > 0
        )

    def work_once(self) -> int:
        """Every annotator in turn leases one batch of each open queue and decides it.
        Returns the decisions made. When an open class question is left that none of them may
        answer (they all voted on that class: a drop waits for another person), one more
        annotator joins and answers it."""
        made = 0
        open_kinds: set[str] = set()
        for person in self.people:
            kinds = self.open_kinds(person)
            open_kinds.update(kinds)
            for kind in kinds:
                made += self._work(person, kind)
        if not made and "class_check" in open_kinds and self.creates_accounts:
            [(name, password)] = self._create_accounts(1, first=len(self.people) + 1)
            newcomer = sign_in(self.client_factory(), name, password)
            self.people.append(newcomer)
            made += self._work(newcomer, "class_check")
        return made

    def _work(self, person: Annotator, kind: str) -> int:
        """``person`` leases one batch of the queue and decides it; returns the decisions."""
        leased = _check(
            person.post(
                "/api/review/leases", {"kind": kind, "dataset_id": self.dataset_id, "n": BATCH}
            ),
            "leasing tasks",
        ).json()["tasks"]
        if not leased:
            return 0
        decisions = [
            {
                "task_id": task["id"],
                "lease_version": task["lease_version"],
                "idempotency_key": uuid.uuid4().hex,
                "seconds": 1.0,
                **self.answer(task),
            }
            for task in leased
        ]
        _check(person.post("/api/review/decisions", {"decisions": decisions}), "deciding")
        self.stats.batches += 1
        for decision in decisions:
            self.stats.decisions[decision["verdict"]] += 1
        return len(decisions)

    def pipeline_status(self) -> dict[str, Any] | None:
        """The pipeline as the API shows it; None before it is created."""
        response = self.engineer.get(f"/api/pipelines/{self.dataset_id}")
        if response.status_code == 404:
            return None
        body: dict[str, Any] = _check(response, "reading the pipeline").json()
        return body

    def pipeline_done(self) -> bool:
        body = self.pipeline_status()
        return body is not None and body["stage"] == "done" and body["open_round"] is None

    def run(
        self,
        *,
        follow: bool = False,
        idle_exit: float = 0.0,
        timeout: float | None = None,
        poll: float = 1.0,
        on_batch: Callable[[SimulationStats], None] | None = None,
        on_wait: Callable[[Sequence[str]], None] | None = None,
    ) -> SimulationStats:
        """Reviews until the queues have been empty for ``idle_exit`` seconds, or with
        ``follow`` until the pipeline is done (stopping after ``timeout`` seconds either way).
        ``on_wait`` (with ``follow``) hears what the pipeline waits for whenever there is
        nothing to review (see :class:`WaitLog`)."""
        started = time.monotonic()
        idle_since = time.monotonic()
        while True:
            made = self.work_once()
            if made:
                idle_since = time.monotonic()
                if on_batch is not None:
                    on_batch(self.stats)
                continue
            if timeout is not None and time.monotonic() - started > timeout:
                return self.stats
            if follow:
                status = self.pipeline_status()
                if status is not None and status["stage"] == "done" and not status["open_round"]:
                    return self.stats
                if on_wait is not None:
                    on_wait(status["waiting"] if status else ["waiting: no pipeline yet"])
            elif time.monotonic() - idle_since >= idle_exit:
                return self.stats
            time.sleep(poll)

    def close(self) -> None:
        self.engineer.close()
        for person in self.people:
            person.client.close()
