"""Running one import: scan the source, probe new and changed files in a process pool, store.

``run_import`` is a job, not a request: it owns its transactions and commits every
``commit_every`` files, so readers see progress and a SQLite writer lock is never held for long.
Re-running it is safe: every step compares with what is stored and writes only the difference.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from app.datasets import import_repository, probe, repository, scanning, sources
from app.datasets.import_repository import KnownSample, NewIssue, NewSample, SampleUpdate
from app.datasets.probe import ProbeResult
from app.datasets.sources import SourceEntry
from app.logging import get_logger
from app.models import Dataset, ImportRun, ImportStatus, utcnow

log = get_logger(__name__)

#: Called after every commit with the run (``processed`` of ``total`` done).
ProgressCallback = Callable[[ImportRun], None]

COMMIT_EVERY = 5000


def default_processes() -> int:
    """One probe process per CPU this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ImportOptions:
    """How to run an import. ``processes`` is the probe pool's size (at least 1)."""

    max_pixels: int
    processes: int = field(default_factory=default_processes)
    classes: tuple[str, ...] | None = None
    commit_every: int = COMMIT_EVERY


class _Planned(NamedTuple):
    """An entry of the source and what is already stored for its path (None if new)."""

    entry: SourceEntry
    known: KnownSample | None
    probe: bool


def run_import(
    factory: sessionmaker[Session],
    import_id: int,
    options: ImportOptions,
    *,
    on_progress: ProgressCallback | None = None,
) -> ImportRun:
    """Runs the import ``import_id`` (status running) to completion; returns the finished run.

    Never raises for a problem with the data: a failure of the run as a whole (the source
    vanished, the database went away) is stored on the run as ``failed`` with its error.
    """
    with factory() as session:
        run = repository.get_import(session, import_id)
        if run is None or run.status is not ImportStatus.RUNNING:
            raise ValueError(f"import {import_id} is not a running import")
        dataset = repository.get_dataset(session, run.dataset_id)
        assert dataset is not None
        session.commit()
        log.info("datasets.import.started", import_id=run.id, dataset=dataset.name)
        try:
            _Import(session, run, dataset, options, on_progress).run()
        except BaseException as exc:  # Ctrl+C too: never leave the run "running" behind
            session.rollback()
            log.error(
                "datasets.import.failed",
                import_id=run.id,
                error=repr(exc),
                traceback=traceback.format_exc(),
            )
            run.status = ImportStatus.FAILED
            run.error = f"{type(exc).__name__}: {exc}"
            run.finished_at = utcnow()
            session.add(run)
            session.commit()
            if not isinstance(exc, Exception):
                raise
            return run
    log.info(
        "datasets.import.finished",
        import_id=run.id,
        total=run.total,
        added=run.added,
        changed=run.changed,
        unchanged=run.unchanged,
        missing=run.missing,
        issues=run.issues,
    )
    return run


