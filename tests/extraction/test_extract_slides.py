"""Slides: MPP resolution, tissue detection, patch grids, thumbnails, manifests and shards."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
from _slides import BLOCKS_UM, expected_coords, render, row, write_manifest, write_slide
from hypothesis import given, settings
from hypothesis import strategies as st

import steph.slides.grid
import steph.slides.mpp
import steph.slides.tissue
from steph.config import TissueConfig
from steph.errors import ConfigError, DataError, SlideError
from steph.layout import ProjectLayout
from steph.slides import (
    Slide,
    make_grid,
    read_manifest,
    read_selection,
    read_thumbnail,
    resolve_mpp,
    resolve_shard,
    select,
    shard,
    tissue_mask,
)
from steph.slides.grid import box_fractions, level0_patch_size
from steph.slides.reader import premultiplied_argb_onto_white
from steph.slides.tissue import fill_small_holes, otsu_threshold, remove_small_objects, saturation

RANGE = (0.05, 16.0)


@pytest.mark.parametrize("module", [steph.slides.grid, steph.slides.mpp, steph.slides.tissue])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


# -- MPP -------------------------------------------------------------------------------------------
def test_mpp_from_openslide_property() -> None:
    got = resolve_mpp(
        {"openslide.mpp-x": "0.2527"}, slide_id="s", manifest_mpp=0.5, fallback_mpp=1.0, mpp_range=RANGE
    )
    assert (got.mpp, got.source) == (0.2527, "slide:openslide.mpp-x")


@pytest.mark.parametrize(
    ("unit", "resolution", "mpp"), [("centimeter", "40000", 0.25), ("inch", "50800", 0.5)]
)
def test_mpp_from_tiff_resolution(unit: str, resolution: str, mpp: float) -> None:
    props = {"tiff.ResolutionUnit": unit, "tiff.XResolution": resolution}
    got = resolve_mpp(props, slide_id="s", manifest_mpp=None, fallback_mpp=None, mpp_range=RANGE)
    assert got.mpp == pytest.approx(mpp) and got.source == "slide:tiff-resolution"


def test_72_dpi_tiff_is_refused_not_tiled() -> None:
    props = {"tiff.ResolutionUnit": "inch", "tiff.XResolution": "72"}
    with pytest.raises(SlideError, match=r"352\.8 um/px, outside the plausible range") as info:
        resolve_mpp(props, slide_id="s", manifest_mpp=None, fallback_mpp=None, mpp_range=RANGE)
    assert "mpp" in (info.value.hint or "")


def test_implausible_slide_value_falls_through_to_manifest_then_config() -> None:
    props = {"tiff.ResolutionUnit": "inch", "tiff.XResolution": "72"}
    got = resolve_mpp(props, slide_id="s", manifest_mpp=0.25, fallback_mpp=0.5, mpp_range=RANGE)
    assert (got.mpp, got.source) == (0.25, "manifest")
    got = resolve_mpp({}, slide_id="s", manifest_mpp=None, fallback_mpp=0.5, mpp_range=RANGE)
    assert (got.mpp, got.source) == (0.5, "config")


def test_no_mpp_anywhere_is_a_slide_error() -> None:
    expected = "the slide declares no MPP; the manifest has no mpp for it; no --mpp / extract.mpp fallback"
    with pytest.raises(SlideError, match=expected):
        resolve_mpp(
            {"tiff.ResolutionUnit": "none", "tiff.XResolution": "1"},
            slide_id="s",
            manifest_mpp=None,
            fallback_mpp=None,
            mpp_range=RANGE,
        )


# -- tissue ----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=200), st.integers(8, 64))
def test_otsu_maximises_between_class_variance(values: list[float], bins: int) -> None:
    """Against a brute-force search over every bin edge, on the binned values."""
    data = np.array(values)
    if np.ptp(data) == 0:
        assert otsu_threshold(data, bins) == data[0]
        return
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    binned = centres[np.clip(np.digitize(data, edges[1:-1]), 0, bins - 1)]

    def between(cut: float) -> float:
        low, high = binned[binned < cut], binned[binned >= cut]
        if len(low) == 0 or len(high) == 0:
            return -1.0
        w0, w1 = len(low) / len(binned), len(high) / len(binned)
        return w0 * w1 * (low.mean() - high.mean()) ** 2

    best = max(between(e) for e in edges[1:-1])
    assert between(otsu_threshold(data, bins)) == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_saturation_matches_hsv_definition() -> None:
    import colorsys

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    expected = np.array([[colorsys.rgb_to_hsv(*(p / 255.0))[1] for p in r] for r in rgb])
    assert np.allclose(saturation(rgb), expected, atol=1e-6)


def test_tissue_mask_finds_blocks_and_ignores_white() -> None:
    image = render(2.0)  # 2 um/px thumbnail-like image of the standard layout
    mask = tissue_mask(image, 2.0, TissueConfig(min_object_um2=500, max_hole_um2=500))
    truth = np.zeros(mask.shape, bool)
    for x0, y0, x1, y1 in BLOCKS_UM:
        truth[round(y0 / 2) : round(y1 / 2), round(x0 / 2) : round(x1 / 2)] = True
    assert (mask == truth).mean() > 0.99
    blank = np.full((64, 64, 3), 243, np.uint8)
    assert not tissue_mask(blank, 2.0, TissueConfig()).any()


def test_slide_covered_by_tissue_is_all_tissue() -> None:
    """No background mode for Otsu to find: the threshold ceiling keeps the tissue whole."""
    image = render(2.0, blocks_um=((0, 0, 512, 384),))
    assert tissue_mask(image, 2.0, TissueConfig(min_object_um2=500, max_hole_um2=500)).mean() > 0.99


def test_small_objects_removed_and_small_holes_filled() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[10:12, 10:12] = False  # 4-px hole
    mask[30, 30] = True  # 1-px speck
    cleaned = fill_small_holes(remove_small_objects(mask, 5), 10)
    assert not cleaned[30, 30] and cleaned[10:12, 10:12].all()
    assert not fill_small_holes(mask, 3)[10:12, 10:12].any()  # hole of 4 px is not < 3


# -- grid ------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0, 6), st.floats(0, 6), st.floats(0.5, 4), st.floats(0.5, 4))
def test_box_fractions_exact_against_supersampling(
    seed: int, x0: float, y0: float, w: float, h: float
) -> None:
    mask = np.random.default_rng(seed).random((10, 10)) > 0.5
    k = 64  # supersampling factor; boxes are rounded to 1/64 px so the reference is exact
    x0, y0, w, h = (round(v * k) / k for v in (x0, y0, w, h))
    big = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
    ref = big[round(y0 * k) : round((y0 + h) * k), round(x0 * k) : round((x0 + w) * k)].mean()
    got = box_fractions(mask, np.array([x0]), np.array([y0]), np.array([x0 + w]), np.array([y0 + h]))[0]
    assert got == pytest.approx(ref, abs=1e-9)


def test_grid_geometry_and_best_level() -> None:
    tissue = np.ones((10, 10), bool)
    grid = make_grid(
        slide_id="s",
        dimensions=(4000, 3000),
        level_downsamples=(1.0, 4.0, 16.0),
        slide_mpp=0.25,
        target_mpp=1.0,
        patch_size=256,
        tissue=tissue,
        min_tissue_fraction=0.5,
    )
    assert grid.patch_size_level0 == 1024 and (grid.columns, grid.rows) == (3, 2)
    assert grid.level == 1 and grid.read_size == 256  # downsample 4 is the largest <= 1024/256
    assert grid.coords.tolist() == [[0, 0], [1024, 0], [2048, 0], [0, 1024], [1024, 1024], [2048, 1024]]
    assert level0_patch_size(256, 0.5, 0.2527) == 507


def test_grid_keeps_patches_by_tissue_fraction() -> None:
    tissue = np.zeros((4, 4), bool)
    tissue[0, 0] = True  # exactly the first patch (each mask pixel = one 100-px patch)
    tissue[1, 1] = True
    tissue[2, 2:4] = True
    tissue[3, 0] = True
    kw = dict(
        slide_id="s",
        dimensions=(400, 400),
        level_downsamples=(1.0,),
        slide_mpp=0.5,
        target_mpp=0.5,
        patch_size=100,
    )
    assert len(make_grid(**kw, tissue=tissue, min_tissue_fraction=1.0).coords) == 5
    with pytest.raises(SlideError, match="no tissue"):
        make_grid(**kw, tissue=np.zeros((4, 4), bool), min_tissue_fraction=0.0)


def test_slide_smaller_than_one_patch() -> None:
    with pytest.raises(SlideError, match="smaller than one patch"):
        make_grid(
            slide_id="s",
            dimensions=(200, 900),
            level_downsamples=(1.0,),
            slide_mpp=0.25,
            target_mpp=0.5,
            patch_size=256,
            tissue=np.ones((3, 3), bool),
            min_tissue_fraction=0.0,
        )


def test_40x_and_20x_scans_give_the_same_physical_grid(tmp_path: Path) -> None:
    grids = {}
    for mpp in (0.25, 0.5):
        path = write_slide(tmp_path / f"s{mpp}.tif", mpp)
        with Slide(path, slide_id="s") as slide:
            thumb = read_thumbnail(slide, 2.0 / mpp)
            mask = tissue_mask(thumb, 2.0, TissueConfig(min_object_um2=500, max_hole_um2=500))
            grid = make_grid(
                slide_id="s",
                dimensions=slide.dimensions,
                level_downsamples=slide.level_downsamples,
                slide_mpp=mpp,
                target_mpp=0.5,
                patch_size=64,
                tissue=mask,
                min_tissue_fraction=0.5,
            )
        assert {tuple(c) for c in grid.coords.tolist()} == expected_coords(BLOCKS_UM, mpp)
        grids[mpp] = grid
    assert grids[0.25].patch_size_level0 * 0.25 == grids[0.5].patch_size_level0 * 0.5 == 32.0
    assert np.array_equal(grids[0.25].coords * 0.25, grids[0.5].coords * 0.5)
    assert grids[0.25].level == 1 and grids[0.5].level == 0  # 40x read from its 2x-downsampled level


def test_strip_thumbnail_equals_whole_level_resize(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tif", 0.25)
    with Slide(path, slide_id="s") as slide:
        strips = read_thumbnail(slide, 8.0, strip_rows=100)
        whole = read_thumbnail(slide, 8.0, strip_rows=10**6)
    assert strips.shape == whole.shape == (1536 // 8, 2048 // 8, 3)
    assert np.abs(strips.astype(int) - whole.astype(int)).mean() < 2.0


# -- manifests and shards --------------------------------------------------------------------------
def test_manifest_duplicates_are_an_error_before_any_work(tmp_path: Path) -> None:
    write_manifest(tmp_path, [row("a", "x.tif"), row("b", "y.tif"), row("a", "z.tif")])
    with pytest.raises(DataError, match=r"duplicate slide_id: a \(rows 2, 4\)"):
        read_manifest(ProjectLayout(tmp_path))


def test_manifest_row_problems_are_per_slide(tmp_path: Path) -> None:
    write_manifest(
        tmp_path, [row("../evil", "x.tif"), row("ok", "y.tif", mpp="abc"), row("fine", "z.tif", mpp=0.5)]
    )
    entries = {e.row: e for e in read_manifest(ProjectLayout(tmp_path))}
    assert "not a safe file name" in entries[2].problem.message
    assert "row 3: mpp 'abc' is not a number" in entries[3].problem.message
    assert entries[4].problem is None and entries[4].mpp == 0.5 and entries[4].path == tmp_path / "z.tif"


def test_selection_files(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("b\n# comment\na\n")
    assert read_selection(ids) == ["b", "a"]
    csv = tmp_path / "ids.csv"
    csv.write_text("slide_id,note\nc,x\n")
    assert read_selection(csv) == ["c"]
    manifest = write_manifest(tmp_path, [row("a", "x.tif")])
    assert read_selection(manifest) is None
    entries = read_manifest(ProjectLayout(tmp_path))
    with pytest.raises(DataError, match="not in the manifest: zz"):
        select(entries, slide_ids=["zz"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("abcdef0123", min_size=1, max_size=6), unique=True, max_size=40), st.integers(1, 9))
def test_shards_cover_every_slide_exactly_once(ids: list[str], n: int) -> None:
    from steph.slides.manifest import SlideEntry

    entries = [SlideEntry(s, "p", "BRCA", Path(s), None, i) for i, s in enumerate(ids)]
    parts = [shard(entries, n, i) for i in range(n)]
    seen = [e.slide_id for part in parts for e in part]
    assert sorted(seen) == sorted(ids)
    assert max(map(len, parts), default=0) - min(map(len, parts), default=0) <= 1
    reversed_parts = [shard(list(reversed(entries)), n, i) for i in range(n)]  # row order does not matter
    assert parts == reversed_parts


def test_shard_comes_from_the_flags_only() -> None:
    """The Slurm variables no longer choose a shard here: the task id picks a unit of the
    stage's task list, as for every stage (tests/extraction/test_extract_cli.py)."""
    assert resolve_shard(5, 1) == (5, 1)
    assert resolve_shard(None, None) == (1, 0)
    with pytest.raises(ConfigError, match="outside"):
        resolve_shard(2, 2)
    with pytest.raises(ConfigError, match="go together"):
        resolve_shard(2, None)


