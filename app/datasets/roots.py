"""The server folders the API may import from (``THRESHER_IMPORT_ROOTS``).

A path from a request is checked before anything else is done with it: with symlinks and
``..`` resolved, it must lie inside one of the roots. The data directory (the database, the
secret key, artifacts) is off limits even under a root that contains it, unless the root itself
lies inside it (the demo's folder). The refusal is the same whether the path exists or not, so
the API cannot be used to probe the server's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.errors import Invalid
from app.settings import Settings


@dataclass(frozen=True)
class ImportRoots:
    allowed: tuple[Path, ...]
    data_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> ImportRoots:
        return cls(allowed=settings.allowed_import_roots, data_dir=settings.data_dir)

    def check(self, path: str, *, field: str) -> None:
        """Raises ``Invalid`` (naming ``field``) unless ``path`` may be imported from."""
        if not path or "\x00" in path:
            raise Invalid("give the path of a file or folder on the server", field=field)
        real = os.path.realpath(Path(path).expanduser())
        private = os.path.realpath(self.data_dir)
        for root in self.allowed:
            top = os.path.realpath(root)
            if _inside(real, top) and (not _inside(real, private) or _inside(top, private)):
                return
        raise Invalid(
            f"{field} must be inside a folder the server imports from; an admin lists those "
            "folders in THRESHER_IMPORT_ROOTS",
            field=field,
        )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
