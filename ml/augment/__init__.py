"""Training augmentations: explicit parameters, explicit randomness, composable into a recipe.

A recipe describes them with one :class:`~ml.core.augment_config.AugmentConfig` (torch-free, so
the server can read it; every augmentation off by default), e.g. ``{"hflip": {"p": 0.5},
"rotate4": {"p": 0.25}, "cutmix": {"alpha": 1.0, "p": 0.5}}``. Two levels act on it:

- :mod:`ml.augment.transforms`: per-sample transforms on one decoded uint8 image ``[3, H, W]``,
  composed by :func:`~ml.augment.transforms.build_sample_transform`;
- :mod:`ml.augment.batch`: CutMix and mixup on a float batch, with soft targets, and
  normalisation;
- :mod:`ml.augment.randomness`: the per-sample generators every random choice draws from;
- :mod:`ml.augment.preview`: a grid of augmented views (``thresher augment-preview``).
"""
