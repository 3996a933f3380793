"""The review area's business rules, one module per concern. Every function takes the session
first and flushes, never commits: the request's transaction makes each call atomic.

- ``tasks``: queueing tasks (batches, audits, second opinions) and dataset lookups.
- ``leases``: leasing, renewing and releasing tasks; a leased batch with what the pages show.
- ``decisions``: recording verdicts (all or none, idempotent per key) and undo; their errors.
- ``verdicts``: each sample's current human verdict and its decision history.
- ``stats``: queue counts, annotators' pace, agreement, an annotator's progress.
"""
