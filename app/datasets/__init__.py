"""Datasets: registering and importing them, who may see them, and what they hold.

- ``routes``, ``grant_routes`` (the API), ``pages`` with ``views`` and ``import_views`` (HTML),
  ``cli`` and ``grant_cli`` (``thresher import``, ``thresher grants``): thin, each calls a service.
- ``deps`` (the dataset in the path, or 404) and ``access`` (who sees which dataset), ``grants``.
- ``service``: registering and summarising; ``importer`` runs one import: ``sources`` (what the
  user named) -> ``scanning`` / ``manifest_scan`` (the files and their labels) -> ``probe`` (each
  image's facts) -> ``import_repository`` (bulk writes). ``roots`` and ``files`` confine what a
  request may read.
- ``repository``: every other query on datasets, classes, samples, imports and grants;
  ``schemas``: what the services return and the API's bodies.
"""
