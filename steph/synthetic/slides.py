"""Small pyramidal TIFF slides whose tissue encodes the phenotype mix (level ``slides``).

A slide is a white background with irregular tissue regions (a smoothed random field
thresholded at the quantile that gives the drawn tissue fraction). The tissue is cut into
square cells of ``cell_um`` microns; each cell draws a phenotype from the patient's mix and is
painted with that phenotype's texture: an H&E-like stain colour, nuclei of a given size,
density and colour, and optional fibres (stripes). Textures are defined in microns, so slides
written at different MPP look the same at the same physical resolution. Images are flat
colours without pixel noise, which keeps zlib-compressed files small.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..layout import ProjectLayout
from .cohort import CancerCohort, CohortSpec, cancer_rng, shared_rng
from .tiff import write_pyramidal_tiff

BACKGROUND = (246, 245, 247)
TEXTURE_UM = 512.0
"""Edge of the periodic texture tile of each phenotype, in microns."""


@dataclass(frozen=True)
class Appearance:
    """How one phenotype looks: stain colour, nuclei and fibres (lengths in microns)."""

    stain: tuple[int, int, int]
    nuclei_per_mm2: float = 0.0
    nucleus_radius_um: float = 3.0
    nucleus_colour: tuple[int, int, int] = (70, 35, 120)
    fibre_period_um: float = 0.0
    fibre_angle_deg: float = 0.0
    fibre_colour: tuple[int, int, int] = (0, 0, 0)


APPEARANCES: tuple[Appearance, ...] = (
    Appearance((205, 120, 175), 3500, 4.5, (85, 30, 125)),  # tumour: dense large nuclei
    Appearance((228, 125, 160), 250, 2.5, (120, 50, 120), 14.0, 30.0, (190, 75, 125)),  # stroma: fibres
    Appearance((185, 120, 195), 9000, 2.5, (55, 30, 110)),  # lymphocytes: very dense small nuclei
    Appearance((215, 160, 185), 1800, 1.5, (165, 115, 150)),  # necrosis: pale, debris
    Appearance((160, 172, 226), 120, 2.5, (90, 80, 160)),  # mucin: pale blue
    Appearance((210, 75, 105), 300, 2.0, (110, 40, 100), 24.0, 90.0, (175, 55, 85)),  # muscle: coarse fibres
    Appearance((198, 42, 58), 6000, 3.5, (235, 95, 105)),  # haemorrhage: red cells
    Appearance((222, 168, 194), 420, 22.0, (244, 232, 240)),  # fat: large pale vacuoles
)


def render_texture(look: Appearance, mpp: float, rng: np.random.Generator) -> np.ndarray:
    """A periodic ``[T, T, 3]`` uint8 tile of ``TEXTURE_UM`` microns at ``mpp``."""
    size = round(TEXTURE_UM / mpp)
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = look.stain
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * mpp
    if look.fibre_period_um > 0:
        angle = math.radians(look.fibre_angle_deg)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / look.fibre_period_um
        tile[(phase % 1.0) < 0.35] = look.fibre_colour
    count = rng.poisson(look.nuclei_per_mm2 * (TEXTURE_UM / 1000.0) ** 2)
    if count:
        radius = look.nucleus_radius_um / mpp
        reach = math.ceil(radius)
        dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        inside = dy**2 + dx**2 <= radius**2
        centres = rng.integers(0, size, size=(count, 2))
        ys = (centres[:, :1] + dy[inside][None, :]) % size  # nuclei wrap around: the tile is periodic
        xs = (centres[:, 1:] + dx[inside][None, :]) % size
        tile[ys.ravel(), xs.ravel()] = look.nucleus_colour
    return tile


def textures(spec: CohortSpec, mpp: float) -> np.ndarray:
    """``[P, T, T, 3]`` texture tiles of every phenotype at ``mpp`` (shared by all cancers)."""
    rng = shared_rng(spec.seed, 4)
    return np.stack([render_texture(APPEARANCES[j], mpp, rng) for j in range(spec.phenotypes)])


def tissue_mask(side: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``[side, side]`` boolean tissue mask covering ``fraction`` of the slide in a few smooth blobs."""
    from scipy import ndimage

    coarse = 24
    field = ndimage.gaussian_filter(rng.standard_normal((coarse, coarse)), sigma=2.5, mode="wrap")
    yy, xx = np.mgrid[0:coarse, 0:coarse] / (coarse - 1) - 0.5
    field = field / (field.std() + 1e-12) - 6.0 * (xx**2 + yy**2)  # keep tissue away from the edges
    level = np.quantile(field, 1.0 - fraction)
    step = 4  # interpolate at a quarter of the resolution, then repeat: 4-pixel steps on the edges
    small = math.ceil(side / step)
    fine = ndimage.zoom(field, small / coarse, order=1)[:small, :small] > level
    return np.repeat(np.repeat(fine, step, axis=0), step, axis=1)[:side, :side]


