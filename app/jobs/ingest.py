"""Bulk reads and writes of per-sample job results.

Writes: on PostgreSQL a binary ``COPY`` whose rows numpy lays out in one pass (no per-row
Python); a chunk whose samples are already stored under another chunk falls back to a staging
table and ``INSERT … ON CONFLICT DO UPDATE``. On SQLite one ``executemany`` upsert. Either way
a sample has at most one row per job: re-sent rows replace, never duplicate.

Reads: :func:`read_results` returns the job's rows as arrays, ordered by sample id.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ml.core.protocol.bundles import ResultChunk

_COLUMNS = (
    "job_id",
    "sample_id",
    "chunk",
    "topk_class_id",
    "topk_prob",
    "label_prob",
    "junk_score",
)
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_COPY_TRAILER = struct.pack(">h", -1)


def write_results(session: Session, *, job_id: int, chunk_index: int, chunk: ResultChunk) -> None:
    """Stores ``chunk``'s rows for ``job_id`` under ``chunk_index``, replacing any stored row
    of the same samples."""
    if len(chunk) == 0:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _write_postgres(session, job_id, chunk_index, chunk)
    else:
        _write_sqlite(session, job_id, chunk_index, chunk)


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_copy_payload(job_id: int, chunk_index: int, chunk: ResultChunk) -> bytes:
    """The rows of ``chunk`` in PostgreSQL's binary COPY format, for the columns ``_COLUMNS``:
    int4 job_id, int8 sample_id, int4 chunk, bytea × 2 (the raw little-endian top-k arrays),
    float4 × 2; an absent array is NULL in every row."""
    n = len(chunk)
    k = chunk.k
    fields: list[tuple[str, str]] = [("count", ">i2")]
    fields += [("job_len", ">i4"), ("job", ">i4"), ("sid_len", ">i4"), ("sid", ">i8")]
    fields += [("chunk_len", ">i4"), ("chunk", ">i4")]
    if k:
        fields += [("ids_len", ">i4"), ("ids", f"V{4 * k}"), ("probs_len", ">i4")]
        fields += [("probs", f"V{4 * k}")]
    else:
        fields += [("ids_len", ">i4"), ("probs_len", ">i4")]
    for name, array in (("label", chunk.label_prob), ("junk", chunk.junk_score)):
        fields.append((f"{name}_len", ">i4"))
        if array is not None:
            fields.append((name, ">f4"))
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = len(_COLUMNS)
    rows["job_len"], rows["job"] = 4, job_id
    rows["sid_len"], rows["sid"] = 8, chunk.sample_id
    rows["chunk_len"], rows["chunk"] = 4, chunk_index
    if k:
        assert chunk.topk_class_id is not None and chunk.topk_prob is not None
        rows["ids_len"] = rows["probs_len"] = 4 * k
        rows["ids"] = np.ascontiguousarray(chunk.topk_class_id, "<i4").view(f"V{4 * k}")[:, 0]
        rows["probs"] = np.ascontiguousarray(chunk.topk_prob, "<f4").view(f"V{4 * k}")[:, 0]
    else:
        rows["ids_len"] = rows["probs_len"] = -1
    for name, array in (("label", chunk.label_prob), ("junk", chunk.junk_score)):
        if array is None:
            rows[f"{name}_len"] = -1
        else:
            rows[f"{name}_len"], rows[name] = 4, array
    return _PG_COPY_HEADER + rows.tobytes() + _PG_COPY_TRAILER


def _copy(session: Session, table: str, payload: bytes) -> None:
    driver = session.connection().connection.driver_connection
    assert driver is not None
    statement = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        view = memoryview(payload)
        for start in range(0, len(view), 8 << 20):
            copy.write(view[start : start + (8 << 20)])


def _write_postgres(session: Session, job_id: int, chunk_index: int, chunk: ResultChunk) -> None:
    payload = pg_copy_payload(job_id, chunk_index, chunk)
    try:
        with session.begin_nested():
            _copy(session, "job_results", payload)
        return
    except (IntegrityError, psycopg.errors.UniqueViolation):
        pass  # some samples are stored already (under another chunk): upsert instead
    session.execute(
        text(
            "CREATE TEMPORARY TABLE IF NOT EXISTS job_results_incoming "
            "(LIKE job_results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    session.execute(text("DELETE FROM job_results_incoming"))
    _copy(session, "job_results_incoming", payload)
    session.execute(
        text(
            f"INSERT INTO job_results ({', '.join(_COLUMNS)}) "
            f"SELECT {', '.join(_COLUMNS)} FROM job_results_incoming "
            "ON CONFLICT (job_id, sample_id) DO UPDATE SET chunk = EXCLUDED.chunk, "
            "topk_class_id = EXCLUDED.topk_class_id, topk_prob = EXCLUDED.topk_prob, "
            "label_prob = EXCLUDED.label_prob, junk_score = EXCLUDED.junk_score"
        )
    )


# --- SQLite ---------------------------------------------------------------------------------


def _write_sqlite(session: Session, job_id: int, chunk_index: int, chunk: ResultChunk) -> None:
    n = len(chunk)
    k = chunk.k
    columns: list[Any] = [
        [job_id] * n,
        chunk.sample_id.tolist(),
        [chunk_index] * n,
    ]
    if k:
        assert chunk.topk_class_id is not None and chunk.topk_prob is not None
        columns.append(_blobs(chunk.topk_class_id, "<i4"))
        columns.append(_blobs(chunk.topk_prob, "<f4"))
    else:
        columns += [[None] * n, [None] * n]
    for array in (chunk.label_prob, chunk.junk_score):
        columns.append([None] * n if array is None else array.astype(np.float64).tolist())
    placeholders = ", ".join("?" * len(_COLUMNS))
    statement = (
        f"INSERT INTO job_results ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (job_id, sample_id) DO UPDATE SET chunk = excluded.chunk, "
        "topk_class_id = excluded.topk_class_id, topk_prob = excluded.topk_prob, "
        "label_prob = excluded.label_prob, junk_score = excluded.junk_score"
    )
    driver = session.connection().connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.executemany(statement, zip(*columns, strict=True))
    finally:
        cursor.close()


def _blobs(array: NDArray[Any], dtype: str) -> list[bytes]:
    """Each row of a 2-D array as its little-endian bytes."""
    contiguous = np.ascontiguousarray(array, dtype)
    width = contiguous.shape[1] * contiguous.dtype.itemsize
    rows: list[bytes] = contiguous.view(f"V{width}")[:, 0].tolist()
    return rows


# --- reading --------------------------------------------------------------------------------


def read_results(session: Session, job_id: int) -> ResultChunk:
    """Every stored result of ``job_id`` as arrays, ordered by sample id. Arrays absent from all
    rows are ``None``; NULL probabilities read as NaN."""
    rows = session.execute(
        text(
            "SELECT sample_id, topk_class_id, topk_prob, label_prob, junk_score "
            "FROM job_results WHERE job_id = :job_id ORDER BY sample_id"
        ),
        {"job_id": job_id},
    ).all()
    n = len(rows)
    sample_id = np.fromiter((row[0] for row in rows), dtype=np.int64, count=n)
    ids_blobs = [row[1] for row in rows]
    topk_ids = topk_prob = None
    if n and all(blob is not None for blob in ids_blobs):
        k = len(ids_blobs[0]) // 4
        topk_ids = np.frombuffer(b"".join(ids_blobs), dtype="<i4").reshape(n, k)
        probs = b"".join(bytes(row[2]) for row in rows)
        topk_prob = np.frombuffer(probs, dtype="<f4").reshape(n, k)
    return ResultChunk(
        sample_id=sample_id,
        topk_class_id=topk_ids,
        topk_prob=topk_prob,
        label_prob=_floats([row[3] for row in rows]),
        junk_score=_floats([row[4] for row in rows]),
    )


def _floats(values: list[float | None]) -> NDArray[np.float32] | None:
    if not values or all(value is None for value in values):
        return None
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)
