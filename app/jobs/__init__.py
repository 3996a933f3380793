"""Jobs: the GPU work the pipeline and engineers queue, and the worker protocol that runs it.

- Engineers: ``routes`` (the API) and ``pages`` with ``views`` call ``service``; ``specs`` turns
  a request into a job spec, with its sample list stored by ``manifests``.
- Workers: ``worker_routes`` calls ``worker_service`` (leases, heartbeats, how an attempt ends)
  and ``uploads`` (result chunks and artifacts, within quotas); ``deps`` says who is a worker.
- ``lifecycle``: the state machine both services drive; ``repository`` and ``ingest``: every
  query on jobs and their results; ``embeddings``: which stored embeddings a dataset has;
  ``local_workers``: workers that ``thresher serve --local-workers`` starts; ``config``: timings
  and limits.
"""
