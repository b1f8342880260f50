"""explain's project-independent renderer on synthetic slides (steph.synthetic TIFFs)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from steph.explain import SlideInput, Transfer, render_patient
from steph.explain.heatmap import attention_raster, percentile_rank, thumbnail_downsample
from steph.explain.transfer import draw_transfer
from steph.slides import Slide
from steph.synthetic import CancerSpec, CohortSpec, SlideSpec
from steph.synthetic.slides import render_slide, textures
from steph.synthetic.tiff import write_pyramidal_tiff

MPP = 0.5
CELL_PX = 256  # SlideSpec.cell_um 128 um at 0.5 um/px: one phenotype per patch


def synthetic_slide(
    path: Path, seed: int = 0, size_um: float = 1024.0
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A steph.synthetic slide; returns its path, the coords of its tissue cells and their phenotypes."""
    spec = CohortSpec(
        cancers=(CancerSpec(name="BRCA", n_patients=10, censoring=0.5, median_days=1000.0),),
        slides=SlideSpec(size_um=size_um),
    )
    rng = np.random.default_rng(seed)
    image, cells = render_slide(
        spec, np.full(spec.phenotypes, 1 / spec.phenotypes), MPP, textures(spec, MPP), rng
    )
    write_pyramidal_tiff(path, image, mpp=MPP, tile=256, min_level_size=256)
    rows, cols = np.nonzero(cells >= 0)
    coords = np.stack([cols * CELL_PX, rows * CELL_PX], axis=1).astype(np.int64)
    return path, coords, cells[rows, cols]


def test_percentile_rank_against_a_loop() -> None:
    values = np.array([0.3, 0.1, 0.3, 0.9, 0.0])
    expected = [
        np.mean([sum(w < v for w in values) + j for j in range(sum(w == v for w in values))]) / 4
        for v in values
    ]
    np.testing.assert_allclose(percentile_rank(values), expected)
    assert percentile_rank(np.array([0.5])).tolist() == [1.0]


