"""The cleaning loop of one dataset: rounds of jobs and review, verdicts, the final training,
the dashboard and the export.

- ``routes`` (the API), ``pages`` with ``views/`` (the dashboard), ``cli`` and ``simulate_cli``:
  thin. Commands are in ``service``; what the loop shows is in ``reports``, ``class_reports``,
  ``sample_reports`` and ``waiting``; ``export`` writes the cleaned dataset.
- The loop itself: ``stages/`` (junk, labels, final: what each round queues and decides, with
  ``RULES``), ``rules`` (pure decisions), ``verdicts`` (human decisions applied), ``reconcile``
  (moves pipelines on, in the background), ``estimates`` (bounds from samples).
- Queries: ``repository`` (pipelines, rounds), ``sample_repository``, ``event_repository``,
  ``result_repository``; ``schemas`` and ``config`` are what they read and write.
- ``simulate`` and ``truth``: simulated annotators answering from a ground truth.
"""
