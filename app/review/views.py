"""View models of the review pages: everything a template shows, worked out here.

Templates only print these fields and loop over their lists: no queries, no arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.models import Dataset, TaskKind
from app.review.records import LeasedTask, QueueCount, QueueProgress, ReviewBatch, SampleImage
from app.web.formatting import number, plural
from app.web.urls import pick_thumbnail_size, thumbnail_url

KIND_TITLES = {
    TaskKind.JUNK_CHECK: "Junk check",
    TaskKind.JUNK_AUDIT: "Junk audit",
    TaskKind.LABEL_CHECK: "Label check",
    TaskKind.CLASS_CHECK: "Class check",
}
KIND_HINTS = {
    TaskKind.JUNK_CHECK: "Images a model flagged: mark the junk ones, a page at a time.",
    TaskKind.JUNK_AUDIT: "A random sample of images believed clean: mark any junk.",
    TaskKind.LABEL_CHECK: "Is the given label right? If not, which class, or is it junk?",
    TaskKind.CLASS_CHECK: "Small classes: keep or drop each one.",
}
#: Which page reviews a kind.
MODES = {
    TaskKind.JUNK_CHECK: "grid",
    TaskKind.JUNK_AUDIT: "grid",
    TaskKind.LABEL_CHECK: "label",
    TaskKind.CLASS_CHECK: "class",
}
GRID_PAGE_SIZES = (48, 72, 96)
GRID_COLUMNS = {48: 12, 72: 14, 96: 16}
#: Label review: items held ahead of the one shown, so the next appears at once.
LABEL_AHEAD = 2
GIVEN_REFERENCES = 8
SUGGESTION_REFERENCES = 6
CLASS_GRID = 48
#: Thumbnail sizes (px, longest side) each place asks for; the nearest offered one is used.
GRID_THUMB = 128
SUBJECT_THUMB = 512
REFERENCE_THUMB = 96
#: "N left" is counted up to this, then shown as "N+".
REMAINING_CAP = 10_000

Keys = list[tuple[str, str]]

GRID_KEYS: Keys = [
    ("← → ↑ ↓", "Move"),
    ("Space", "Mark or unmark junk"),
    ("Click", "Mark or unmark junk"),
    ("Shift-click", "Mark a range like the last one clicked"),
    ("Enter", "Submit the page (unmarked = not junk)"),
]
LABEL_KEYS: Keys = [
    ("A", "The given label is right"),
    ("1–5", "Pick that suggestion"),
    ("J", "Junk"),
    ("U", "Unsure"),
    ("/", "Search every class; Enter picks"),
    ("Backspace", "Undo the previous decision"),
]
CLASS_KEYS: Keys = [
    ("K", "Keep the class"),
    ("D", "Drop the class"),
    ("Backspace", "Undo the previous decision"),
]


def queue_url(dataset_id: int, kind: TaskKind) -> str:
    return f"/review/{dataset_id}/{kind.value}"


def seconds_text(value: float | None) -> str:
    """Seconds per decision: "12.5 s", or minutes from a minute on."""
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 60 else f"{value / 60:.1f} min"


def share_text(value: float) -> str:
    """A share in [0, 1] as a whole percentage; "<1%" for a sliver."""
    return "<1%" if 0 < value < 0.01 else f"{value * 100:.0f}%"


# --- home ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCard:
    dataset_name: str
    kind: str
    title: str
    hint: str
    available: str
    leased: str
    url: str


@dataclass(frozen=True)
class KindCount:
    title: str
    count: str


@dataclass(frozen=True)
class ProgressView:
    decisions: str
    median: str
    by_kind: list[KindCount]
    remaining: str | None  # the queue on a review page; None on the home page


@dataclass(frozen=True)
class HomeView:
    username: str
    queues: list[QueueCard]
    progress: ProgressView


def progress_view(progress: QueueProgress, *, remaining: int | None = None) -> ProgressView:
    return ProgressView(
        decisions=number(progress.decisions),
        median=seconds_text(progress.median_seconds),
        by_kind=[
            KindCount(title=KIND_TITLES[kind], count=number(progress.by_kind[kind]))
            for kind in TaskKind
            if progress.by_kind.get(kind)
        ],
        remaining=None
        if remaining is None
        else (f"{REMAINING_CAP:,}+" if remaining >= REMAINING_CAP else number(remaining)),
    )


def home(username: str, queues: Sequence[QueueCount], progress: QueueProgress) -> HomeView:
    cards = [
        QueueCard(
            dataset_name=queue.dataset_name,
            kind=queue.kind.value,
            title=KIND_TITLES[queue.kind],
            hint=KIND_HINTS[queue.kind],
            available=number(queue.pending),
            leased=number(queue.leased),
            url=queue_url(queue.dataset_id, queue.kind),
        )
        for queue in queues
        if queue.pending or queue.leased
    ]
    return HomeView(username=username, queues=cards, progress=progress_view(progress))


# --- review pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumb:
    sample_id: int
    url: str
    alt: str


@dataclass(frozen=True)
class Tile:
    task_id: int
    lease_version: int
    thumb: Thumb
    note: str  # the reason and score, as a tooltip


@dataclass(frozen=True)
class SuggestionView:
    key: str
    class_id: int
    name: str
    probability: str
    is_given: bool
    references: list[Thumb]


@dataclass(frozen=True)
class LabelItem:
    task_id: int
    lease_version: int
    sample_id: int
    image_url: str
    given_class_id: int
    given_name: str
    given_references: list[Thumb]
    suggestions: list[SuggestionView]
    note: str


@dataclass(frozen=True)
class ClassItem:
    task_id: int
    lease_version: int
    class_id: int
    name: str
    size: str
    thumbs: list[Thumb]
    more: str | None  # "and N more" when the grid shows only part of the class
    note: str


@dataclass(frozen=True)
class Batch:
    """What one lease shows: a grid page, or label or class items (the first one in front)."""

    mode: str
    empty: bool
    tiles: list[Tile]
    columns: int
    label_items: list[LabelItem]
    class_items: list[ClassItem]


@dataclass(frozen=True)
class SizeLink:
    size: int
    url: str
    current: bool


@dataclass(frozen=True)
class ReviewPage:
    dataset_id: int
    dataset_name: str
    kind: str
    title: str
    hint: str
    mode: str
    keys: Keys
    page_size: int
    size_links: list[SizeLink]  # grid review: other page sizes
    ahead: int
    progress: ProgressView
    next_url: str
    progress_url: str
    classes_url: str
    home_url: str
    renew_url: str
    release_url: str
    lease_seconds: int  # the page renews its leases well within this


def note(task: LeasedTask) -> str:
    parts = [task.source]
    if task.reason:
        parts.append(task.reason)
    if task.score is not None:
        parts.append(f"score {task.score:.2f}")
    return " · ".join(parts)


def batch(
    kind: TaskKind,
    data: ReviewBatch,
    *,
    thumbnail_sizes: Sequence[int],
    page_size: int = GRID_PAGE_SIZES[0],
) -> Batch:
    mode = MODES[kind]
    tiles: list[Tile] = []
    label_items: list[LabelItem] = []
    class_items: list[ClassItem] = []
    if mode == "grid":
        size = pick_thumbnail_size(thumbnail_sizes, GRID_THUMB)
        tiles = [
            Tile(
                task_id=task.id,
                lease_version=task.lease_version,
                thumb=_thumb(_subject(task), size),
                note=note(task),
            )
            for task in data.tasks
        ]
    elif mode == "label":
        label_items = [_label_item(task, data, thumbnail_sizes) for task in data.tasks]
    else:
        class_items = [_class_item(task, data, thumbnail_sizes) for task in data.tasks]
    return Batch(
        mode=mode,
        empty=not data.tasks,
        tiles=tiles,
        columns=GRID_COLUMNS.get(page_size, GRID_COLUMNS[GRID_PAGE_SIZES[0]]),
        label_items=label_items,
        class_items=class_items,
    )


def _subject(task: LeasedTask) -> SampleImage:
    return SampleImage(task.sample_id or 0, task.sample_sha256)


def _thumb(sample: SampleImage, size: int) -> Thumb:
    return Thumb(
        sample_id=sample.id,
        url=thumbnail_url(sample.id, sample.sha256, size),
        alt=f"sample {sample.id}",
    )


def _label_item(task: LeasedTask, data: ReviewBatch, sizes: Sequence[int]) -> LabelItem:
    reference = pick_thumbnail_size(sizes, REFERENCE_THUMB)
    given = task.given_class_id or 0

    def refs(class_id: int, limit: int) -> list[Thumb]:
        found = data.references.get(class_id)
        return [_thumb(sample, reference) for sample in found.samples[:limit]] if found else []

    subject = _subject(task)
    return LabelItem(
        task_id=task.id,
        lease_version=task.lease_version,
        sample_id=subject.id,
        image_url=thumbnail_url(
            subject.id, subject.sha256, pick_thumbnail_size(sizes, SUBJECT_THUMB)
        ),
        given_class_id=given,
        given_name=data.class_names.get(given, f"class {given}"),
        given_references=refs(given, GIVEN_REFERENCES),
        suggestions=[
            SuggestionView(
                key=str(index),
                class_id=suggestion.class_id,
                name=data.class_names.get(suggestion.class_id, f"class {suggestion.class_id}"),
                probability=share_text(suggestion.probability),
                is_given=suggestion.class_id == given,
                references=refs(suggestion.class_id, SUGGESTION_REFERENCES),
            )
            for index, suggestion in enumerate(task.suggestions[:5], start=1)
        ],
        note=note(task),
    )


def _class_item(task: LeasedTask, data: ReviewBatch, sizes: Sequence[int]) -> ClassItem:
    class_id = task.class_id or 0
    size = data.class_sizes.get(class_id, 0)
    shown = data.class_samples.get(class_id, [])
    thumb = pick_thumbnail_size(sizes, GRID_THUMB)
    return ClassItem(
        task_id=task.id,
        lease_version=task.lease_version,
        class_id=class_id,
        name=data.class_names.get(class_id, f"class {class_id}"),
        size=plural(size, "image"),
        thumbs=[_thumb(sample, thumb) for sample in shown],
        more=f"and {size - len(shown):,} more" if size > len(shown) else None,
        note=note(task),
    )


def review_page(
    dataset: Dataset,
    kind: TaskKind,
    progress: QueueProgress,
    *,
    remaining: int,
    page_size: int,
    lease_seconds: int,
) -> ReviewPage:
    """The page around the batches; it holds no task (its script leases them)."""
    mode = MODES[kind]
    keys = {"grid": GRID_KEYS, "label": LABEL_KEYS, "class": CLASS_KEYS}[mode]
    base = queue_url(dataset.id, kind)
    return ReviewPage(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        kind=kind.value,
        title=KIND_TITLES[kind],
        hint=KIND_HINTS[kind],
        mode=mode,
        keys=keys,
        page_size=page_size,
        size_links=[
            SizeLink(size=size, url=f"{base}?size={size}", current=size == page_size)
            for size in GRID_PAGE_SIZES
        ]
        if mode == "grid"
        else [],
        ahead=LABEL_AHEAD,
        progress=progress_view(progress, remaining=remaining),
        next_url=f"{base}/next",
        progress_url=f"{base}/progress",
        classes_url=f"/api/review/datasets/{dataset.id}/classes",
        home_url="/",
        renew_url="/api/review/leases/renew",
        release_url="/review/release",
        lease_seconds=lease_seconds,
    )
