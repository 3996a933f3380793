"""The wire protocol between the server and its workers: the one definition both sides import.

Imports only pydantic and numpy, so the server can use it without the ML stack and the worker
without the server.

- :mod:`~ml.core.protocol.jobs`: job kinds, device kinds, one spec model per kind, and the
  references a spec holds (manifests, artifacts, models, probabilities).
- :mod:`~ml.core.protocol.messages`: the JSON bodies of the worker endpoints (lease, heartbeat,
  complete, fail, release), the fence and checksum headers and their size limits.
- :mod:`~ml.core.protocol.bundles`: the binary payloads (results, manifests, label issues,
  embeddings); :mod:`~ml.core.protocol.bundle_format`: the byte container they share.
"""
