"""What the benchmarks and the real-process tests share: nothing here imports a benchmark script
or anything under ``tests/``, so either may use it.

- :mod:`bench.harness.processes`: a uvicorn server on a free port (started once ``/healthz``
  answers), CPU worker processes, polling until something holds;
- :mod:`bench.harness.databases`: a migrated SQLite database, a throwaway PostgreSQL one;
- :mod:`bench.harness.stack`: the cleaning loop's whole stack (server with its reconciler, a
  worker, simulated annotators) and its export;
- :mod:`bench.harness.labelled_sets`: real images written as a manifest to import and its truth;
- :mod:`bench.harness.reporting`: the start of every script (threads that share the cores
  politely), wall-clock timing, machine facts, text tables and ``bench/results/<name>.json``.
"""
