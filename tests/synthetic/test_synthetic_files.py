"""generate_cohort: labels, splits, feature files and OpenSlide-readable slides in the project layout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from steph.config import load_project
from steph.errors import ConfigError
from steph.fileio import read_csv, read_json
from steph.layout import ProjectLayout
from steph.synthetic import CancerSpec, CohortSpec, FeatureSpec, SlideSpec, generate_cohort
from steph.synthetic.features import prototypes
from steph.synthetic.slides import APPEARANCES, textures


def small_spec(**options: object) -> CohortSpec:
    cancers = (
        CancerSpec(name="BRCA", n_patients=23, censoring=0.6),
        CancerSpec(name="BLCA", n_patients=31, censoring=0.75),
    )
    return CohortSpec(cancers=cancers, second_slide_rate=0.3, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def feature_project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    root = tmp_path_factory.mktemp("features") / "project"
    generate_cohort(root, small_spec(features=FeatureSpec(dim=24, patches=(20, 40))), level="features")
    return ProjectLayout(root)


def label_rows(layout: ProjectLayout, cancer: str) -> list[dict[str, str]]:
    return read_csv(layout.labels(cancer))


def test_labels_have_one_row_per_slide_and_consistent_patients(feature_project: ProjectLayout) -> None:
    rows = label_rows(feature_project, "BRCA")
    assert list(rows[0]) == ["patient_id", "slide_id", "t", "e"]
    patients = {r["patient_id"] for r in rows}
    assert len(patients) == 23
    assert len(rows) > 23  # some patients have two slides
    by_patient: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add((r["t"], r["e"]))
        assert int(r["t"]) >= 1 and r["e"] in ("0", "1")
    assert all(len(v) == 1 for v in by_patient.values())


@pytest.mark.parametrize("cancer", ["BRCA", "BLCA"])
def test_splits_partition_patients_and_stratify_events(feature_project: ProjectLayout, cancer: str) -> None:
    layout = feature_project
    events = {r["patient_id"]: int(r["e"]) for r in label_rows(layout, cancer)}
    assert layout.split_folds(cancer) == [0, 1, 2, 3, 4]
    tested: Counter[str] = Counter()
    event_counts = []
    for k in range(5):
        rows = read_csv(layout.split(cancer, k))
        train = {r["train"] for r in rows if r["train"]}
        test = {r["test"] for r in rows if r["test"]}
        assert not train & test
        assert train | test == set(events)
        tested.update(test)
        event_counts.append(sum(events[p] for p in test))
    assert set(tested) == set(events) and set(tested.values()) == {1}  # each patient tested exactly once
    assert max(event_counts) - min(event_counts) <= 1


def test_feature_files_are_readable_and_carry_the_mix(feature_project: ProjectLayout) -> None:
    layout = feature_project
    _, config = load_project(layout.root)
    assert config.encoder == "synthetic"
    truth = {r["patient_id"]: r for r in read_csv(layout.synthetic_truth)}
    spec_json = read_json(layout.synthetic_spec)
    spec = small_spec(features=FeatureSpec(dim=24, patches=(20, 40)))
    protos = prototypes(spec)
    rows = label_rows(layout, "BLCA")
    slides_of: dict[str, list[str]] = {}
    for r in rows:
        slides_of.setdefault(r["patient_id"], []).append(r["slide_id"])
    errors = []
    for pid, slides in slides_of.items():
        bags = []
        for slide_id in slides:
            with h5py.File(layout.own_features("synthetic", slide_id), "r") as fh:
                assert fh["features"].dtype == np.float32 and fh["coords"].dtype == np.int64
                assert fh["coords"].shape == (fh["features"].shape[0], 2)
                assert fh.attrs["encoder"] == "synthetic" and fh.attrs["embed_dim"] == 24
                bags.append(fh["features"][()])
        bag = np.concatenate(bags)
        assert 20 <= len(bag) <= 40
        nearest = np.argmin(((bag[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)
        estimated = np.bincount(nearest, minlength=spec.phenotypes) / len(bag)
        true_mix = np.array([float(truth[pid][f"p_{n}"]) for n in spec_json["phenotypes"]])
        errors.append(np.abs(estimated - true_mix).max())
    assert np.median(errors) < 0.2  # patch proportions follow the patient's phenotype mix


def test_rerun_reuses_files_and_different_spec_is_refused(feature_project: ProjectLayout) -> None:
    layout = feature_project
    spec = small_spec(features=FeatureSpec(dim=24, patches=(20, 40)))
    first = layout.own_features("synthetic", "SYN-BRCA-0000-DX1").stat().st_mtime_ns
    report = generate_cohort(layout.root, spec, level="features")
    assert all(item.details["written"] == 0 for item in report.items)
    assert layout.own_features("synthetic", "SYN-BRCA-0000-DX1").stat().st_mtime_ns == first
    with pytest.raises(ConfigError, match="different generated cohort"):
        generate_cohort(layout.root, small_spec(sharing=0.9, features=FeatureSpec(dim=24, patches=(20, 40))))


def test_features_of_uni2h_dimension(tmp_path: Path) -> None:
    spec = CohortSpec(
        cancers=(CancerSpec(name="LUNG", n_patients=10),),
        folds=2,
        features=FeatureSpec(dim=1536, patches=(3, 5)),
    )
    generate_cohort(tmp_path / "p", spec, level="features", encoder="uni2-h")
    layout = ProjectLayout(tmp_path / "p")
    with h5py.File(layout.own_features("uni2-h", "SYN-LUNG-0000-DX1"), "r") as fh:
        assert fh["features"].shape[1] == 1536


@pytest.fixture(scope="module")
def slide_project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    root = tmp_path_factory.mktemp("slides") / "project"
    spec = CohortSpec(
        cancers=(CancerSpec(name="BRCA", n_patients=10), CancerSpec(name="SKCM", n_patients=10)),
        folds=2,
        second_slide_rate=0.0,
        slides=SlideSpec(size_um=512.0, mpp=(0.5, 0.25)),
    )
    generate_cohort(root, spec, level="slides")
    return ProjectLayout(root)


def test_slides_open_in_openslide_with_declared_mpp(slide_project: ProjectLayout) -> None:
    openslide = pytest.importorskip("openslide")
    rows = read_csv(slide_project.manifest)
    assert len(rows) == 20
    assert {r["cancer"] for r in rows} == {"BRCA", "SKCM"}
    seen = set()
    for row in rows:
        path = slide_project.slide_path(row["path"])
        assert path.parent == slide_project.slides_dir / row["cancer"]
        with openslide.OpenSlide(str(path)) as slide:
            mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
            assert mpp == pytest.approx(float(row["mpp"]))
            assert slide.dimensions[0] == round(512.0 / mpp)  # the same physical size at 20x and 40x
            assert slide.level_count >= 2
            assert slide.level_downsamples[1] == pytest.approx(2.0)
        seen.add(mpp)
    assert seen == {0.5, 0.25}


def test_slides_show_tissue_on_white_background(slide_project: ProjectLayout) -> None:
    openslide = pytest.importorskip("openslide")
    row = read_csv(slide_project.manifest)[0]
    with openslide.OpenSlide(str(slide_project.slide_path(row["path"]))) as slide:
        rgb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"), dtype=np.float64)
    saturation = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1)
    tissue = saturation > 0.15
    assert 0.25 < tissue.mean() < 0.7  # SlideSpec.tissue_fraction (0.35, 0.6), blurred edges
    assert rgb[~tissue].mean() > 240  # white background


def test_phenotype_textures_are_distinguishable() -> None:
    spec = CohortSpec(cancers=(CancerSpec(name="BRCA", n_patients=10),), phenotypes=len(APPEARANCES), folds=2)
    tiles = textures(spec, 0.5).astype(np.float64)
    means = tiles.reshape(len(tiles), -1, 3).mean(axis=1)
    distance = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distance[~np.eye(len(tiles), dtype=bool)].min() > 8.0


def test_slides_do_not_depend_on_the_number_of_threads(tmp_path: Path) -> None:
    spec = CohortSpec(
        cancers=(CancerSpec(name="UCEC", n_patients=10),), folds=2, slides=SlideSpec(size_um=512.0)
    )
    generate_cohort(tmp_path / "one", spec, level="slides", workers=1)
    generate_cohort(tmp_path / "two", spec, level="slides", workers=3)
    one, two = ProjectLayout(tmp_path / "one"), ProjectLayout(tmp_path / "two")
    for row in read_csv(one.manifest):
        assert one.slide_path(row["path"]).read_bytes() == two.slide_path(row["path"]).read_bytes()


def test_real_labels_are_never_overwritten(empty_project: Path) -> None:
    layout = ProjectLayout(empty_project)
    layout.labels("BRCA").write_text("patient_id,slide_id,t,e\nP1,S1,100,1\n")
    with pytest.raises(ConfigError, match="not written by the cohort generator"):
        generate_cohort(empty_project, small_spec(), level="features")
    assert layout.labels("BRCA").read_text().startswith("patient_id,slide_id,t,e\nP1,")


def test_heavy_tailed_bag_sizes_are_clipped_log_normal() -> None:
    import math

    import numpy as np

    from steph.synthetic.features import bag_size

    spec = small_spec(features=FeatureSpec(dim=8, patches=(150, 12000), size_median=1500, size_spread=0.8))
    rng = np.random.default_rng(0)
    sizes = np.array([bag_size(spec, rng) for _ in range(4000)])
    assert sizes.min() >= 150 and sizes.max() <= 12000
    assert abs(float(np.median(sizes)) / 1500 - 1) < 0.05
    assert abs(float(np.log(sizes).std()) - 0.8) < 0.05  # the clip trims < 1% of the mass
    assert (sizes > 3 * 1500).mean() > 0.05 > (sizes > 12000).mean()
    uniform = small_spec(features=FeatureSpec(dim=8, patches=(20, 40)))
    assert {bag_size(uniform, rng) for _ in range(500)} == set(range(20, 41))
    assert math.isclose(FeatureSpec().size_spread, 0.8)