# -- reading ---------------------------------------------------------------------------------------
def test_premultiplied_argb_over_white_against_unpremultiplied_compositing() -> None:
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, (64, 64)).astype(np.uint32)
    alpha[:8] = 255  # opaque rows, as inside a scan
    alpha[8:16] = 0  # transparent rows, as outside it
    colour = rng.integers(0, 256, (64, 64, 3)).astype(np.float64)
    premultiplied = np.floor(colour * alpha[..., None] / 255.0 + 0.5).astype(np.uint32)
    argb = (
        (alpha << 24) | (premultiplied[..., 0] << 16) | (premultiplied[..., 1] << 8) | premultiplied[..., 2]
    )
    out = np.zeros((64, 64, 3), np.uint8)
    premultiplied_argb_onto_white(argb, out)
    a = alpha[..., None] / 255.0
    expected = colour * a + 255.0 * (1.0 - a)  # straight-alpha "over white", in floating point
    assert np.abs(out - expected).max() <= 1.0  # only the 8-bit premultiplication's rounding
    assert np.array_equal(out[:8], colour[:8].astype(np.uint8))
    assert (out[8:16] == 255).all()
    opaque = np.zeros((4, 4, 3), np.uint8)
    premultiplied_argb_onto_white(argb[:4, :4], opaque)
    assert np.array_equal(opaque, out[:4, :4])


