"""`export-sources` in lab A, `import-sources` in lab B: B merges its own target with A's cancers.

Lab B has only its own cancer (COAD, feature-level synthetic cohort with tiny-cnn's D = 128) and
the sources bundle of lab A (tests/_bundle_project.py); no patient of A is ever in B.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _bundle_project import OVERRIDES, SOURCES, TARGET, project_a

from steph.bundles.container import read_bundle
from steph.bundles.sources import import_sources
from steph.config import load_project
from steph.errors import ConsistencyError, DataError
from steph.pipeline.merge import merge_models
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.synthetic.cohort import CancerSpec, CohortSpec, FeatureSpec
from steph.synthetic.generate import generate_cohort
from steph.synthetic.project import init_configured_project
from steph.theta0 import create_theta0

pytestmark = pytest.mark.slow
OWN = "COAD"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from stephctl.main import app

    a = project_a(tmp_path_factory)
    out = tmp_path_factory.mktemp("sources") / "a-sources.safetensors"
    args = [
        "-p",
        str(a),
        "export-sources",
        *[f"--cancer={c}" for c in SOURCES],
        "--fold",
        "0",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _lab_b(root: Path, dim: int = 128, **overrides: object) -> Path:
    init_configured_project(
        root, cancers=[OWN], encoder="tiny-cnn", overrides={**OVERRIDES, **overrides}, note="lab B"
    )
    spec = CohortSpec(
        cancers=(CancerSpec(name=OWN, n_patients=10),),
        folds=2,
        seed=9,
        features=FeatureSpec(dim=dim, patches=(8, 16)),
    )
    assert generate_cohort(root, spec, level="features", encoder="tiny-cnn").ok
    return root


def test_the_card_describes_the_sources_without_patients(sources: Path) -> None:
    bundle = read_bundle(sources, kind="sources")
    card = bundle.card
    assert sorted(card["sources"]) == sorted(SOURCES)
    assert card["sources"]["BLCA"] == {"patients": 10, "folds": [0], "train_patients_per_fold": {"0": 5}}
    assert card["encoder"]["name"] == "tiny-cnn" and card["encoder"]["dim"] == 128
    assert card["architecture"] == {"dim_in": 128, "dim_emb": 16, "dim_attn": 8, "time_bins": 8}
    assert sorted(bundle.parts) == ["task_vector/BLCA/fold_0", "task_vector/LUAD/fold_0", "theta0"]


def test_lab_b_merges_its_own_target_with_imported_sources(sources: Path, tmp_path: Path, cli) -> None:
    b = _lab_b(tmp_path / "B")
    result = cli("-p", b, "import-sources", sources, "--json")
    assert result.exit_code == 0, result.output
    keys = [item["key"] for item in json.loads(result.stdout)["items"]]
    assert keys == ["theta0", "BLCA/fold_0", "LUAD/fold_0"]
    layout, config = load_project(b)
    assert train_source_models(layout, config).ok and compute_task_vectors(layout, config).ok
    report = merge_models(layout, config, target=OWN, methods=["steph"], folds=[0])
    assert report.ok, report.to_dict()
    meta = json.loads(layout.merged_file(OWN, "steph-top1", 0, "meta.json").read_text())
    assert meta["sources"] == ["BLCA", "LUAD"]
    record = json.loads(layout.task_vector_meta("BLCA", 0).read_text())
    assert record["imported_from"]["bundle_sha256"] == read_bundle(sources).sha256
    # B's model travels on with a card that says where its sources came from
    exported = cli("-p", b, "export", "-t", OWN, "-m", "steph-top1", "-k", 0, "--json")
    assert exported.exit_code == 0, exported.output
    card = read_bundle(json.loads(exported.stdout)["outputs"]["bundle"]).card
    assert card["cohorts"]["sources"]["BLCA"]["patients"] == 10
    assert "imported_from" in card["cohorts"]["sources"]["BLCA"]
    again = cli("-p", b, "import-sources", sources, "--json")
    assert {i["status"] for i in json.loads(again.stdout)["items"]} == {"skipped"}


def test_a_different_theta0_is_refused(sources: Path, tmp_path: Path, cli) -> None:
    layout, config = load_project(_lab_b(tmp_path / "B", seed=7))
    create_theta0(layout, config, 128)
    result = cli("-p", layout.root, "import-sources", sources)
    assert result.exit_code == 1
    assert "different theta0" in result.stderr and not layout.task_vector_meta("BLCA", 0).exists()


def test_a_different_encoder_d_or_architecture_is_refused_with_the_reason(
    sources: Path, tmp_path: Path
) -> None:
    layout, config = load_project(_lab_b(tmp_path / "enc"), {"encoder": "uni2-h"})
    with pytest.raises(ConsistencyError, match="different encoder 'tiny-cnn' \\(this project: 'uni2-h'\\)"):
        import_sources(layout, config, sources)
    layout, config = load_project(_lab_b(tmp_path / "arch"), {"model.dim_emb": 32})
    with pytest.raises(ConsistencyError, match=r"architecture dim_emb 16 \(this project: 32\)"):
        import_sources(layout, config, sources)
    layout, config = load_project(_lab_b(tmp_path / "dim"))
    create_theta0(layout, config, 64)
    with pytest.raises(ConsistencyError, match=r"feature dimension D = 128 \(this project: 64\)"):
        import_sources(layout, config, sources)
    assert not any(layout.task_vectors_root.rglob("*.safetensors"))
    layout, config = load_project(_lab_b(tmp_path / "features", dim=64))  # no theta0 yet: D of its features
    with pytest.raises(ConsistencyError, match=r"feature dimension D = 128 \(this project: 64\)"):
        import_sources(layout, config, sources)
    assert not layout.theta0.exists()
    (tmp_path / "w.bin").write_bytes(b"other weights")
    layout, config = load_project(
        _lab_b(tmp_path / "weights"), {"extract.weights": {"tiny-cnn": str(tmp_path / "w.bin")}}
    )
    with pytest.raises(
        ConsistencyError, match=r"encoder weights random-init seed 0 \(this project: sha256:.* \(w\.bin\)\)"
    ):
        import_sources(layout, config, sources)


def test_a_model_bundle_is_not_a_sources_bundle(
    sources: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, cli
) -> None:
    a = project_a(tmp_path_factory)
    model = tmp_path / "m.safetensors"
    assert (
        cli("-p", a, "export", "-t", TARGET, "-m", "cancer-specific", "-k", 0, "--out", model).exit_code == 0
    )
    layout, config = load_project(_lab_b(tmp_path / "B"))
    with pytest.raises(DataError, match="is a model bundle, not a sources bundle"):
        import_sources(layout, config, model)
