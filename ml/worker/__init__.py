"""The GPU worker: pulls jobs from a Thresher server over HTTP and runs them with the ML library.

``thresher worker`` (or ``python -m ml.worker``) starts one (:mod:`ml.worker.cli`):

* :mod:`ml.worker.runner` the loop (lease, run, publish), :mod:`ml.worker.context` a leased job's
  progress, stop signal and heartbeat, :mod:`ml.worker.client` the only HTTP code in ``ml``;
* :mod:`ml.worker.handlers` the registry of job kinds, which resolve a job's inputs
  (:mod:`ml.worker.inputs`, :mod:`ml.worker.sets`) into a :mod:`~ml.worker.task`;
* :mod:`ml.worker.execution` runs it here, or :mod:`ml.worker.ddp` on several GPUs; either way
  :mod:`ml.worker.compute` does each kind's ML work with the same functions the ``thresher ml``
  CLI calls, through the runtime seam (:mod:`ml.runtime`).
"""
