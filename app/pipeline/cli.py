"""``thresher pipeline …`` (drive a dataset's cleaning loop) and ``thresher export``
(``thresher simulate``: :mod:`app.pipeline.simulate_cli`).

These commands work on the configured database directly, as the server's API does (the
server's reconciler, if one runs, goes on from what they did).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from app.cli_support import console, database, reported_errors
from app.datasets.service import dataset_by_name_or_id
from app.db import transaction
from app.errors import Invalid, NotFound
from app.jobs.config import JobSettings
from app.models import RoundKind, Stage
from app.pipeline import export, reports, sample_reports, service
from app.pipeline.config import PipelineEnv, RecipeChoice
from app.pipeline.schemas import RoundSummary
from app.pipeline.stages.context import StepParams
from app.settings import get_settings
from ml.core.recipes import RecipeError, parse_set_options

pipeline_cli = typer.Typer(
    help="A dataset's cleaning loop: create, configure, step, advance, inspect.",
    no_args_is_help=True,
)

DatasetArg = Annotated[str, typer.Argument(help="The dataset's name (or id).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _session() -> Iterator[tuple[Session, PipelineEnv]]:
    settings = get_settings()
    with database(settings) as factory, transaction(factory) as session:
        yield session, PipelineEnv(data_dir=settings.data_dir, jobs=JobSettings())


def _settings_from(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` with YAML values (numbers, booleans, lists, null)."""
    try:
        return parse_set_options(pairs or [])
    except RecipeError as error:
        raise Invalid(f"--set: {error}; e.g. audit_size=500") from None


def _print_round(round_: RoundSummary) -> None:
    jobs = ", ".join(f"{j.role} #{j.job_id} {j.state.value}" for j in round_.jobs)
    tasks = round_.tasks
    console.print(
        f"[bold]{round_.source}[/] (round {round_.id}): {round_.state.value}"
        + (f" / {round_.phase}" if round_.phase else "")
    )
    if jobs:
        console.print(f"  jobs: {jobs}")
    if tasks.pending or tasks.leased or tasks.done:
        console.print(f"  tasks: {tasks.pending} waiting, {tasks.leased} leased, {tasks.done} done")
    if round_.error:
        console.print(f"  [red]error:[/] {round_.error}")
    interesting = {k: v for k, v in round_.stats.items() if k not in ("histogram", "sizes")}
    if interesting:
        console.print("  " + json.dumps(interesting, sort_keys=True, default=str))


def _dump(value: Any) -> None:
    console.print_json(json.dumps(value, default=str, sort_keys=True))


@pipeline_cli.command("create")
def create(
    dataset: DatasetArg,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Config KEY=VALUE (repeatable).")
    ] = None,
    auto: Annotated[bool, typer.Option(help="Start in auto mode.")] = False,
) -> None:
    """Creates the dataset's pipeline (every usable sample becomes a candidate)."""
    with reported_errors(), _session() as (session, _):
        target = dataset_by_name_or_id(session, dataset)
        pipeline, created = service.create_pipeline(
            session, dataset=target, config=_settings_from(settings), auto=auto
        )
        stage = pipeline.stage.value
    console.print(f"pipeline of {dataset}: {'created' if created else 'exists'}, stage {stage}")


@pipeline_cli.command("status")
def status(dataset: DatasetArg, as_json: JsonOption = False) -> None:
    """Stage, rounds, queues, the funnel and the estimates."""
    with reported_errors(), _session() as (session, _):
        target = dataset_by_name_or_id(session, dataset)
        report = reports.status(session, service.get_pipeline(session, target), target)
    if as_json:
        _dump(report.model_dump(mode="json"))
        return
    console.print(
        f"[bold]{report.dataset_name}[/]: stage {report.stage.value}, "
        f"auto {'on' if report.auto else 'off'}" + (f" — {report.note}" if report.note else "")
    )
    table = Table("funnel", "samples")
    for step in report.funnel.steps:
        table.add_row(step.label, f"{step.count:,}")
    console.print(table)
    for round_ in report.rounds:
        _print_round(round_)
    for record in report.estimates:
        e = record.estimate
        rate = "-" if e.rate is None else f"{e.rate:.3f}"
        console.print(
            f"{record.source} {record.what}: {rate} ({e.low:.3f} – {e.high:.3f}), "
            f"{e.successes}/{e.trials}"
        )
    coming = report.next_step
    if coming is not None:
        what = coming.kind.value if coming.kind else coming.stage.value
        console.print(f"next: {what} — {coming.reason}")
    for line in report.waiting:
        console.print(line, markup=False, highlight=False)


@pipeline_cli.command("config")
def config(
    dataset: DatasetArg,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Config KEY=VALUE (VALUE null: default).")
    ] = None,
) -> None:
    """Changes config keys, then prints the whole config."""
    with reported_errors(), _session() as (session, _):
        target = dataset_by_name_or_id(session, dataset)
        if settings:
            service.update_pipeline(session, dataset=target, config=_settings_from(settings))
        report = reports.status(session, service.get_pipeline(session, target), target)
    _dump(report.config)


@pipeline_cli.command("auto")
def auto(dataset: DatasetArg, on: Annotated[bool, typer.Argument(help="on or off")]) -> None:
    """Turns auto mode on or off."""
    with reported_errors(), _session() as (session, _):
        service.update_pipeline(session, dataset=dataset_by_name_or_id(session, dataset), auto=on)
    console.print(f"auto mode {'on' if on else 'off'}")


