"""The benchmarks' results files and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.harness.reporting import table, write_results


def test_results_keep_numpy_values_and_paths_as_plain_json(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "run.json"
    payload = {"rate": np.float32(2.5), "counts": np.arange(3), "where": tmp_path}

    written = write_results("ignored", payload, out=out)

    assert written == out
    assert json.loads(out.read_text()) == {"rate": 2.5, "counts": [0, 1, 2], "where": str(tmp_path)}


def test_a_table_shows_floats_to_four_places_and_none_as_a_dash() -> None:
    text = table(["name", "value"], [["a", 0.123456], ["bb", None]])

    assert text.splitlines() == ["name  value ", "----  ------", "a     0.1235", "bb    -     "]
