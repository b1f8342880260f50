"""Patient bags: every slide of a patient concatenated into one ``[K, D]`` tensor.

:func:`open_bags` checks that every feature file exists and agrees on ``D`` (before anything is
read), then reads each patient once, refusing NaN or inf. Bags are kept in memory while the
running total stays within ``train.cache_gb`` GiB; the others are re-read from disk on each
:meth:`BagStore.get` or :meth:`BagStore.get_many`, so peak memory is bounded by the cache size
(plus the batches in flight), not by the cohort size. The training loop asks for the next batch
in a background thread while the current one computes, so streamed reads overlap compute.

Slides are read by up to :data:`READER_THREADS` threads (:meth:`BagStore.get_many` and
:func:`open_bags`, which keeps at most ``2 * threads`` slides read ahead of the patient it is
checking); results, errors and the cache decision keep the patients' order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..progress import NULL_PROGRESS, Progress
from .encoder_identity import same_encoder
from .features import read_slide, slide_encoder, slide_shape
from .stores import SlideRef, store_for

if TYPE_CHECKING:
    from torch import Tensor

    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from .cohort import Cohort

log = logging.getLogger(__name__)

GIB = 1 << 30
BYTES_PER_VALUE = 4  # float32
READER_THREADS = 4
"""Most threads reading slides at once (:meth:`BagStore.get_many`, :func:`open_bags`; fewer on
fewer CPUs). HDF5 features without filters are read with ``os.preadv``, which releases the GIL
(:mod:`.h5_raw`): on one machine 2 threads read 5.0 GB/s from the page cache where one read 3.3
(on a busy 2-core machine threads added nothing to the serial 4.5); more than 4 mostly contend
for memory bandwidth and the CPUs the training needs."""


class BagStore:
    """Bags by patient id: a bounded in-memory cache in front of the feature files.

    Implements :class:`steph.training.loop.BagSource`. Returned tensors may be shared with the
    cache: treat them as read-only.
    """

    def __init__(
        self,
        paths: Mapping[str, Sequence[SlideRef]],
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
        import torch

        cached = {pid: b.to(torch.float32).contiguous() for pid, b in bags.items()}
        return cls(
            {pid: () for pid in bags}, dims.pop(), cached, {pid: int(b.shape[0]) for pid, b in bags.items()}
        )

    def get(self, patient_id: str) -> Tensor:
        """The bag ``[K, D]`` (float32, CPU) of ``patient_id``."""
        bag = self._cache.get(patient_id)
        if bag is not None:
            return bag
        return _concat([read_slide(ref) for ref in self._refs(patient_id)])

    def get_many(self, patient_ids: Sequence[str]) -> list[Tensor]:
        """The bags of ``patient_ids``, in that order: cached ones as :meth:`get`, the slides of
        the others read concurrently by :func:`reader_threads` threads (a patient asked twice is
        read once)."""
        refs = {pid: self._refs(pid) for pid in patient_ids if pid not in self._cache}
        flat = [ref for slides in refs.values() for ref in slides]
        parts = iter(list(_read_in_order(flat, reader_threads(len(flat)))))
        read = {pid: _concat([next(parts) for _ in slides]) for pid, slides in refs.items()}
        return [self._cache[pid] if pid in self._cache else read[pid] for pid in patient_ids]

    def _refs(self, patient_id: str) -> tuple[SlideRef, ...]:
        refs = self._paths.get(patient_id)
        if refs is None:
            raise KeyError(f"patient {patient_id!r} is not in this bag store")
        return refs

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
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def reader_threads(n_reads: int) -> int:
    """Threads for ``n_reads`` slide reads: ``min(READER_THREADS, CPUs, n_reads)``, at least 1."""
    return max(1, min(READER_THREADS, os.cpu_count() or 1, n_reads))


_ONE_AT_A_TIME = threading.Lock()


def _read_slide_in_thread(ref: SlideRef) -> Tensor:
    """:func:`read_slide` from a reader thread: stores without
    :attr:`~.stores.FeatureStore.parallel_reads` read one slide at a time."""
    if store_for(ref.path).parallel_reads:
        return read_slide(ref)
    with _ONE_AT_A_TIME:
        return read_slide(ref)


def _read_in_order(refs: Sequence[SlideRef], threads: int) -> Generator[Tensor, None, None]:
    """:func:`read_slide` of each ref, yielded in order; with ``threads > 1`` a pool reads ahead,
    at most ``2 * threads`` slides submitted and not yet yielded (bounded memory).

    Close the iterator (``contextlib.closing``) when leaving early: pending reads are cancelled
    and running ones waited for. A failed read raises at its place in the order.
    """
    if threads <= 1:
        yield from map(read_slide, refs)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="steph-read") as pool:
        pending: deque[Future[Tensor]] = deque()
        try:
            for ref in refs:
                pending.append(pool.submit(_read_slide_in_thread, ref))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def slide_refs(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, patient_ids: Sequence[str]
) -> dict[str, tuple[SlideRef, ...]]:
    """Where every slide of ``patient_ids`` has its features (``paths.features`` templates applied).

    Raises:
        DataError: the template uses ``{project}`` but the labels have no project column, or
            no feature store reads the template's suffix.
    """
    if "project" in layout.features_fields() and not cohort.has_project:
        raise DataError(
            f"paths.features uses {{project}} but the labels {cohort.labels_path} have no "
            f"{config.labels.project!r} column",
            hint="add the column (TCGA-KIRC ...) to the labels, or set labels.project to the column that holds it",
        )
    refs: dict[str, tuple[SlideRef, ...]] = {}
    for pid in patient_ids:
        patient = cohort.patients[pid]
        projects = patient.projects or ("",) * len(patient.slide_ids)
        slides = []
        for sid, project in zip(patient.slide_ids, projects, strict=True):
            path = layout.features(
                config.encoder, sid, cancer=cohort.cancer, project=project or None, patient_id=pid
            )
            slides.append(store_for(path).ref(path, sid))
        refs[pid] = tuple(slides)
    return refs


def slide_paths(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, patient_ids: Sequence[str]
) -> dict[str, tuple[Path, ...]]:
    """Feature file (or store) of every slide of ``patient_ids``."""
    return {
        pid: tuple(ref.path for ref in refs)
        for pid, refs in slide_refs(layout, config, cohort, patient_ids).items()
    }


def missing_slides(refs: Sequence[SlideRef]) -> list[SlideRef]:
    """The refs whose features do not exist, store by store (raises on unreadable stores)."""
    by_store: dict[str, list[SlideRef]] = {}
    for ref in refs:
        by_store.setdefault(store_for(ref.path).name, []).append(ref)
    missing = []
    for group in by_store.values():
        missing.extend(store_for(group[0].path).missing(group))
    return missing


def _missing_error(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, missing: list[SlideRef]
) -> MissingArtifactError:
    first = missing[0]
    where = first.path if first.key is not None else first.path.parent
    listing = ", ".join(
        ref.slide_id if (ref.path if ref.key is not None else ref.path.parent) == where else str(ref)
        for ref in missing[:50]
    ) + (f" and {len(missing) - 50} more" if len(missing) > 50 else "")
    if layout.templates.features:
        hint = f"paths.features = {layout.templates.features!r} in {layout.config_file}: check the template"
    else:
        hint = (
            f"run `stephctl -p {layout.root} extract` (the slides must be in {layout.manifest}); "
            f"encoder {config.encoder!r}"
        )
    what = (
        "slide(s) missing from the store" if first.key is not None else "slide feature file(s) missing under"
    )
    return MissingArtifactError(f"{cohort.cancer}: {len(missing)} {what} {where}: {listing}", hint=hint)


def check_patch_count(config: ProjectConfig, ref: SlideRef, patches: int) -> None:
    """Refuse features declaring more than ``max_patches`` patches (before they are read)."""
    if patches > config.max_patches:
        raise DataError(
            f"{ref}: features declare {patches:,} patches, more than max_patches ({config.max_patches:,})",
            hint="a crafted or broken file, or a slide larger than any expected: "
            "raise max_patches in stephctl.yaml if the slide is genuine",
        )


def checked_shape(
    config: ProjectConfig, ref: SlideRef, *, dim: int | None = None, dim_of: str = "the model"
) -> tuple[int, int]:
    """``(K, D)`` of one slide from its header, after checking ``D`` against ``dim`` (the ``D``
    that ``dim_of`` takes, when given) and ``K`` against ``max_patches``.

    Raises:
        DataError: the file is unreadable or declares more than ``max_patches`` patches.
        ConsistencyError: its ``D`` is not ``dim``.
    """
    k, d = slide_shape(ref)
    if dim is not None and d != dim:
        raise ConsistencyError(
            f"{ref}: features have D={d}, {dim_of} takes D={dim}",
            hint=f"extract the slides with the encoder {dim_of} was made for (encoder: {config.encoder} "
            "in stephctl.yaml), or point paths.features at its features",
        )
    check_patch_count(config, ref, k)
    return k, d


def check_encoder(config: ProjectConfig, ref: SlideRef) -> None:
    """Refuse features whose recorded encoder is not the project's (files recording none pass)."""
    recorded = slide_encoder(ref)
    if recorded is None or same_encoder(recorded, config.encoder, config.encoder_aliases):
        return
    raise DataError(
        f"{ref}: features were made by encoder {recorded!r}, the project uses {config.encoder!r}",
        hint=f"set encoder: to the features' encoder, point paths.features at {config.encoder} features, "
        f"or, if {recorded!r} is {config.encoder} after all, add it to encoder_aliases: in stephctl.yaml",
    )