@pytest.mark.parametrize("downsample", [2.0, 3.0, 7.3])
def test_each_patch_attention_lands_on_its_own_grid_cell(tmp_path: Path, downsample: float) -> None:
    path, coords, _ = synthetic_slide(tmp_path / "s.tif")
    with Slide(path, slide_id="s") as slide:
        size = slide.dimensions
    assert thumbnail_downsample(size, max_px=1024) == pytest.approx(2.0)  # 2048 px slide -> 1024 px
    for k in (0, len(coords) // 2, len(coords) - 1):
        values = np.zeros(len(coords))
        values[k] = 1.0
        raster = attention_raster(coords, CELL_PX, values, size, downsample)
        x, y = coords[k]
        # every raster pixel whose centre lies inside patch k carries its value, and no other pixel does
        # (independent computation: map each pixel centre back to level 0)
        ys, xs = np.mgrid[0 : raster.shape[0], 0 : raster.shape[1]]
        cx, cy = (xs + 0.5) * downsample, (ys + 0.5) * downsample
        inside = (cx >= x) & (cx < x + CELL_PX) & (cy >= y) & (cy < y + CELL_PX)
        assert inside.any()
        assert np.all(raster[inside] == 1.0) and np.all(raster[~inside & ~np.isnan(raster)] == 0.0)
        hot = np.argwhere(raster == 1.0)
        assert np.all(hot[:, 1] * downsample < x + CELL_PX) and np.all((hot[:, 1] + 1) * downsample > x)
        assert np.all(hot[:, 0] * downsample < y + CELL_PX) and np.all((hot[:, 0] + 1) * downsample > y)
    covered = ~np.isnan(attention_raster(coords, CELL_PX, np.ones(len(coords)), size, 2.0))
    assert covered.sum() == len(coords) * (CELL_PX // 2) ** 2  # non-overlapping cells, nothing else painted


def _page(tmp_path: Path, *, slide_path: Path | None, compare: bool = True):  # type: ignore[no-untyped-def]
    path, coords, phenotypes = synthetic_slide(tmp_path / "a.tif")
    rng = np.random.default_rng(1)
    score = np.where(phenotypes == 0, 2.0, 0.0) + rng.normal(0, 0.2, len(coords))
    attention = np.exp(score) / np.exp(score).sum()
    other = rng.dirichlet(np.ones(len(coords)))
    slide = SlideInput(
        "SYN-A-DX1",
        coords,
        CELL_PX,
        attention,
        compare=other if compare else None,
        slide_path=slide_path if slide_path is not None else None,
        patch_size=CELL_PX,
    )
    transfer = Transfer(("BLCA", "KIPAN"), (0.7, 0.2), (0.25, 0.8), (True, False))
    page = render_patient(
        tmp_path / "out",
        "SYN-A",
        [slide],
        model="steph",
        compare_model="cancer-specific",
        transfer=transfer,
        risk=0.5,
        top_n=4,
    )
    return page, coords, attention, path


def test_render_patient_writes_every_file_and_a_qupath_feature_collection(tmp_path: Path) -> None:
    page, coords, attention, path = _page(tmp_path, slide_path=tmp_path / "a.tif")
    names = sorted(p.name for p in page.files)
    assert names == sorted(
        ["heatmap-SYN-A-DX1.png", "patches.png", "transfer.png", "SYN-A-DX1.geojson", "index.html"]
    )
    assert not page.problems and not page.notices
    for png in page.folder.glob("*.png"):
        assert Image.open(png).size[0] > 300
    html = page.html.read_text()
    assert "heatmap-SYN-A-DX1.png" in html and "patches.png" in html and "SYN-A-DX1.geojson" in html
    assert "cancer-specific" in html and "BLCA" in html

    with Slide(path, slide_id="a") as slide:
        width, height = slide.dimensions
    document = json.loads((page.folder / "SYN-A-DX1.geojson").read_text())
    assert document["type"] == "FeatureCollection" and len(document["features"]) == len(coords)
    for k, feature in enumerate(document["features"]):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        assert ring[:, 0].min() == coords[k, 0] and ring[:, 1].min() == coords[k, 1]
        assert ring[:, 0].max() - ring[:, 0].min() == CELL_PX
        assert (ring >= 0).all() and (ring[:, 0] <= width).all() and (ring[:, 1] <= height).all()
        props = feature["properties"]
        assert props["objectType"] == "tile" and len(props["classification"]["color"]) == 3
        assert str(uuid.UUID(feature["id"])) == feature["id"]  # QuPath 0.4+ reads ids as UUIDs
        measurements = props["measurements"]
        assert measurements["Attention"] == pytest.approx(attention[k])
        assert 0 <= measurements["Attention percentile"] <= 100
        assert "Attention (cancer-specific)" in measurements
    assert len({f["id"] for f in document["features"]}) == len(coords)


def test_a_missing_slide_skips_only_the_images_that_need_it(tmp_path: Path) -> None:
    page, *_ = _page(tmp_path, slide_path=tmp_path / "gone.tif")
    names = {p.name for p in page.files}
    assert "patches.png" not in names
    assert {"heatmap-SYN-A-DX1.png", "SYN-A-DX1.geojson", "transfer.png", "index.html"} <= names
    assert len(page.problems) == 1 and "gone.tif" in page.problems[0] and "fix its path" in page.problems[0]


def test_features_only_draws_on_the_grid_with_a_notice(tmp_path: Path) -> None:
    _, coords, _ = synthetic_slide(tmp_path / "a.tif", size_um=512.0)
    page = render_patient(
        tmp_path / "out", "P", [SlideInput("S1", coords, CELL_PX, np.full(len(coords), 1 / len(coords)))]
    )
    assert not page.problems and any("features only" in n for n in page.notices)
    assert "patches.png" not in {p.name for p in page.files} and (page.folder / "heatmap-S1.png").is_file()


def test_transfer_bars_are_the_given_numbers(tmp_path: Path) -> None:
    transfer = Transfer(
        ("BLCA", "COADREAD", "KIPAN"), (0.41, 0.02, 0.3), (0.2, 0.95, 0.5), (True, False, True)
    )
    drawn = draw_transfer(tmp_path / "t.png", transfer, title="x")
    assert drawn.w == pytest.approx(transfer.w) and drawn.lam == pytest.approx(transfer.lam)
    assert drawn.selected == transfer.selected
    assert transfer.contribution == pytest.approx((0.41 * 0.8, 0.0, 0.15))


def test_slide_input_refuses_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="one attention per row"):
        SlideInput("s", np.zeros((3, 2)), 256, np.ones(2))


# -- QuPath ---------------------------------------------------------------------------------------
def _qupath_import(features: list[dict]) -> list[tuple[str, int, int | None, dict[str, float]]]:  # type: ignore[type-arg]
    """What QuPath 0.4+'s ``PathObjectTypeAdapters.PathObjectTypeAdapter.read`` makes of each feature:
    ``(class name, class colour, object colour, measurements)`` with colours packed as QuPath's
    ``ColorTools.packRGB``. QuPath keeps one ``PathClass`` per name: the first colour seen for a
    name is the class's colour for every object of that name."""

    def pack(rgb: list[int]) -> int:
        return (255 << 24) | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]

    classes: dict[str, int] = {}
    out = []
    for feature in features:
        props = feature["properties"]
        colour = props.get("color")
        own = colour if isinstance(colour, int) else pack(colour) if colour and len(colour) == 3 else None
        cls = props["classification"]
        name = cls["name"]
        classes.setdefault(name, pack(cls["color"]))
        out.append((name, classes[name], own, props["measurements"]))
    return out


