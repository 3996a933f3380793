"""The links the pages print."""

from __future__ import annotations

from app.models import IssueReason, JobState
from app.web.urls import (
    cleaning_url,
    dataset_url,
    issues_url,
    job_table_url,
    jobs_url,
    pick_thumbnail_size,
    thumbnail_url,
)


def test_the_next_page_of_jobs_keeps_the_state_filter() -> None:
    assert jobs_url() == "/jobs"
    assert jobs_url(state=JobState.FAILED) == "/jobs?state=failed"
    assert jobs_url(state=JobState.FAILED, before_id=40) == "/jobs?before_id=40&state=failed"
    assert job_table_url(JobState.RUNNING) == "/jobs/table?state=running"


def test_issue_links_carry_the_reason_and_the_offset() -> None:
    assert issues_url(3, 7) == "/datasets/3/imports/7/issues"
    assert (
        issues_url(3, 7, reason=IssueReason.EMPTY_FILE, offset=100)
        == "/datasets/3/imports/7/issues?reason=empty_file&offset=100"
    )
    assert dataset_url(3, reason=IssueReason.EMPTY_FILE) == "/datasets/3?reason=empty_file"


def test_a_dashboard_section_is_a_fragment() -> None:
    assert cleaning_url(3, section="cleaning-dropped") == "/datasets/3/cleaning#cleaning-dropped"


def test_a_thumbnail_url_names_the_content_unless_the_sample_has_none() -> None:
    sha256 = "0123456789abcdef" + "f" * 48
    assert thumbnail_url(5, sha256, 96) == "/media/samples/5/thumb/96?v=0123456789abcdef"
    assert thumbnail_url(5, None, 96) == "/media/samples/5/thumb/96"


def test_a_thumbnail_is_the_smallest_size_at_least_the_one_shown() -> None:
    """Never upscaled where a larger size is configured (the closest would be 100 for 128)."""
    assert pick_thumbnail_size((100, 300), 128) == 300
    assert pick_thumbnail_size((96, 128, 256, 512), 128) == 128
    assert pick_thumbnail_size((96, 128), 512) == 128  # none large enough: the largest
