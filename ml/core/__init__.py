"""The torch-free core of ``ml/``: what both the server (``app/``) and the worker import.

Nothing here imports torch, torchvision, timm or cleanlab (tests/test_packaging.py checks it),
nor ``app``. The wire protocol is in :mod:`ml.core.protocol`.
"""
