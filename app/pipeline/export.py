"""The export of a cleaned dataset: the manifest (CSV and JSONL: every sample, its final label,
status, the reason and its history), an ImageFolder of symlinks to the final set, the final
model (safetensors and the config timm needs to rebuild it) and a report of every number.

Exports are reproducible: rows are sorted by path, the JSON has sorted keys, and nothing carries
the time of the export, so exporting twice (with nothing changed in between) gives identical
files.

Layout of ``OUT``::

    manifest.csv, manifest.jsonl   every sample of the dataset, by path
    images/<class>/<id>_<name>     symlinks to the final set's files
    model/                         model.safetensors, model_config.json, recipe.yaml
    report.json                    the numbers (see build_report)
    report.html                    the same numbers as one self-contained page
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup
from sqlalchemy.orm import Session

from app.errors import Invalid, NotFound
from app.jobs import manifests as job_manifests
from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    Dataset,
    JobState,
    Pipeline,
    PipelineEvent,
    RoundKind,
    RoundState,
)
from app.pipeline import (
    class_reports,
    event_repository,
    reports,
    repository,
    sample_repository,
)
from app.pipeline.config import parse_config
from app.pipeline.views.page import report_view
from app.settings import PROJECT_ROOT
from app.web import create_templates
from ml.core.protocol.jobs import JobKind, ManifestRef

MANIFEST_FIELDS = (
    "path",
    "sample_id",
    "given_label",
    "label",
    "status",
    "final",
    "reason",
    "human_verdict",
    "decision_id",
    "junk_score",
    "label_rank",
    "cleanlab_issue",
    "cleanlab_quality",
    "knn_issue",
    "knn_agreement",
    "training_jobs",
    "history",
)
#: Stylesheets inlined into report.html (the dashboard's, so the two look alike).
REPORT_STYLES = ("app.css", "jobs.css", "pipeline.css")
#: Files of the final model copied into ``model/``.
MODEL_EXPORT_FILES = ("model.safetensors", "model_config.json", "recipe.yaml")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    samples: int
    final: int
    images: int
    model_files: list[str]
    report_html: Path | None


# --- the manifest -------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), digits)


def _history(events: list[PipelineEvent], sources: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "event": e.kind.value,
            "round": sources.get(e.round_id) if e.round_id is not None else None,
            "from": e.from_status.value if e.from_status else None,
            "to": e.to_status.value if e.to_status else None,
            "label_id": e.class_id,
            "score": _round(e.score),
            "job_id": e.job_id,
            "decision_id": e.decision_id,
            "detail": e.detail,
        }
        for e in events
    ]


def _reason(status: str, history: list[dict[str, Any]]) -> str:
    for entry in reversed(history):
        if entry["to"] == status:
            where = f" ({entry['round']})" if entry["round"] else ""
            return f"{entry['event']}{where}: {entry['detail']}".strip()
    return {
        "candidate": "not judged by a label rule",
        "unusable": "the file cannot be used",
        "missing": "gone from the source at the last import",
    }.get(status, status)


def _training_members(
    session: Session, pipeline: Pipeline, data_dir: Path | None
) -> list[tuple[int, np.ndarray[Any, Any]]]:
    """(job id, sorted sample ids it trained on) of every succeeded training job."""
    if data_dir is None:
        return []
    members = []
    all_rounds = repository.list_rounds(session, pipeline.id)
    for job_list in repository.jobs_of_rounds(session, [r.id for r in all_rounds]).values():
        for job, _ in job_list:
            if job.state is not JobState.SUCCEEDED or "train" not in job.spec:
                continue
            if job.kind not in (
                JobKind.TRAIN_JUNK,
                JobKind.TRAIN_FOLD,
                JobKind.TRAIN_PREDICT,
                JobKind.TRAIN_FINAL,
            ):
                continue
            ref = ManifestRef.model_validate(job.spec["train"])
            try:
                ids = job_manifests.result_sample_ids(data_dir, ref.sha256, None)
                if job.kind is JobKind.TRAIN_FOLD:
                    held = job_manifests.result_sample_ids(data_dir, ref.sha256, job.spec["fold"])
                    ids = np.setdiff1d(ids, held, assume_unique=True)
            except job_manifests.ManifestNotFound:
                continue
            members.append((job.id, ids))
    return sorted(members, key=lambda item: item[0])


def manifest_rows(
    session: Session, pipeline: Pipeline, dataset: Dataset, *, data_dir: Path | None = None
) -> list[dict[str, Any]]:
    """One row per sample of the dataset, by path (see :data:`MANIFEST_FIELDS`); with
    ``data_dir``, the training jobs each sample was in (``training_jobs``)."""
    names = sample_repository.class_names(session, dataset.id)
    sources = {r.id: r.source for r in repository.list_rounds(session, pipeline.id)}
    events = event_repository.events_by_sample(session, dataset.id)
    members = _training_members(session, pipeline, data_dir)
    rows = []
    for row in event_repository.export_rows(session, dataset.id):
        if row.status is not None:
            status = row.status.value
        elif row.missing:
            status = "missing"
        else:
            status = "unusable"
        history = _history(events.get(row.sample_id, []), sources)
        final = row.status is not None and row.status in TRAINABLE
        label_id = row.label_class_id if row.label_class_id is not None else row.given_class_id
        reason = _reason(status, history)
        if status == "unusable" and row.error:
            reason = f"unusable: {row.error}"
        used = [
            job_id
            for job_id, ids in members
            if (position := int(np.searchsorted(ids, row.sample_id))) < ids.shape[0]
            and int(ids[position]) == row.sample_id
        ]
        rows.append(
            {
                "path": row.path,
                "sample_id": row.sample_id,
                "given_label": names.get(row.given_class_id, ""),
                "label": names.get(label_id, "") if final else "",
                "status": status,
                "final": final,
                "reason": reason,
                "human_verdict": row.human_verdict.value if row.human_verdict else None,
                "decision_id": row.decision_id,
                "junk_score": _round(row.junk_score),
                "label_rank": row.label_rank,
                "cleanlab_issue": row.cl_issue,
                "cleanlab_quality": _round(row.cl_quality),
                "knn_issue": row.knn_issue,
                "knn_agreement": _round(row.knn_agreement),
                "training_jobs": used,
                "history": history,
            }
        )
    return rows


def manifest_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV; ``history`` as compact JSON, ``training_jobs`` space-separated."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **{key: "" if value is None else value for key, value in row.items()},
                "final": "1" if row["final"] else "0",
                "cleanlab_issue": ""
                if row["cleanlab_issue"] is None
                else int(row["cleanlab_issue"]),
                "knn_issue": "" if row["knn_issue"] is None else int(row["knn_issue"]),
                "training_jobs": " ".join(str(j) for j in row["training_jobs"]),
                "history": json.dumps(row["history"], sort_keys=True, separators=(",", ":")),
            }
        )
    return buffer.getvalue()


def manifest_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(
        json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
        for row in rows
    )


# --- the report ---------------------------------------------------------------------------------


def build_report(session: Session, pipeline: Pipeline, dataset: Dataset) -> dict[str, Any]:
    """Every number of the run: the funnel, each round (stats, jobs, tasks, events), the
    estimates, class sizes before/after/as sampled, training curves, the final metrics."""
    return {
        "dataset": {"id": dataset.id, "name": dataset.name, "root": dataset.root},
        "stage": pipeline.stage.value,
        "config": parse_config(pipeline.config).model_dump(mode="json"),
        "funnel": reports.funnel(session, dataset).model_dump(mode="json"),
        "rounds": [r.model_dump(mode="json") for r in reports.rounds(session, pipeline)],
        "estimates": [e.model_dump(mode="json") for e in reports.estimates(session, pipeline)],
        "classes": [
            c.model_dump(mode="json") for c in class_reports.class_sizes(session, pipeline, dataset)
        ],
        "training": [t.model_dump(mode="json") for t in reports.training_runs(session, pipeline)],
        "final": _dump(reports.final_metrics(session, pipeline)),
    }


def _dump(value: Any) -> Any:
    return None if value is None else value.model_dump(mode="json")


def report_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def report_html(report: dict[str, Any]) -> bytes:
    """``report`` (the dict of report.json) as one HTML page: the dashboard's sections, drawn by
    its templates, with the styles inline and the charts as inline SVG; no scripts, no links.
    The same report gives the same bytes."""
    css = "\n".join(
        (PROJECT_ROOT / "static" / name).read_text(encoding="utf-8") for name in REPORT_STYLES
    )
    template = create_templates().env.get_template("pipeline/report.html")
    styles = Markup(css)  # noqa: S704 -- the app's own stylesheets, not data
    return template.render(view=report_view(report), css=styles).encode()


def export_report_html(report: dict[str, Any], out_dir: Path) -> Path:
    """Writes ``report.html`` from ``report`` (the dict of report.json) into ``out_dir`` and
    returns its path."""
    path = out_dir / "report.html"
    _write(path, report_html(report))
    return path


# --- the directory ------------------------------------------------------------------------------


#: Marks a folder as an export, so that a later export may replace what is in it.
EXPORT_MARKER = ".thresher-export"


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise Invalid(f"{out_dir} is a file: export into a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / EXPORT_MARKER).is_file():
        raise Invalid(
            f"{out_dir} is not empty and holds no earlier export: export into a new or empty "
            "folder (nothing was changed)"
        )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _final_model(session: Session, pipeline: Pipeline, data_dir: Path) -> dict[str, Path]:
    final = repository.latest_round(session, pipeline.id, [RoundKind.FINAL_TRAINING])
    if final is None or final.state is not RoundState.DONE:
        return {}
    files = {}
    for job, role in repository.round_jobs(session, final.id):
        if role != "final":
            continue
        for name in MODEL_EXPORT_FILES:
            try:
                _, path = jobs.artifact_by_name(session, data_dir, job_id=job.id, name=name)
            except NotFound:  # recipe.yaml is optional
                continue
            files[name] = path
    return files


def safe_name(name: str) -> str:
    """A class name as a directory name: path separators and odd characters replaced."""
    cleaned = _UNSAFE.sub("_", name).strip(" .")
    return cleaned or "_"


def export_dataset(
    session: Session,
    *,
    pipeline: Pipeline,
    dataset: Dataset,
    out_dir: Path,
    data_dir: Path,
    require_model: bool = False,
) -> ExportResult:
    """Writes the export into ``out_dir``: a new or empty folder, or one holding an earlier
    export (which it replaces). Any other folder is refused untouched: the export replaces its
    ``images/`` and ``model/``, which there could be someone's files.

    Raises:
        Invalid: ``out_dir`` is a file, or a folder with other contents; or a model is required
            and there is none.
    """
    _check_out_dir(out_dir)
    rows = manifest_rows(session, pipeline, dataset, data_dir=data_dir)
    model = _final_model(session, pipeline, data_dir)
    if require_model and not model:
        raise Invalid(f"dataset {dataset.name!r} has no finished final training to export")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / EXPORT_MARKER, b"a Thresher export: the next export here replaces it\n")
    _write(out_dir / "manifest.csv", manifest_csv(rows).encode())
    _write(out_dir / "manifest.jsonl", manifest_jsonl(rows).encode())
    images = out_dir / "images"
    if images.exists():
        shutil.rmtree(images)
    root = Path(dataset.root)
    count = 0
    for row in rows:
        if not row["final"]:
            continue
        link = images / safe_name(row["label"]) / f"{row['sample_id']}_{Path(row['path']).name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root / row["path"])
        count += 1
    model_dir = out_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    for name, path in sorted(model.items()):
        _write(model_dir / name, path.read_bytes())
    report = build_report(session, pipeline, dataset)
    report["export"] = {
        "samples": len(rows),
        "final": sum(1 for row in rows if row["final"]),
        "images": count,
        "model_files": sorted(model),
    }
    _write(out_dir / "report.json", report_json(report))
    html = export_report_html(report, out_dir)
    return ExportResult(
        out_dir=out_dir,
        samples=len(rows),
        final=report["export"]["final"],
        images=count,
        model_files=sorted(model),
        report_html=html,
    )
