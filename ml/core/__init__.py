"""The torch-free core of ``ml/``: what both the server (``app/``) and the worker import.

Nothing here imports torch, torchvision, timm or cleanlab at import time, nor ``app``
(tests/test_packaging.py checks both, and that ``app/`` imports nothing else from ``ml/``).

- :mod:`ml.core.protocol`: the wire protocol (job specs, worker messages, binary bundles);
- :mod:`ml.core.recipes`: finding and reading a recipe by name or path, ``--set`` overrides;
- :mod:`ml.core.folds`: the seeded stratified folds of cross-validation;
- :mod:`ml.core.cleaning`: the label-cleaning rules (top-k, pull-back, confident learning, kNN);
- :mod:`ml.core.augment_config`: a recipe's augmentation settings.
"""
