"""Patient bags: every slide of a patient concatenated into one ``[K, D]`` tensor.

:func:`open_bags` checks that every feature file exists and agrees on ``D`` (before anything is
read), then reads each patient once, refusing NaN or inf. Bags are kept in memory while the
running total stays within ``train.cache_gb`` GiB; the others are re-read from disk on each
:meth:`BagStore.get`, so peak memory is bounded by the cache size (plus the batches in flight),
not by the cohort size. The training loop asks for the next batch in a background thread while
the current one computes, so streamed reads overlap compute.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import DataError, MissingArtifactError
from ..progress import NULL_PROGRESS, Progress
from .features import feature_shape, read_features

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from .cohort import Cohort

log = logging.getLogger(__name__)

GIB = 1 << 30
BYTES_PER_VALUE = 4  # float32


class BagStore:
    """Bags by patient id: a bounded in-memory cache in front of the feature files.

    Implements :class:`steph.training.loop.BagSource`. Returned tensors may be shared with the
    cache: treat them as read-only.
    """

    def __init__(
        self,
        paths: Mapping[str, Sequence[Path]],
        dim: int,
        cached: Mapping[str, Tensor],
        sizes: Mapping[str, int],
    ) -> None:
        self.dim = dim
        self._paths = {pid: tuple(p) for pid, p in paths.items()}
        self._cache = dict(cached)
        self._sizes = dict(sizes)

    @classmethod
    def in_memory(cls, bags: Mapping[str, Tensor]) -> BagStore:
        """A store over bags already in memory (tests, benchmarks, programmatic use)."""
        if not bags:
            raise DataError("a bag store needs at least one bag")
        dims = {int(b.shape[1]) for b in bags.values()}
        if len(dims) != 1:
            raise DataError(f"bags have different feature dimensions: {sorted(dims)}")
        cached = {pid: b.to(torch.float32).contiguous() for pid, b in bags.items()}
        return cls(
            {pid: () for pid in bags}, dims.pop(), cached, {pid: int(b.shape[0]) for pid, b in bags.items()}
        )

    def get(self, patient_id: str) -> Tensor:
        """The bag ``[K, D]`` (float32, CPU) of ``patient_id``."""
        bag = self._cache.get(patient_id)
        if bag is not None:
            return bag
        if patient_id not in self._paths:
            raise KeyError(f"patient {patient_id!r} is not in this bag store")
        return _concat([read_features(path) for path in self._paths[patient_id]])

    def n_patches(self, patient_id: str) -> int:
        return self._sizes[patient_id]

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._paths

    @property
    def n_cached(self) -> int:
        return len(self._cache)

    @property
    def n_streamed(self) -> int:
        return len(self._paths) - len(self._cache)

    @property
    def cached_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._cache.values())


def _concat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def slide_paths(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, patient_ids: Sequence[str]
) -> dict[str, tuple[Path, ...]]:
    """Feature file of every slide of ``patient_ids`` (``paths.features`` templates applied)."""
    return {
        pid: tuple(
            layout.features(config.encoder, sid, cancer=cohort.cancer)
            for sid in cohort.patients[pid].slide_ids
        )
        for pid in patient_ids
    }


def check_features(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, patient_ids: Sequence[str]
) -> int:
    """Check that the feature files of ``patient_ids`` exist, are readable and agree on ``D``.

    Only file headers are read (all of a ``.pt`` file, which has none).

    Returns:
        The feature dimension ``D``.

    Raises:
        MissingArtifactError: feature files are missing (lists every one, and the command that
            makes them).
        DataError: a file is unreadable, a patient has no patches, or dimensions differ.
    """
    paths = slide_paths(layout, config, cohort, patient_ids)
    missing = [(pid, path) for pid, files in paths.items() for path in files if not path.is_file()]
    if missing:
        listing = ", ".join(
            path.stem if path.parent == missing[0][1].parent else str(path) for _, path in missing
        )
        if layout.templates.features:
            hint = (
                f"paths.features = {layout.templates.features!r} in {layout.config_file}: check the template"
            )
        else:
            hint = (
                f"run `stephctl -p {layout.root} extract` (the slides must be in {layout.manifest}); "
                f"encoder {config.encoder!r}"
            )
        raise MissingArtifactError(
            f"{cohort.cancer}: {len(missing)} slide feature file(s) missing under {missing[0][1].parent}: {listing}",
            hint=hint,
        )
    dims: dict[int, list[str]] = {}
    for pid, files in paths.items():
        total = 0
        for path in files:
            k, d = feature_shape(path)
            total += k
            dims.setdefault(d, []).append(str(path))
        if total == 0:
            raise DataError(
                f"{cohort.cancer}: patient {pid} has no patches in {', '.join(map(str, files))}",
                hint="re-extract its slides (tissue detection found nothing?) or drop the patient from labels and splits",
            )
    if len(dims) > 1:
        common = max(dims, key=lambda d: len(dims[d]))
        odd = [f"{path} (D={d})" for d, files in dims.items() if d != common for path in files]
        raise DataError(
            f"{cohort.cancer}: feature dimensions differ: most files have D={common}, but {', '.join(odd[:20])}"
            + (f" and {len(odd) - 20} more" if len(odd) > 20 else ""),
            hint="all slides must come from the same encoder; re-extract the odd ones",
        )
    return next(iter(dims))


def open_bags(
    layout: ProjectLayout,
    config: ProjectConfig,
    cohort: Cohort,
    patient_ids: Sequence[str],
    *,
    progress: Progress = NULL_PROGRESS,
) -> BagStore:
    """Check, read once and cache the bags of ``patient_ids`` (see the module docstring).

    Raises:
        MissingArtifactError, DataError: as :func:`check_features`; also a slide holding NaN or
            inf values (named).
    """
    dim = check_features(layout, config, cohort, patient_ids)
    paths = slide_paths(layout, config, cohort, patient_ids)
    budget = int(config.train.cache_gb * GIB)
    cached: dict[str, Tensor] = {}
    sizes: dict[str, int] = {}
    used = 0
    task = f"reading {cohort.cancer} features"
    progress.start(task, len(paths), unit="patients")
    try:
        for pid, files in paths.items():
            parts = []
            for sid, path in zip(cohort.patients[pid].slide_ids, files, strict=True):
                part = read_features(path)
                if not bool(torch.isfinite(part).all()):
                    raise DataError(
                        f"{cohort.cancer}: slide {sid} (patient {pid}) has NaN or inf features: {path}",
                        hint="re-extract this slide with `stephctl extract --overwrite`",
                    )
                parts.append(part)
            bag = _concat(parts)
            sizes[pid] = int(bag.shape[0])
            size = bag.numel() * BYTES_PER_VALUE
            if used + size <= budget:
                cached[pid] = bag
                used += size
            progress.advance(task, 1, item=pid)
    finally:
        progress.finish(task)
    store = BagStore(paths, dim, cached, sizes)
    log.info(
        "%s: %d bags (D=%d), %d cached in memory (%.2f GiB), %d streamed from disk",
        cohort.cancer,
        len(store),
        dim,
        store.n_cached,
        used / GIB,
        store.n_streamed,
    )
    return store
