"""Where a job's inputs come from on this machine (ml/worker/inputs.py)."""

from __future__ import annotations

import pytest

from ml.worker.inputs import PathMap, parse_path_map


def test_path_map_rewrites_prefixes_only_at_a_boundary() -> None:
    mapping = parse_path_map(["/srv/images=/mnt/imgs", "/data=/d"])
    assert mapping.apply("/srv/images/cat/1.jpg") == "/mnt/imgs/cat/1.jpg"
    assert mapping.apply("/srv/images2/cat/1.jpg") == "/srv/images2/cat/1.jpg"
    assert mapping.apply("/data/x") == "/d/x"
    assert PathMap().apply("/a") == "/a"
    with pytest.raises(ValueError, match="FROM=TO"):
        parse_path_map(["/no-target"])
