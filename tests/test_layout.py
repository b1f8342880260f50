"""The project layout module: every documented path, id validation, templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steph.errors import ConfigError, LayoutError
from steph.layout import LAYOUT_TREE, PathTemplates, ProjectLayout, check_safe_id, normalize_cancer

ROOT = Path("/proj")


@pytest.fixture
def layout() -> ProjectLayout:
    return ProjectLayout(ROOT)


def test_every_documented_path(layout: ProjectLayout) -> None:
    expected = {
        layout.config_file: "stephctl.yaml",
        layout.manifest: "slides/manifest.csv",
        layout.labels("BRCA"): "labels/BRCA.csv",
        layout.split("BRCA", 3): "splits/BRCA/splits_3.csv",
        layout.features("uni2-h", "TCGA-AB-1234"): "features/uni2-h/TCGA-AB-1234.h5",
        layout.own_features("uni2-h", "S1"): "features/uni2-h/S1.h5",
        layout.thumbnail("uni2-h", "S1"): "features/uni2-h/thumbnails/S1.png",
        layout.extract_failures("uni2-h"): "features/uni2-h/failures.csv",
        layout.theta0: "models/null.safetensors",
        layout.theta0_meta: "models/null.json",
        layout.model_weights("BRCA", 0): "models/BRCA/fold_0/model.safetensors",
        layout.model_meta("BRCA", 0): "models/BRCA/fold_0/meta.json",
        layout.model_metrics("BRCA", 0): "models/BRCA/fold_0/metrics.json",
        layout.model_log("BRCA", 0): "models/BRCA/fold_0/train.log",
        layout.task_vector("BLCA", 4): "task_vectors/BLCA/fold_4.safetensors",
        layout.task_vector_meta("BLCA", 4): "task_vectors/BLCA/fold_4.json",
        layout.merged_dir("BRCA", "steph", 1): "merged/BRCA/steph/fold_1",
        layout.merged_file(
            "BRCA", "steph", 1, "coefficients.csv"
        ): "merged/BRCA/steph/fold_1/coefficients.csv",
        layout.predictions("BRCA", "steph", 2): "results/BRCA/steph/fold_2/predictions.csv",
        layout.result_metrics(
            "BRCA", "cancer-specific", 2
        ): "results/BRCA/cancer-specific/fold_2/metrics.json",
        layout.summary: "results/summary.csv",
        layout.report_dir("BRCA"): "reports/BRCA",
        layout.logs_dir: "logs",
    }
    for path, relative in expected.items():
        assert path == ROOT / relative


def test_layout_tree_matches_docs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "layout.md").read_text()
    for line in LAYOUT_TREE.strip().splitlines():
        assert line in docs, f"docs/layout.md lacks: {line}"


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("BRCA", "BRCA"), ("brca", "BRCA"), ("tcga_brca", "BRCA"), ("TCGA-COADREAD", "COADREAD")],
)
def test_normalize_cancer(raw: str, norm: str) -> None:
    assert normalize_cancer(raw) == norm


@pytest.mark.parametrize("bad", ["", "br ca", "../x", "a/b"])
def test_bad_cancer_names(bad: str) -> None:
    with pytest.raises(LayoutError):
        normalize_cancer(bad)


@pytest.mark.parametrize("bad", ["../etc", "a/b", ".hidden", "x..y", "", "a b", "a\\b"])
def test_unsafe_slide_ids(bad: str, layout: ProjectLayout) -> None:
    with pytest.raises(LayoutError, match="not a safe file name"):
        check_safe_id(bad)
    with pytest.raises(LayoutError):
        layout.features("enc", bad)


def test_templates_redirect_inputs(tmp_path: Path) -> None:
    templates = PathTemplates(
        labels="/data/{dataset}/{dataset}_survival.csv",
        splits="/data/{dataset}/splits_{fold}.csv",
        features="feats/TCGA-{cancer}/{slide_id}.h5",
    )
    layout = ProjectLayout(tmp_path, templates)
    assert layout.labels("BRCA") == Path("/data/tcga_brca/tcga_brca_survival.csv")
    assert layout.split("BRCA", 2) == Path("/data/tcga_brca/splits_2.csv")
    assert layout.features("uni2-h", "S1", cancer="BRCA") == tmp_path / "feats/TCGA-BRCA/S1.h5"
    # extract always writes into the project, whatever the templates say
    assert layout.own_features("uni2-h", "S1") == tmp_path / "features/uni2-h/S1.h5"


def test_unknown_template_field() -> None:
    with pytest.raises(ConfigError, match="unknown template field"):
        PathTemplates(features="/x/{slide}.h5")


def test_split_folds_discovery(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path)
    for k in (0, 1, 2):
        layout.split("BRCA", k).parent.mkdir(parents=True, exist_ok=True)
        layout.split("BRCA", k).write_text("train,test\n")
    assert layout.split_folds("BRCA") == [0, 1, 2]
    assert layout.split_folds("BLCA") == []


def test_no_layout_names_outside_layout_module() -> None:
    """Only steph/layout.py joins the layout's folder names (a cheap guard against drift)."""
    pattern = re.compile(r"""["'](task_vectors|fold_|splits_|null\.safetensors|manifest\.csv|summary\.csv)""")
    offenders = []
    for package in ("steph", "stephctl"):
        for path in (Path(__file__).parent.parent / package).rglob("*.py"):
            if path.name == "layout.py" and path.parent.name == "steph":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path}:{number}: {line.strip()}")
    assert not offenders, "layout names outside steph/layout.py:\n" + "\n".join(offenders)