@pytest.mark.parametrize(
    ("x", "y", "level", "size"),
    [(0, 0, 0, (64, 64)), (2000, 1500, 0, (96, 64)), (-30, -17, 0, (80, 80)), (-3, 1533, 1, (50, 40))],
)
def test_direct_reads_equal_openslide_public_read_region(
    tmp_path: Path, x: int, y: int, level: int, size: tuple[int, int]
) -> None:
    import openslide

    from steph.slides.reader import rgba_to_rgb

    path = write_slide(tmp_path / "s.tif", 0.25)
    with Slide(path, slide_id="s") as slide, openslide.OpenSlide(str(path)) as public:
        assert slide._raw_read is not None  # the direct path is the one under test
        direct = slide.read_rgb(x, y, level, size)
        batch = np.zeros((2, size[1], size[0], 3), np.uint8)
        slide.read_rgb_into(batch[1], x, y, level)
        reference = rgba_to_rgb(np.asarray(public.read_region((x, y), level, size)))
    assert direct.shape == (size[1], size[0], 3)
    assert np.abs(direct.astype(int) - reference).max() <= 1
    assert np.array_equal(batch[1], direct) and not batch[0].any()


def test_plain_images_read_through_the_public_path(tmp_path: Path) -> None:
    from PIL import Image

    image = np.full((300, 400, 3), 200, np.uint8)
    image[100:200, 50:150] = (120, 40, 90)
    Image.fromarray(image).save(tmp_path / "plain.png")
    with Slide(tmp_path / "plain.png", slide_id="p") as slide:
        assert slide._raw_read is None
        assert np.array_equal(slide.read_rgb(0, 0, 0, (400, 300)), image)
        assert (slide.read_rgb(390, 290, 0, (20, 20))[10:, 10:] == 255).all()  # beyond the image: white


