"""Every query of the review area, one module per concern; services call these, never the ORM.

- ``tables``: the review tables as Core handles, the row types, shared SQL pieces.
- ``tasks``: queueing tasks and the lookups that check them; the pipeline's view of its rounds'
  tasks (and withdrawing those it no longer needs).
- ``leases``: taking, renewing, releasing and reopening leases; who holds a round's tasks.
- ``decisions``: locking tasks, inserting decisions, marking tasks done.
- ``verdicts``: standing verdicts, a sample's history, what the pipeline reads of decisions.
- ``references``: class names, sizes and example samples for the review pages.
- ``stats``: counts per queue, decisions per annotator and hour, medians, agreement pairs.

Leases and decisions are the hot path: a few set-based Core statements each, no ORM objects.
"""