class _Import:
    def __init__(
        self,
        session: Session,
        run: ImportRun,
        dataset: Dataset,
        options: ImportOptions,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.session = session
        self.run_row = run
        self.dataset = dataset
        self.options = options
        self.on_progress = on_progress

    def run(self) -> None:
        session, run, dataset = self.session, self.run_row, self.dataset
        known = dict(import_repository.known_samples(session, dataset.id))
        session.commit()
        with _ProbePool(self.options) as pool:
            if not known:
                pool.start()  # a first import probes everything: start workers during the scan
            resolved = sources.ResolvedSource(dataset.source, dataset.source_format, dataset.root)
            scan = scanning.scan(resolved, classes=self.options.classes)
            self._add_classes(scan)
            import_repository.insert_issues(
                session,
                [NewIssue(run.id, issue.path, issue.reason, issue.detail) for issue in scan.issues],
            )
            run.total = scan.total
            run.processed = run.issues = len(scan.issues)
            self._commit()

            plan = [self._plan(entry, known.pop(entry.path, None)) for entry in scan.entries]
            gone = len(known)
            newly_gone = sorted(sample.id for sample in known.values() if not sample.missing)
            del known, scan
            results = pool.probe([item.entry.abs_path for item in plan if item.probe])
            for start in range(0, len(plan), self.options.commit_every):
                self._store(plan[start : start + self.options.commit_every], results)
                self._commit()

        import_repository.mark_missing(session, newly_gone)
        run.missing = gone
        import_repository.link_duplicates(session, dataset.id)
        repository.refresh_class_counts(session, dataset.id)
        run.status = ImportStatus.SUCCEEDED
        run.finished_at = utcnow()
        self._commit()

    def _add_classes(self, scan: sources.SourceScan) -> None:
        """Creates the classes the scan names that the dataset does not have yet."""
        existing = repository.class_ids(self.session, self.dataset.id)
        new = [label for label in scan.labels if label not in existing]
        new += sorted({entry.label for entry in scan.entries} - set(existing) - set(new))
        repository.insert_classes(self.session, self.dataset.id, new)
        self.class_ids = repository.class_ids(self.session, self.dataset.id)

    def _plan(self, entry: SourceEntry, known: KnownSample | None) -> _Planned:
        if entry.error is not None:
            return _Planned(entry, known, probe=False)
        if known is None or known.error is not None:
            return _Planned(entry, known, probe=True)
        size, mtime_ns = entry.byte_size, entry.mtime_ns
        if size is None:
            try:
                info = os.stat(entry.abs_path)  # noqa: PTH116 - once per known file
            except OSError:
                return _Planned(entry, known, probe=True)  # the probe says what is wrong
            size, mtime_ns = info.st_size, info.st_mtime_ns
        same_file = known.byte_size == size and known.mtime_ns == mtime_ns
        return _Planned(entry, known, probe=not same_file)

    def _store(self, batch: Sequence[_Planned], results: Iterator[ProbeResult]) -> None:
        run, dataset_id, now = self.run_row, self.dataset.id, utcnow()
        inserts: list[NewSample] = []
        updates: list[SampleUpdate] = []
        present_ids: list[int] = []
        present_classes: list[int] = []
        issues: list[NewIssue] = []
        changed = unchanged = 0
        for entry, known, needs_probe in batch:
            class_id = self.class_ids[entry.label]
            if needs_probe:
                result = next(results)
            elif entry.error is not None:
                result = _preset_failure(entry)
            else:
                assert known is not None
                # Same size and mtime: the stored facts stand; only the label or presence may move.
                if known.class_id != class_id or known.missing:
                    present_ids.append(known.id)
                    present_classes.append(class_id)
                    changed += 1
                else:
                    unchanged += 1
                continue
            if result.error is not None:
                issues.append(NewIssue(run.id, entry.path, result.error, result.detail or ""))
            if known is None:
                row = NewSample(dataset_id, entry.path, class_id, result, False, now, now)
                inserts.append(row)
                continue
            if _same(known, class_id, result):
                unchanged += 1
                if known.byte_size == result.byte_size and known.mtime_ns == result.mtime_ns:
                    continue
            else:
                changed += 1
            updates.append(SampleUpdate(known.id, class_id, result))
        import_repository.insert_samples(self.session, inserts)
        import_repository.update_samples(self.session, updates)
        import_repository.set_present(self.session, present_ids, class_ids=present_classes)
        import_repository.insert_issues(self.session, issues)
        run.added += len(inserts)
        run.changed += changed
        run.unchanged += unchanged
        run.processed += len(batch)
        run.issues += len(issues)

    def _commit(self) -> None:
        self.session.add(self.run_row)
        self.session.commit()
        if self.on_progress is not None:
            self.on_progress(self.run_row)


def _same(known: KnownSample, class_id: int, result: ProbeResult) -> bool:
    """True when a re-probed file is, for every user of the dataset, the sample already stored.

    A file whose mtime moved but whose bytes hash the same is unchanged (its mtime is refreshed).
    """
    if known.class_id != class_id or known.missing or known.error is not result.error:
        return False
    if result.error is not None:
        return known.error_detail == result.detail
    return known.sha256 == result.sha256


def _preset_failure(entry: SourceEntry) -> ProbeResult:
    assert entry.error is not None
    return probe.failed_probe(
        entry.error, entry.detail, byte_size=entry.byte_size, mtime_ns=entry.mtime_ns
    )


class _ProbePool:
    """Probes paths in worker processes, yielding results in the order of the paths.

    Everything is submitted at once in large chunks, so workers never wait for the caller.
    Workers start on ``start()`` or on the first ``probe()``; none start if nothing is probed.
    """

    def __init__(self, options: ImportOptions) -> None:
        self.options = options
        self.workers = max(1, options.processes)
        self.executor: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_pool_context(),
                initializer=probe.init_worker,
                initargs=(self.options.max_pixels,),
            )
            for _ in range(self.workers):  # spawns the workers now, while the caller goes on
                self.executor.submit(probe.probe_chunk, (), self.options.max_pixels)
        return self.executor

    def probe(self, paths: Sequence[str]) -> Iterator[ProbeResult]:
        if not paths:
            return iter(())
        executor = self.start()
        size = min(1024, max(32, math.ceil(len(paths) / (self.workers * 16))))
        futures = [
            executor.submit(probe.probe_chunk, paths[start : start + size], self.options.max_pixels)
            for start in range(0, len(paths), size)
        ]
        return _in_order(futures)

    def __enter__(self) -> _ProbePool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _in_order(futures: list[Future[list[ProbeResult]]]) -> Iterator[ProbeResult]:
    for future in futures:
        yield from future.result()


def _pool_context() -> multiprocessing.context.BaseContext:
    """Forkserver where there is one, else spawn; never fork (the server has threads and
    open database connections).

    The fork server imports the probe code once, so workers start already loaded. Each worker
    also re-runs the main script (multiprocessing sends its path to every child, and the fork
    server does not apply a "__main__" preload before Python 3.13), so the modules that script
    imports are preloaded as well: for ``thresher`` that is ``app.cli`` and everything under it,
    about 0.3 s of CPU that every worker would otherwise spend again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", probe.__name__, *_modules_of_main()])
    return context


def _modules_of_main() -> list[str]:
    """The already imported modules the main script refers to (``from app.cli import main``)."""
    main = sys.modules.get("__main__")
    if main is None:
        return []
    names: set[str] = set()
    for value in list(vars(main).values()):
        if isinstance(value, types.ModuleType):
            name: object = value.__name__
        else:
            name = getattr(value, "__module__", None)
        if isinstance(name, str) and name != "__main__" and name in sys.modules:
            names.add(name)
    return sorted(names)
