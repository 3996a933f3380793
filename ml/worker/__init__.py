"""The GPU worker: pulls jobs from a Thresher server over HTTP and runs them with the ML library.

``thresher worker`` (or ``python -m ml.worker``) starts one; :mod:`ml.worker.runner` is the loop,
:mod:`ml.worker.client` the only HTTP code in ``ml``, :mod:`ml.worker.handlers` the registry of
job kinds, :mod:`ml.worker.ddp` the multi-GPU launch.
"""
