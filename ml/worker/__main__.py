"""``python -m ml.worker``: the same command as ``thresher worker``."""

from ml.worker.cli import main

main()