def test_qupath_tiles_share_one_class_and_carry_their_own_colour(tmp_path: Path) -> None:
    from matplotlib import colormaps

    from steph.explain.geojson import CLASS_COLOUR, CLASS_NAME, patch_features

    coords = np.array([[0, 0], [256, 0], [0, 256], [256, 256]])
    attention = np.array([0.1, 0.2, 0.3, 0.4])
    colour_by = attention / attention.max()
    features = patch_features("S1", coords, 256, {"Attention": attention}, colour_by)
    imported = _qupath_import(features)
    assert {name for name, *_ in imported} == {CLASS_NAME}
    assert {cls for _, cls, *_ in imported} == {
        (255 << 24) | (CLASS_COLOUR[0] << 16) | (CLASS_COLOUR[1] << 8) | CLASS_COLOUR[2]
    }
    own = [c for _, _, c, _ in imported]
    assert None not in own and len(set(own)) == len(coords)  # each tile its own heatmap colour
    for k, (_, _, colour, measurements) in enumerate(imported):
        r, g, b = (round(255 * v) for v in colormaps["viridis"](colour_by[k])[:3])
        assert colour == (255 << 24) | (r << 16) | (g << 8) | b
        assert measurements == {"Attention": pytest.approx(attention[k])}


# -- heatmap colours ------------------------------------------------------------------------------
def test_heatmap_colour_map_is_perceptual() -> None:
    from matplotlib import colormaps

    from steph.explain.heatmap import CMAP

    rgb = colormaps[CMAP](np.linspace(0, 1, 64))[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])  # CIE Y, independent of matplotlib
    assert np.all(np.diff(luminance) > 0)  # lightness rises monotonically: no rainbow


def test_absolute_scale_keeps_near_uniform_attention_near_uniform() -> None:
    from steph.explain.heatmap import ColourScale

    attention = np.linspace(0.024, 0.032, 36)
    q = percentile_rank(attention)
    absolute = ColourScale.for_patient("absolute", [attention])
    np.testing.assert_allclose(absolute.colour(attention, q), attention / 0.032)
    assert absolute.colour(attention, q).min() == pytest.approx(0.75)
    assert absolute.caveat() == ""
    percentile = ColourScale.for_patient("percentile", [attention])
    np.testing.assert_allclose(percentile.colour(attention, q), q)
    assert "near-uniform" in percentile.caveat() and "1.33" in percentile.caveat()
    shared = ColourScale.for_patient("absolute", [attention, 2 * attention])  # both maps, one scale
    assert shared.high == pytest.approx(0.064)
    with pytest.raises(ValueError, match="absolute, percentile"):
        ColourScale.for_patient("rainbow", [attention])  # type: ignore[arg-type]


def test_scale_choice_reaches_the_figures_and_the_qupath_colours(tmp_path: Path) -> None:
    _, coords, _ = synthetic_slide(tmp_path / "a.tif", size_um=512.0)
    attention = np.linspace(1.0, 1.2, len(coords))
    attention /= attention.sum()
    colours = {}
    for scale in ("absolute", "percentile"):
        page = render_patient(
            tmp_path / scale, "P", [SlideInput("S1", coords, CELL_PX, attention)], scale=scale
        )
        document = json.loads((page.folder / "S1.geojson").read_text())
        colours[scale] = [tuple(f["properties"]["color"]) for f in document["features"]]
        assert ("percentile among all" in page.html.read_text()) == (scale == "percentile")
    spread = {k: np.ptp(np.array(v, dtype=float), axis=0).sum() for k, v in colours.items()}
    assert spread["absolute"] < 0.5 * spread["percentile"]  # a 1.2x range is not drawn at full contrast


# -- STEPH transfer -------------------------------------------------------------------------------
def test_all_zero_weights_say_no_transfer_instead_of_bars(tmp_path: Path) -> None:
    from steph.explain.transfer import NO_TRANSFER

    transfer = Transfer(("BLCA", "COADREAD", "KIPAN"), (0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (True, True, False))
    assert transfer.none
    drawn = draw_transfer(tmp_path / "t.png", transfer, title="x")
    assert drawn.w == () and drawn.selected == () and NO_TRANSFER in drawn.text
    assert Image.open(drawn.path).size[0] > 300
    page = render_patient(
        tmp_path / "out",
        "P",
        [SlideInput("S1", np.array([[0, 0]]), CELL_PX, np.array([1.0]))],
        transfer=transfer,
    )
    assert NO_TRANSFER in page.html.read_text() and page.transfer is not None and page.transfer.w == ()
    assert not Transfer(("A",), (1e-6,), (0.5,), (True,)).none


def test_showcase_skips_patients_without_transfer(tmp_path: Path) -> None:
    from steph.explain.inputs import extremes, transferring_patients
    from steph.layout import ProjectLayout

    layout = ProjectLayout(tmp_path)
    path = layout.merged_file("BRCA", "steph-top2", 0, "coefficients.csv")
    path.parent.mkdir(parents=True)
    rows = ["patient_id,source,w,lambda,selected"]
    for pid, w in (("hi", 0.0), ("mid", 0.4), ("lo", 0.0), ("low2", 0.1)):
        rows += [f"{pid},BLCA,{w},0.5,1", f"{pid},KIPAN,0.0,0.5,1"]
    path.write_text("\n".join(rows) + "\n")
    risks = {"hi": 3.0, "mid": 1.0, "lo": -2.0, "low2": -1.0}
    shown = transferring_patients(layout, "BRCA", "steph-top2", 0)
    assert shown == {"mid", "low2"}
    assert extremes({p: r for p, r in risks.items() if p in shown}, 1) == ["mid", "low2"]
    assert transferring_patients(layout, "BRCA", "cancer-specific", 0) is None