@pipeline_cli.command("stage")
def stage(dataset: DatasetArg, to: Annotated[Stage, typer.Argument(help="The stage.")]) -> None:
    """Moves to a stage (e.g. `label` to skip the junk stage)."""
    with reported_errors(), _session() as (session, _):
        service.update_pipeline(session, dataset=dataset_by_name_or_id(session, dataset), stage=to)
    console.print(f"stage {to.value}")


@pipeline_cli.command("step")
def step(
    dataset: DatasetArg,
    kind: Annotated[RoundKind, typer.Argument(help="The step to start.")],
    recipe: Annotated[str | None, typer.Option(help="A shipped recipe's name.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the random draws.")] = None,
    n: Annotated[int | None, typer.Option(help="Sample size (seed, audits).")] = None,
    fraction: Annotated[float | None, typer.Option(help="Human sample fraction.")] = None,
    iteration: Annotated[int | None, typer.Option(help="Junk iteration (flags, bulk).")] = None,
    threshold: Annotated[float | None, typer.Option(help="p(junk) threshold.")] = None,
    key: Annotated[str | None, typer.Option(help="Request key: a retry returns the round.")] = None,
) -> None:
    """Starts one step of the loop."""
    with reported_errors(), _session() as (session, env):
        round_, _ = service.start_step(
            session,
            dataset=dataset_by_name_or_id(session, dataset),
            kind=kind,
            params=StepParams(
                recipe=RecipeChoice(name=recipe) if recipe else None,
                seed=seed,
                n=n,
                fraction=fraction,
                iteration=iteration,
                threshold=threshold,
            ),
            env=env,
            request_key=key,
        )
        summary = reports.round_summary(session, round_)
    _print_round(summary)


@pipeline_cli.command("advance")
def advance(dataset: DatasetArg) -> None:
    """Starts the step auto mode would start next."""
    with reported_errors(), _session() as (session, env):
        round_, next_step = service.advance(
            session, dataset=dataset_by_name_or_id(session, dataset), env=env
        )
        summary = reports.round_summary(session, round_) if round_ else None
    if summary is not None:
        _print_round(summary)
    console.print(next_step.reason if next_step else "nothing to do")


@pipeline_cli.command("reconcile")
def reconcile(
    dataset: DatasetArg,
    full: Annotated[bool, typer.Option(help="Re-read every decision.")] = False,
) -> None:
    """Applies new decisions and finished jobs now."""
    with reported_errors(), _session() as (session, env):
        result = service.reconcile_now(
            session, dataset=dataset_by_name_or_id(session, dataset), env=env, full=full
        )
    console.print(
        f"{result.decisions} decisions read, {result.samples_changed} samples changed; "
        f"advanced {result.rounds_advanced or 'nothing'}; "
        f"started {result.rounds_started or 'nothing'}"
    )


@pipeline_cli.command("rounds")
def rounds(dataset: DatasetArg, as_json: JsonOption = False) -> None:
    """Every round with its jobs, tasks and stats."""
    with reported_errors(), _session() as (session, _):
        pipeline = service.get_pipeline(session, dataset_by_name_or_id(session, dataset))
        summaries = reports.rounds(session, pipeline)
    if as_json:
        _dump([r.model_dump(mode="json") for r in summaries])
        return
    for summary in summaries:
        _print_round(summary)


def _round_command(action: str) -> Any:
    def command(
        dataset: DatasetArg, round_id: Annotated[int, typer.Argument(help="The round's id.")]
    ) -> None:
        with reported_errors(), _session() as (session, env):
            target = dataset_by_name_or_id(session, dataset)
            function = {
                "finish": service.finish_round,
                "cancel": service.cancel_round,
                "retry": service.retry_round,
            }[action]
            round_ = function(session, dataset=target, round_id=round_id, env=env)
            summary = reports.round_summary(session, round_)
        _print_round(summary)

    command.__doc__ = {
        "finish": "Ends a round's review now (its remaining tasks still count when decided).",
        "cancel": "Cancels an open round: its jobs and waiting tasks.",
        "retry": "Queues a failed round's failed jobs again.",
    }[action]
    return command


for _action in ("finish", "cancel", "retry"):
    pipeline_cli.command(_action)(_round_command(_action))


@pipeline_cli.command("sample")
def sample(dataset: DatasetArg, sample_id: int) -> None:
    """One sample's state and history (JSON)."""
    settings = get_settings()
    with reported_errors(), _session() as (session, _):
        target = dataset_by_name_or_id(session, dataset)
        history = sample_reports.sample_history(
            session,
            service.get_pipeline(session, target),
            target,
            sample_id,
            data_dir=settings.data_dir,
        )
        if history is None:
            raise NotFound(f"sample {sample_id} is not in this pipeline")
    _dump(history.model_dump(mode="json"))


# --- export -------------------------------------------------------------------------------------


def export_command(
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option("--out", help="The directory to write (replaced).")],
    require_model: Annotated[
        bool, typer.Option(help="Fail when there is no finished final training.")
    ] = False,
) -> None:
    """Exports the cleaned dataset: manifest (CSV, JSONL), ImageFolder of symlinks, the final
    model, report.json and report.html. Exporting twice gives identical files."""
    settings = get_settings()
    with reported_errors(), _session() as (session, _):
        target = dataset_by_name_or_id(session, dataset)
        result = export.export_dataset(
            session,
            pipeline=service.get_pipeline(session, target),
            dataset=target,
            out_dir=out,
            data_dir=settings.data_dir,
            require_model=require_model,
        )
    console.print(
        f"exported {result.samples:,} samples ({result.final:,} in the final set, "
        f"{result.images:,} images linked) and "
        + (f"the model ({', '.join(result.model_files)})" if result.model_files else "no model")
        + f" to {out}"
    )
