"""Patient bags of patch features written straight to the feature layout (level ``features``).

Every phenotype ``j`` has a prototype ``mu_j ~ N(0, I_D)`` shared by all cancers, and every
cancer a style offset ``delta_c ~ N(0, style_sd^2 I_D)`` (a batch effect). A patch of patient
``i`` first draws its phenotype ``z ~ Categorical(pi_i)`` and then its feature

    x = mu_z + delta_c + noise * eps,   eps ~ N(0, I_D)

so the bag carries the patient's phenotype mix, hence the true risk, only through the
proportions of its patches. A patient with two slides has its patches split between them.

Bag sizes are uniform over ``features.patches`` or, with ``features.size_median`` > 0,
heavy-tailed as real slides are: ``K = clip(round(median * exp(spread * N(0, 1))), lo, hi)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..fileio import atomic_path
from ..layout import ProjectLayout
from .cohort import CancerCohort, CohortSpec, cancer_rng, shared_rng

PATCH_SIZE = 256
"""Nominal patch edge (pixels at ``PATCH_MPP``) used for the synthetic ``coords``."""
PATCH_MPP = 0.5


@dataclass(frozen=True)
class SlideBag:
    """The patches of one slide: features ``[N, D]`` float32, level-0 coords ``[N, 2]`` int64, phenotypes ``[N]``."""

    slide_id: str
    features: np.ndarray
    coords: np.ndarray
    phenotypes: np.ndarray


def prototypes(spec: CohortSpec) -> np.ndarray:
    """``[P, D]`` phenotype prototypes shared by every cancer."""
    return shared_rng(spec.seed, 3).standard_normal((spec.phenotypes, spec.features.dim))


def style_offset(spec: CohortSpec, cancer: str) -> np.ndarray:
    """``[D]`` offset added to every patch of ``cancer``."""
    return spec.features.style_sd * cancer_rng(spec.seed, cancer, 3).standard_normal(spec.features.dim)


def grid_coords(n: int) -> np.ndarray:
    """Level-0 top-left corners of ``n`` patches laid out on a square grid of ``PATCH_SIZE`` cells."""
    width = max(1, math.ceil(math.sqrt(n)))
    index = np.arange(n, dtype=np.int64)
    return np.stack([(index % width) * PATCH_SIZE, (index // width) * PATCH_SIZE], axis=1)


def bag_size(spec: CohortSpec, rng: np.random.Generator) -> int:
    """Number of patches of one patient (uniform, or clipped log-normal; see the module doc)."""
    lo, hi = spec.features.patches
    if spec.features.size_median <= 0:
        return int(rng.integers(lo, hi + 1))
    draw = spec.features.size_median * math.exp(spec.features.size_spread * rng.standard_normal())
    return int(np.clip(round(draw), lo, hi))


def patient_bags(
    spec: CohortSpec, cohort: CancerCohort, index: int, protos: np.ndarray, offset: np.ndarray
) -> list[SlideBag]:
    """Draw the slides of patient ``index`` (deterministic in the spec, cancer and index)."""
    rng = cancer_rng(spec.seed, cohort.name, 5, index)
    n = bag_size(spec, rng)
    z = rng.choice(spec.phenotypes, size=n, p=cohort.proportions[index])
    x = protos[z] + offset + spec.features.noise * rng.standard_normal((n, spec.features.dim))
    slides = cohort.slide_ids[index]
    cuts = [0, n]
    if len(slides) == 2:
        cuts = [0, int(np.clip(round(n * rng.uniform(0.3, 0.7)), 1, n - 1)), n]
    bags = []
    for j, slide_id in enumerate(slides):
        part = slice(cuts[j], cuts[j + 1])
        k = cuts[j + 1] - cuts[j]
        bags.append(SlideBag(slide_id, x[part].astype(np.float32), grid_coords(k), z[part].astype(np.int64)))
    return bags


def write_bag(path: Path, bag: SlideBag, *, encoder: str) -> None:
    """One slide's feature file in the layout's format, with provenance attributes."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("features", data=bag.features)
        fh.create_dataset("coords", data=bag.coords)
        fh.attrs["encoder"] = encoder
        fh.attrs["embed_dim"] = int(bag.features.shape[1])
        fh.attrs["patch_size"] = PATCH_SIZE
        fh.attrs["target_mpp"] = PATCH_MPP
        fh.attrs["slide_id"] = bag.slide_id
        fh.attrs["synthetic"] = True
        fh.attrs["steph_version"] = __version__


def feature_slides(
    layout: ProjectLayout, spec: CohortSpec, cohort: CancerCohort, *, encoder: str, overwrite: bool = False
) -> Iterator[tuple[str, bool]]:
    """Write every slide of ``cohort``; yields ``(slide_id, written)`` (False = already there)."""
    protos = prototypes(spec)
    offset = style_offset(spec, cohort.name)
    for i in range(len(cohort.patient_ids)):
        paths = [layout.own_features(encoder, s) for s in cohort.slide_ids[i]]
        if not overwrite and all(p.is_file() for p in paths):
            for slide_id in cohort.slide_ids[i]:
                yield slide_id, False
            continue
        for path, bag in zip(paths, patient_bags(spec, cohort, i, protos, offset), strict=True):
            write_bag(path, bag, encoder=encoder)
            yield bag.slide_id, True
