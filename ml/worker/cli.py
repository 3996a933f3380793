"""``thresher worker``: pull jobs from a Thresher server and run them on this machine.

Importable without torch (the server's CLI lists this command): the worker's modules are
imported when the command runs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ml.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from ml.core.protocol.jobs import JobKind
    from ml.core.protocol.messages import Progress

DEFAULT_CACHE_SUBDIR = "worker"


def _default_cache_dir() -> Path:
    """``$THRESHER_DATA_DIR/worker`` (the docker image sets the data dir), else
    ``./thresher-data/worker``."""
    return Path(os.environ.get("THRESHER_DATA_DIR", "thresher-data")) / DEFAULT_CACHE_SUBDIR


def _parse_gpus(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        gpus = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("use GPU indices like 0,1,2,3", param_hint="--gpus") from None
    if len(set(gpus)) != len(gpus) or any(g < 0 for g in gpus):
        raise typer.BadParameter("GPU indices must be distinct and >= 0", param_hint="--gpus")
    return gpus


def _parse_kinds(values: list[str] | None) -> list[JobKind]:
    from ml.core.protocol.jobs import JobKind
    from ml.worker.handlers import HANDLERS

    if not values:
        return [JobKind(kind) for kind in HANDLERS]
    kinds = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if name not in HANDLERS:
                valid = ", ".join(sorted(HANDLERS))
                raise typer.BadParameter(
                    f"unknown kind {name!r}; valid: {valid}", param_hint="--kinds"
                )
            kinds.append(JobKind(name))
    return kinds


def _resolve_device(device: str, gpus: list[int]) -> str:
    if gpus:
        if device not in ("auto", "cuda") and not device.startswith("cuda"):
            raise typer.BadParameter(
                "--gpus runs on CUDA; drop --device or use cuda", param_hint="--device"
            )
        return "cuda" if len(gpus) > 1 else f"cuda:{gpus[0]}"
    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    from ml.core.protocol.jobs import device_kind

    try:
        device_kind(device)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
    return device


class _Console:
    """Job progress on the console: a live bar on a terminal, a line every few seconds in a
    log file or a container."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self._last = 0.0
        self._bar: object | None = None
        self._task: Any = None
        if self.interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            )

    def __call__(self, progress: Progress) -> None:
        description = progress.phase
        if progress.epochs:
            description += f" epoch {progress.epoch}/{progress.epochs}"
        if progress.images_per_second:
            description += f" {progress.images_per_second:,.0f} img/s"
        if self._bar is not None:
            from rich.progress import Progress as Bar

            bar = self._bar
            assert isinstance(bar, Bar)
            if self._task is None:
                bar.start()
                self._task = bar.add_task(description, total=progress.steps or None)
            bar.update(
                self._task,
                description=description,
                completed=progress.step,
                total=progress.steps or None,
            )
            return
        now = time.monotonic()
        if now - self._last >= 5.0:
            self._last = now
            # Not under "ml": the job's log on the server gets the library's lines, not these.
            get_logger("thresher.worker").info(
                "worker.progress", phase=description, step=f"{progress.step}/{progress.steps}"
            )


ServerOpt = Annotated[
    str,
    typer.Option(envvar="THRESHER_SERVER_URL", help="The server's URL, e.g. http://server:8000."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        envvar="THRESHER_WORKER_TOKEN",
        help="A worker token (thresher tokens create --scope worker).",
        show_default=False,
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="THRESHER_WORKER_TOKEN_FILE",
        help="A file holding the worker token (e.g. a Docker secret), instead of --token.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option(help="cpu, cuda, cuda:N, or auto (CUDA when there is one).")
]
PathMapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--path-map",
        help="FROM=TO: the server's image paths under FROM are under TO here (repeatable). "
        "Images still not found are fetched from the server.",
    ),
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        help="Run each job on these GPUs of this machine (DDP via torchrun), e.g. 0,1,2,3."
    ),
]
ProcsOpt = Annotated[
    int,
    typer.Option(min=1, help="Processes per job on the CPU (gloo DDP); with --gpus, one per GPU."),
]
KindsOpt = Annotated[
    list[str] | None, typer.Option("--kinds", help="Only these job kinds (comma-separated).")
]
NameOpt = Annotated[str | None, typer.Option(help="This worker's name [default: host-pid].")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Downloads, fetched images and decoded caches [default: $THRESHER_DATA_DIR/worker]."
    ),
]
MaxJobsOpt = Annotated[int | None, typer.Option(min=1, help="Exit after this many jobs.")]
IdleExitOpt = Annotated[
    float | None, typer.Option(min=0, help="Exit after this many seconds without a job.")
]
PollMaxOpt = Annotated[float, typer.Option(min=0.1, help="Longest wait between polls (s).")]
WatchParentOpt = Annotated[
    int | None, typer.Option(hidden=True, help="Exit when this process is no longer the parent.")
]


def worker(
    server: ServerOpt,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    device: DeviceOpt = "auto",
    path_map: PathMapOpt = None,
    gpus: GpusOpt = None,
    procs: ProcsOpt = 1,
    kinds: KindsOpt = None,
    name: NameOpt = None,
    cache_dir: CacheDirOpt = None,
    max_jobs: MaxJobsOpt = None,
    idle_exit: IdleExitOpt = None,
    poll_max: PollMaxOpt = 30.0,
    watch_parent: WatchParentOpt = None,
) -> None:
    """Run jobs from a Thresher server on this machine until stopped (SIGTERM hands the running
    job back to the queue)."""
    from ml.worker.client import ServerClient
    from ml.worker.inputs import parse_path_map
    from ml.worker.runner import Worker, WorkerConfig, default_worker_name

    configure_logging(os.environ.get("THRESHER_LOG_FORMAT", "console"))
    gpu_list = _parse_gpus(gpus)
    resolved = _resolve_device(device, gpu_list)
    try:
        mapping = parse_path_map(path_map or [])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--path-map") from None
    config = WorkerConfig(
        name=name or default_worker_name(),
        device=resolved,
        kinds=_parse_kinds(kinds),
        cache_dir=(cache_dir or _default_cache_dir()).resolve(),
        gpus=gpu_list,
        procs=len(gpu_list) if gpu_list else procs,
        path_map=mapping,
        poll_max=poll_max,
        max_jobs=max_jobs,
        idle_exit=idle_exit,
        watch_parent=watch_parent,
    )
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    with ServerClient(server, _worker_token(token, token_file)) as client:
        runner = Worker(config, client, on_progress=_Console())
        runner.install_signal_handlers()
        code = runner.run()
    raise typer.Exit(code)


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(worker)
    app()


def _worker_token(token: str | None, token_file: Path | None) -> str:
    if (token is None) == (token_file is None):
        raise typer.BadParameter("give the worker token with --token or --token-file, one of them")
    if token_file is None:
        return token or ""
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {token_file}: {exc.strerror}") from exc
