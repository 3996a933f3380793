"""Every link the pages print: the HTML pages, and the API and media URLs they point at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from app.models import IssueReason, JobState

# --- datasets and their imports -----------------------------------------------------------------


def dataset_url(dataset_id: int, *, reason: IssueReason | None = None) -> str:
    """The dataset page; ``reason``: its problem-file list filtered to that reason."""
    base = f"/datasets/{dataset_id}"
    return f"{base}?{urlencode({'reason': reason.value})}" if reason is not None else base


def import_report_url(dataset_id: int, import_id: int) -> str:
    return f"/datasets/{dataset_id}/imports/{import_id}/report"


def issues_url(
    dataset_id: int, import_id: int, *, reason: IssueReason | None = None, offset: int = 0
) -> str:
    query: dict[str, str | int] = {}
    if reason is not None:
        query["reason"] = reason.value
    if offset:
        query["offset"] = offset
    base = f"/datasets/{dataset_id}/imports/{import_id}/issues"
    return f"{base}?{urlencode(query)}" if query else base


def dataset_samples_url(dataset_id: int) -> str:
    """The API's list of a dataset's imported samples."""
    return f"/api/datasets/{dataset_id}/samples"


# --- images -------------------------------------------------------------------------------------


#: How much of a file's SHA-256 a thumbnail URL carries to name its content (the media route
#: lets the browser keep a thumbnail for good only when it does: app.media.service).
THUMBNAIL_VERSION_CHARS = 16


def thumbnail_url(sample_id: int, sha256: str | None, size: int) -> str:
    """The sample's thumbnail; ``sha256`` None (an import issue): unversioned, which the server
    revalidates on every use instead of letting the browser keep it."""
    # The query names the content, so a re-imported, changed file gets a new URL despite the
    # thumbnails' "immutable" caching.
    base = f"/media/samples/{sample_id}/thumb/{size}"
    return f"{base}?v={sha256[:THUMBNAIL_VERSION_CHARS]}" if sha256 is not None else base


def original_url(sample_id: int) -> str:
    return f"/media/samples/{sample_id}/original"


def pick_thumbnail_size(sizes: Sequence[int], want: int) -> int:
    """The smallest configured size at least ``want``, else the largest there is."""
    bigger = [size for size in sizes if size >= want]
    return min(bigger) if bigger else max(sizes)


# --- the cleaning dashboard ---------------------------------------------------------------------


def cleaning_url(dataset_id: int, *, section: str = "") -> str:
    """The dataset's cleaning dashboard; ``section``: the id of the part to scroll to."""
    base = f"/datasets/{dataset_id}/cleaning"
    return f"{base}#{section}" if section else base


def cleaning_live_url(dataset_id: int) -> str:
    """The dashboard's live part, polled while a round is open."""
    return f"/datasets/{dataset_id}/cleaning/live"


def restore_class_url(dataset_id: int, class_id: int) -> str:
    return f"/datasets/{dataset_id}/cleaning/classes/{class_id}/restore"


def pipeline_samples_url(dataset_id: int, query: Mapping[str, str] | None = None) -> str:
    """The samples API's list under a filter (a funnel step's, a round's events…)."""
    base = f"/api/pipelines/{dataset_id}/samples"
    return f"{base}?{urlencode(sorted(query.items()))}" if query else base


def round_url(dataset_id: int, round_id: int) -> str:
    return f"/api/pipelines/{dataset_id}/rounds/{round_id}"


# --- jobs ---------------------------------------------------------------------------------------


def jobs_url(*, state: JobState | None = None, before_id: int | None = None) -> str:
    """The job list: only jobs in ``state``; ``before_id``: the page after that job."""
    query: dict[str, str | int] = {}
    if before_id is not None:
        query["before_id"] = before_id
    if state is not None:
        query["state"] = state.value
    return f"/jobs?{urlencode(query)}" if query else "/jobs"


def job_table_url(state: JobState | None = None) -> str:
    """The job list's table, polled while jobs are active."""
    return (
        f"/jobs/table?{urlencode({'state': state.value})}" if state is not None else "/jobs/table"
    )


def job_url(job_id: int) -> str:
    return f"/jobs/{job_id}"


def job_live_url(job_id: int) -> str:
    """The job page's live part, polled while the job is active."""
    return f"/jobs/{job_id}/live"


def artifact_url(job_id: int, name: str) -> str:
    return f"/api/jobs/{job_id}/artifacts/{name}"