def check_features(
    layout: ProjectLayout,
    config: ProjectConfig,
    cohort: Cohort,
    patient_ids: Sequence[str],
    *,
    dim: int | None = None,
    dim_of: str = "the model",
) -> int:
    """Check that the features of ``patient_ids`` exist, are readable, agree on ``D`` (and equal
    ``dim``, the ``D`` that ``dim_of`` takes, when given) and come from the project's encoder
    (where the files record one).

    Only file headers are read (all of a ``.pt`` file or an LMDB value, which have none).

    Returns:
        The feature dimension ``D``.

    Raises:
        MissingArtifactError: features are missing (lists every one, and the command that
            makes them).
        DataError: a file is unreadable, a patient has no patches, dimensions differ or the
            recorded encoder is another one.
        ConsistencyError: a file whose ``D`` is not ``dim`` (the first one found).
    """
    refs = slide_refs(layout, config, cohort, patient_ids)
    missing = missing_slides([ref for slides in refs.values() for ref in slides])
    if missing:
        raise _missing_error(layout, config, cohort, missing)
    dims: dict[int, list[str]] = {}
    for pid, slides in refs.items():
        total = 0
        for ref in slides:
            k, d = checked_shape(config, ref, dim=dim, dim_of=dim_of)
            check_encoder(config, ref)
            total += k
            dims.setdefault(d, []).append(str(ref))
        if total == 0:
            raise DataError(
                f"{cohort.cancer}: patient {pid} has no patches in {', '.join(map(str, slides))}",
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


def _all_finite(part: Tensor) -> bool:
    """Whether every value is finite: a finite sum (one pass, no mask tensor) proves it; only a
    non-finite sum (a NaN/inf, or an overflow of huge finite values) needs the element check."""
    import torch

    return bool(torch.isfinite(part.sum())) or bool(torch.isfinite(part).all())


def open_bags(
    layout: ProjectLayout,
    config: ProjectConfig,
    cohort: Cohort,
    patient_ids: Sequence[str],
    *,
    dim: int | None = None,
    dim_of: str = "the model",
    progress: Progress = NULL_PROGRESS,
) -> BagStore:
    """Check, read once and cache the bags of ``patient_ids`` (see the module docstring).
    ``dim``: the ``D`` that ``dim_of`` takes; a file of another ``D`` is refused from its header,
    before any slide is read.

    Raises:
        MissingArtifactError, DataError, ConsistencyError: as :func:`check_features`; also a
            slide holding NaN or inf values (named).
    """
    dim = check_features(layout, config, cohort, patient_ids, dim=dim, dim_of=dim_of)
    paths = slide_refs(layout, config, cohort, patient_ids)
    budget = int(config.train.cache_gb * GIB)
    cached: dict[str, Tensor] = {}
    sizes: dict[str, int] = {}
    used = 0
    task = f"reading {cohort.cancer} features"
    progress.start(task, len(paths), unit="patients")
    flat = [ref for files in paths.values() for ref in files]
    try:
        with contextlib.closing(_read_in_order(flat, reader_threads(len(flat)))) as reads:
            for pid, files in paths.items():
                parts = []
                for ref in files:
                    part = next(reads)
                    if not _all_finite(part):
                        raise DataError(
                            f"{cohort.cancer}: slide {ref.slide_id} (patient {pid}) has NaN or inf features: {ref}",
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
