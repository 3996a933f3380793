"""Job specs: discriminated by kind, strict about their fields; device kinds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ml.core.protocol.jobs import (
    JobKind,
    ManifestRef,
    TrainFoldSpec,
    device_kind,
    parse_spec,
    result_set,
    spec_json,
)

SHA = "ab" * 32


def test_specs_are_discriminated_by_kind() -> None:
    ref = {"sha256": SHA, "count": 5, "num_classes": 2}
    spec = parse_spec({"kind": "train_fold", "recipe": "cifar-small", "train": ref, "fold": 2})
    assert isinstance(spec, TrainFoldSpec)
    assert spec.kind is JobKind.TRAIN_FOLD
    assert parse_spec(spec_json(spec)) == spec
    assert result_set(spec) == (ManifestRef(**ref), 2)


def test_unknown_spec_fields_are_refused() -> None:
    ref = {"sha256": SHA, "count": 5, "num_classes": 2}
    with pytest.raises(ValidationError):
        parse_spec({"kind": "predict", "predict": ref, "model": None, "typo": 1})


def test_device_kinds() -> None:
    assert device_kind("cuda:3").value == "cuda"
    assert device_kind("cpu").value == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        device_kind("tpu")
