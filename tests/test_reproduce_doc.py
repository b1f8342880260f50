"""docs/reproduce.md: its stephctl.yaml loads and points at the published layouts."""

from __future__ import annotations

import re
from pathlib import Path

from steph.config import load_project
from steph.data.stores import store_for

DOC = Path(__file__).parent.parent / "docs" / "reproduce.md"
PAPER_CANCERS = [
    "BLCA",
    "BRCA",
    "CESC",
    "COADREAD",
    "GBMLGG",
    "HNSC",
    "KIPAN",
    "LIHC",
    "LUNG",
    "SARC",
    "SKCM",
    "STES",
    "UCEC",
]


def _config_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## stephctl.yaml", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_reproduce_config_loads_and_points_at_the_published_layouts(tmp_path: Path) -> None:
    block = _config_block()
    (tmp_path / "stephctl.yaml").write_text(block, encoding="utf-8")
    layout, config = load_project(tmp_path)
    assert config.cancers == PAPER_CANCERS and config.encoder == "uni2-h"
    assert config.train.folds == [0, 1, 2, 3, 4] and config.merge.method == "steph"
    store = layout.features(config.encoder, "TCGA-A1-0001-01Z-00-DX1", cancer="KIPAN")
    assert store == Path("/data/UNI2-h-features/TCGA/tcga_kipan.lmdb") and store_for(store).name == "lmdb"
    assert layout.split("BRCA", 3) == Path(
        "/data/UNI2-h-DSS/data_split/stratified-5foldcv/tcga_brca/splits_3.csv"
    )
    # the commented alternative: MahmoodLab's per-project h5 folders
    (tmp_path / "stephctl.yaml").write_text(
        re.sub(r"\n  features: .*\n  # or .*\n  # features: ", "\n  features: ", block), encoding="utf-8"
    )
    layout, config = load_project(tmp_path)
    path = layout.features(config.encoder, "S1", cancer="KIPAN", project="TCGA-KICH")
    assert path == Path("/data/UNI2-h-features/TCGA/TCGA-KICH/S1.h5") and store_for(path).name == "h5"


def test_reproduce_doc_states_the_paper_numbers() -> None:
    text = DOC.read_text(encoding="utf-8")
    for number in ("0.6949", "0.6609", "0.6812", "0.6648", "0.7408"):
        assert number in text