def _changed_signature(slide, buf, x, y, level, w, h, flags):  # type: ignore[no-untyped-def]
    raise AssertionError("never called with the old arguments")


def _changed_meaning(slide, buf, x, y, level, w, h):  # type: ignore[no-untyped-def]
    import ctypes

    ctypes.memset(buf, 0x7F, 4 * w * h)  # e.g. another pixel format: the call works, the pixels differ


@pytest.mark.parametrize("change", ["gone", "signature", "meaning", "raises"])
def test_a_changed_private_openslide_reader_falls_back_to_the_public_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    """openslide-python's private binding as a future release might have it (the public
    ``read_region`` keeps its own reference to the real one)."""
    import openslide

    import steph.slides.reader
    from steph.slides.reader import rgba_to_rgb

    def raises(*args: object) -> None:
        raise openslide.OpenSlideError("renamed symbol")

    path = write_slide(tmp_path / "s.tif", 0.25)
    private = {"gone": None, "signature": _changed_signature, "meaning": _changed_meaning, "raises": raises}
    monkeypatch.setattr(steph.slides.reader, "_private_read_region", lambda: private[change])
    with Slide(path, slide_id="s") as slide, openslide.OpenSlide(str(path)) as public:
        assert slide._raw_read is None
        direct = slide.read_rgb(2000, 1500, 0, (96, 64))
        reference = rgba_to_rgb(np.asarray(public.read_region((2000, 1500), 0, (96, 64))))
    assert np.array_equal(direct, reference)
    if change != "gone":
        assert "public read_region" in caplog.text
