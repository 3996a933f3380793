"""``thresher simulate``: simulated annotators (:mod:`app.pipeline.simulate`) that talk to a
running server over HTTP, as annotators do, answering from a ground-truth file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

from app.cli_support import console, reported_errors
from app.errors import Invalid
from app.pipeline.cli import DatasetArg
from app.pipeline.simulate import SimulationStats, Simulator, WaitLog
from app.pipeline.truth import load_truth
from app.settings import get_settings

TruthOption = Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Ground-truth CSV.")]
ClassErrorOption = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="Wrong keep/drop answers (default: --error-rate)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        envvar="THRESHER_TOKEN",
        help="An admin's API token (creates the accounts), or an engineer's with --account.",
    ),
]
AccountOption = Annotated[
    list[str] | None,
    typer.Option(help="Use this annotator account, NAME:PASSWORD (repeatable)."),
]
FollowOption = Annotated[
    bool,
    typer.Option(
        help="Keep reviewing until the pipeline is done, saying what it waits for "
        "whenever there is nothing to review."
    ),
]
IdleExitOption = Annotated[
    float, typer.Option(help="Without --follow: stop after this many idle seconds.")
]


def simulate_command(
    dataset: DatasetArg,
    truth: TruthOption,
    column: Annotated[str, typer.Option(help="The truth's label column, e.g. clean.")],
    annotators: Annotated[int, typer.Option(min=1, help="Simulated annotators.")] = 1,
    error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Wrong answers.")] = 0.0,
    class_error_rate: ClassErrorOption = None,
    server: Annotated[str | None, typer.Option(help="The server's URL.")] = None,
    token: TokenOption = None,
    account: AccountOption = None,
    junk_column: Annotated[str, typer.Option(help="The truth's junk flag column.")] = "junk",
    path_column: Annotated[str, typer.Option(help="The truth's path column.")] = "path",
    follow: FollowOption = False,
    idle_exit: IdleExitOption = 0.0,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the wrong answers.")] = 0,
) -> None:
    """Plays annotators through the HTTP API, answering from a ground-truth file."""
    url = (server or get_settings().public_url).rstrip("/")
    with reported_errors():
        if not token:
            raise Invalid("give an API token (--token or THRESHER_TOKEN)")
        accounts = _accounts(account or [])
        simulator = Simulator(
            client_factory=lambda: _http_client(url),
            token=token,
            dataset=dataset,
            truth=load_truth(
                truth, column=column, junk_column=junk_column, path_column=path_column
            ),
            annotators=annotators,
            error_rate=error_rate,
            class_error_rate=class_error_rate,
            seed=seed,
            accounts=accounts or None,
        )
        try:
            stats = simulator.run(
                follow=follow,
                idle_exit=idle_exit,
                timeout=timeout,
                on_wait=WaitLog(lambda line: console.print(line, markup=False, highlight=False)),
            )
        finally:
            simulator.close()
    _print_stats(stats)


def _accounts(values: list[str]) -> list[tuple[str, str]]:
    """``NAME:PASSWORD`` values as (name, password) pairs."""
    accounts = []
    for value in values:
        name, sep, password = value.partition(":")
        if not sep:
            raise Invalid(f"--account {value!r}: use NAME:PASSWORD")
        accounts.append((name, password))
    return accounts


def _print_stats(stats: SimulationStats) -> None:
    counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(stats.decisions.items()))
    console.print(
        f"{stats.total} decisions ({counts or 'none'}); {stats.wrong} deliberately wrong; "
        f"{stats.unmatched} samples not in the truth file"
    )


def _http_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60)