def render_slide(
    spec: CohortSpec, proportions: np.ndarray, mpp: float, tiles: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one slide; returns the RGB image and the phenotype of each tissue cell (-1 = no tissue)."""
    side = round(spec.slides.size_um / mpp)
    cell = spec.slides.cell_um / mpp
    n_cells = math.ceil(side / cell)
    lo, hi = spec.slides.tissue_fraction
    mask = tissue_mask(side, float(rng.uniform(lo, hi)), rng)
    cells = rng.choice(spec.phenotypes, size=(n_cells, n_cells), p=proportions)
    tile = tiles.shape[1]
    doubled = np.tile(tiles, (1, 2, 2, 1))  # any window up to one tile wide fits without wrapping
    oy, ox = (int(v) for v in rng.integers(0, tile, size=2))
    edges = [min(side, round(k * cell)) for k in range(n_cells + 1)]
    image = np.empty((side, side, 3), dtype=np.uint8)
    covered = np.zeros((n_cells, n_cells), dtype=bool)
    for r in range(n_cells):
        y0, y1 = edges[r], edges[r + 1]
        for c in range(n_cells):
            x0, x1 = edges[c], edges[c + 1]
            ty, tx = (y0 + oy) % tile, (x0 + ox) % tile
            image[y0:y1, x0:x1] = doubled[cells[r, c], ty : ty + y1 - y0, tx : tx + x1 - x0]
            covered[r, c] = bool(mask[y0:y1, x0:x1].any())
    image[~mask] = BACKGROUND
    return image, np.where(covered, cells, -1)


def slide_files(
    layout: ProjectLayout,
    spec: CohortSpec,
    cohort: CancerCohort,
    *,
    overwrite: bool = False,
    workers: int = 1,
) -> Iterator[tuple[dict[str, object], bool]]:
    """Write every slide of ``cohort`` (``workers`` threads); yields its manifest row and whether
    it was written now, in patient order."""
    jobs = []
    for i, pid in enumerate(cohort.patient_ids):
        for j, slide_id in enumerate(cohort.slide_ids[i]):
            mpp = spec.slides.mpp[(i + j) % len(spec.slides.mpp)]
            path = layout.synthetic_slide(cohort.name, slide_id)
            row = {
                "slide_id": slide_id,
                "patient_id": pid,
                "cancer": cohort.name,
                "path": path.relative_to(layout.root).as_posix(),
                "mpp": mpp,
            }
            jobs.append((i, j, mpp, path, row))
    todo = [job for job in jobs if overwrite or not job[3].is_file()]
    tiles = {mpp: textures(spec, mpp) for mpp in {job[2] for job in todo}}

    def write(job: tuple[int, int, float, Path, dict[str, object]]) -> None:
        i, j, mpp, path, _ = job
        image, _ = render_slide(
            spec, cohort.proportions[i], mpp, tiles[mpp], cancer_rng(spec.seed, cohort.name, 6, i, j)
        )
        write_pyramidal_tiff(path, image, mpp=mpp)

    pending = {id(job) for job in todo}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="steph-slides") as pool:
        done = pool.map(write, todo)  # numpy and zlib release the GIL: threads overlap well
        for job in jobs:
            if id(job) in pending:
                next(done)
            yield job[4], id(job) in pending
