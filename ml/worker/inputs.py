"""A job's inputs on the worker: manifests, image files, decoded caches and model checkpoints.

Images are read where the manifest says they are (the dataset root joined with the sample's
path), after the worker's prefix map (``--path-map /srv/images=/mnt/images`` when the two
machines mount the same files at different places). A file the worker cannot see is fetched
from the server by sample id into a content-addressed cache (``originals/<sha256>``), checked
against the SHA-256 the import recorded, and reused by later jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ml.cache import DecodedCache, decoded_cache
from ml.protocol import JobManifest, ManifestRef, ModelRef, decode_manifest
from ml.worker.client import ServerClient

__all__ = ["Inputs", "PathMap", "parse_path_map"]

log = logging.getLogger(__name__)

_FETCH_THREADS = 8


@dataclass(frozen=True)
class PathMap:
    """Prefix rewrites from the server's paths to this machine's, first match wins."""

    rules: tuple[tuple[str, str], ...] = ()

    def apply(self, path: str) -> str:
        for source, target in self.rules:
            if path == source or path.startswith(source.rstrip("/") + "/"):
                return target.rstrip("/") + path[len(source.rstrip("/")) :]
        return path


def parse_path_map(values: Sequence[str]) -> PathMap:
    """``["FROM=TO", ...]`` → :class:`PathMap`; raises ValueError on a malformed rule."""
    rules = []
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--path-map {value!r}: use FROM=TO, e.g. /srv/images=/mnt/images")
        rules.append((source, target))
    return PathMap(tuple(rules))


class Inputs:
    """Downloads and caches what jobs need, under ``cache_dir``."""

    def __init__(
        self, client: ServerClient, cache_dir: Path, *, path_map: PathMap | None = None
    ) -> None:
        self.client = client
        self.cache_dir = cache_dir
        self.path_map = path_map or PathMap()

    def manifest_file(self, ref: ManifestRef) -> Path:
        path = self.cache_dir / "manifests" / f"{ref.sha256}.thrb"
        if not path.is_file():
            self.client.download_manifest(ref.sha256, path)
        return path

    def manifest(self, ref: ManifestRef) -> JobManifest:
        return decode_manifest(self.manifest_file(ref).read_bytes())

    def image_paths(self, manifest: JobManifest) -> list[Path]:
        """A readable local path for every sample, fetching from the server what is not here."""
        digests = manifest.hex_digests()
        paths: list[Path] = []
        missing: list[int] = []
        for index, relative in enumerate(manifest.paths):
            local = Path(self.path_map.apply(str(PurePosixPath(manifest.root) / relative)))
            if local.is_file():
                paths.append(local)
            else:
                paths.append(self._original(digests[index]))
                missing.append(index)
        to_fetch = [i for i in missing if not paths[i].is_file()]
        if missing:
            log.info(
                "worker.images.remote count=%d cached=%d fetching=%d",
                len(missing),
                len(missing) - len(to_fetch),
                len(to_fetch),
            )
        if to_fetch:
            with ThreadPoolExecutor(max_workers=_FETCH_THREADS) as pool:
                futures = [
                    pool.submit(
                        self.client.download_sample,
                        int(manifest.sample_ids[i]),
                        digests[i],
                        paths[i],
                    )
                    for i in to_fetch
                ]
                for future in futures:
                    future.result()
        return paths

    def _original(self, sha256: str) -> Path:
        return self.cache_dir / "originals" / sha256[:2] / sha256

    def decoded(self, manifest: JobManifest, size: int) -> DecodedCache:
        """The decoded cache of the manifest's images at ``size`` (built on first use)."""
        return decoded_cache(
            self.image_paths(manifest),
            size=size,
            cache_dir=self.cache_dir / "decoded",
            hashes=manifest.hex_digests(),
        )

    def model(self, ref: ModelRef) -> Path:
        """A local checkpoint directory holding the model's files."""
        directory = self.cache_dir / "models" / f"job-{ref.job_id}"
        for artifact in ref.files:
            target = directory / artifact.name
            if not target.is_file() or target.stat().st_size != artifact.byte_size:
                self.client.download_artifact(artifact, target)
        return directory
