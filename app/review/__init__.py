"""The review queue: engineers and pipeline rounds queue tasks, annotators lease and decide them.

- ``routes`` (the API), ``pages`` (HTML, with ``views`` and ``stats_views`` as view models),
  ``cli`` (``thresher queue``): thin, each calls the services.
- ``service/``: the rules, one module per concern: tasks, leases, decisions, verdicts, stats.
- ``repository/``: every query on the review tables, by the same concerns (and what the
  pipeline reads of them).
- ``records``: what the services take and return; ``schemas``: the API's bodies.
"""
