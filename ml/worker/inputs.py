"""A job's inputs on the worker: manifests, image files, decoded caches, embeddings and model
checkpoints.

Images are read where the manifest says they are (the dataset root joined with the sample's
path), after the worker's prefix map (``--path-map /srv/images=/mnt/images`` when the two
machines mount the same files at different places). A file the worker cannot see is fetched
from the server by sample id into a content-addressed cache (``originals/<sha256>``), checked
against the SHA-256 the import recorded, and reused by later jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.typing import NDArray

from ml.cache import DecodedCache, decoded_cache
from ml.core.protocol.bundles import JobManifest, decode_embeddings, decode_manifest
from ml.core.protocol.jobs import ArtifactRef, EmbeddingRequest, ManifestRef, ModelRef
from ml.embed import Embedder, EmbedProgress, EmbedStats, embed_missing
from ml.embeddings import (
    EmbeddingArray,
    EmbeddingSpace,
    EmbeddingStore,
    default_embeddings_dir,
)
from ml.logging import get_logger
from ml.recipes import ModelConfig
from ml.worker.client import ServerClient

__all__ = ["Inputs", "PathMap", "parse_path_map"]

log = get_logger(__name__)

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

    def image_paths(self, manifest: JobManifest, rows: Sequence[int] | None = None) -> list[Path]:
        """A readable local path for every sample (or the samples ``rows``), fetching from the
        server what is not here."""
        digests = manifest.hex_digests()
        chosen = range(len(manifest)) if rows is None else [int(r) for r in rows]
        paths: list[Path] = []
        missing: list[int] = []
        sample_ids: list[int] = []
        hashes: list[str] = []
        for index, row in enumerate(chosen):
            relative = manifest.paths[row]
            sample_ids.append(int(manifest.sample_ids[row]))
            hashes.append(digests[row])
            local = Path(self.path_map.apply(str(PurePosixPath(manifest.root) / relative)))
            if local.is_file():
                paths.append(local)
            else:
                paths.append(self._original(hashes[index]))
                missing.append(index)
        to_fetch = [i for i in missing if not paths[i].is_file()]
        if missing:
            log.info(
                "worker.images.remote",
                count=len(missing),
                cached=len(missing) - len(to_fetch),
                fetching=len(to_fetch),
            )
        if to_fetch:
            with ThreadPoolExecutor(max_workers=_FETCH_THREADS) as pool:
                futures = [
                    pool.submit(self.client.download_sample, sample_ids[i], hashes[i], paths[i])
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

    def embeddings(
        self,
        manifest: JobManifest,
        request: EmbeddingRequest,
        artifacts: Sequence[ArtifactRef],
        *,
        device: str,
        progress: EmbedProgress | None = None,
    ) -> tuple[EmbeddingArray, EmbedStats]:
        """The manifest's embeddings in the space of ``request`` (row ``i`` = sample ``i``),
        from this worker's embedding cache, then from ``artifacts`` (other workers' embed jobs),
        and what is still missing computed here.

        Raises:
            EmbeddingsMissing: ``progress`` asked to stop before every row was embedded.
        """
        embedder = Embedder(
            ModelConfig.model_validate(request.model),
            image_size=request.image_size,
            flip=request.flip,
            device=device,
        )
        store = EmbeddingStore(default_embeddings_dir(self.cache_dir), embedder.space)
        digests = np.asarray(manifest.sha256, dtype=np.uint8)
        for artifact in artifacts:
            if store.missing(digests).size == 0:
                break
            self._import_embeddings(store, artifact, digests)
        missing = store.missing(digests)
        stats = EmbedStats(computed=0, reused=len(manifest), seconds=0.0)
        if missing.size:
            hexes = manifest.hex_digests()
            paths = self.image_paths(manifest, missing.tolist())
            # A GPU embeds faster than processes decode: read through the decode-once cache,
            # which later rounds at this size reuse too.
            decoded = (
                self.decoded(manifest, request.image_size).images[missing]
                if embedder.device.type == "cuda"
                else None
            )
            computed = embed_missing(
                store,
                embedder,
                paths,
                [hexes[i] for i in missing],
                decoded=decoded,
                progress=progress,
            )
            stats = EmbedStats(
                computed=computed.computed,
                reused=len(manifest) - computed.computed,
                seconds=computed.seconds,
                stopped=computed.stopped,
            )
        store.compact()
        return store.gather(digests), stats

    def _import_embeddings(
        self, store: EmbeddingStore, artifact: ArtifactRef, wanted: NDArray[np.uint8]
    ) -> None:
        """Add the rows of a stored embeddings artifact that ``store`` lacks and ``wanted``
        names; an artifact of another space (other weights) is skipped."""
        target = self.cache_dir / "artifacts" / artifact.sha256[:2] / artifact.sha256
        if not target.is_file() or target.stat().st_size != artifact.byte_size:
            self.client.download_artifact(artifact, target)
        rows = decode_embeddings(target.read_bytes())
        if EmbeddingSpace.from_dict(rows.space) != store.space:
            log.warning("worker.embeddings.other_space", artifact=artifact.id)
            return
        lacking = {bytes(d) for d in wanted[store.missing(wanted)]}
        take = [i for i, digest in enumerate(rows.sha256) if bytes(digest) in lacking]
        if take:
            store.put(rows.sha256[take], rows.features[take])

    def model(self, ref: ModelRef) -> Path:
        """A local checkpoint directory holding the model's files."""
        directory = self.cache_dir / "models" / f"job-{ref.job_id}"
        for artifact in ref.files:
            target = directory / artifact.name
            if not target.is_file() or target.stat().st_size != artifact.byte_size:
                self.client.download_artifact(artifact, target)
        return directory
