"""`import-reference --theta0` with a crafted `.pth` (issue #32, items 2 and 10).

A few kilobytes can declare gigabytes: a stride-0 expanded tensor holds one value in its storage
and millions in its shape. Before the fix such a file was imported with exit 0 after writing a
huge theta0 (or died with an allocation traceback); now it is refused before anything is
allocated or written.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from _crafted_bundles import abmil_state, lab_b

from steph.checkpoints import load_reference_checkpoint
from steph.config import load_project
from steph.errors import DataError
from steph.theta0 import import_theta0


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state}, path)
    return path


def _expanded(width: int) -> dict[str, torch.Tensor]:
    state = abmil_state()
    state["feat_proj.0.weight"] = torch.zeros(1, 1).expand(16, width)
    return state


@pytest.fixture
def project(tmp_path: Path):
    from _bundle_project import OVERRIDES

    from steph.synthetic.project import init_configured_project

    init_configured_project(
        tmp_path / "P", cancers=["COAD"], encoder="tiny-cnn", overrides=OVERRIDES, note="t"
    )
    return load_project(tmp_path / "P")


@pytest.mark.parametrize("width", [4_000_000, 2**36], ids=["memory-bomb", "allocation-failure"])
def test_a_tiny_checkpoint_declaring_a_huge_layer_is_refused_before_allocating(
    project, tmp_path: Path, cli, width: int
) -> None:
    layout, config = project
    bomb = _save(tmp_path / "null.pth", _expanded(width))
    assert bomb.stat().st_size < 20_000
    with pytest.raises(DataError, match=r"feat_proj\.0\.weight.*declares"):
        import_theta0(layout, config, bomb)
    assert not layout.theta0.exists()
    result = cli("-p", layout.root, "import-reference", "--theta0", bomb)
    assert result.exit_code == 1 and "declares" in result.stderr and not layout.theta0.exists()


def test_a_checkpoint_whose_d_differs_from_the_features_is_refused(tmp_path: Path) -> None:
    layout, config = load_project(lab_b(tmp_path / "B"))  # features with D = 128
    path = _save(tmp_path / "null.pth", abmil_state(dim_in=64))
    with pytest.raises(Exception, match=r"dim_in 64 \(expected 128\)"):
        import_theta0(layout, config, path)
    assert (
        import_theta0(layout, config, _save(tmp_path / "ok.pth", abmil_state())).architecture["dim_in"] == 128
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: {**s, "pred_head.bias": torch.full((8,), float("nan"))}, "not finite"),
        (lambda s: {**s, "pred_head.bias": torch.zeros(8).to_sparse()}, "not a dense tensor"),
        (lambda s: {**s, "pred_head.bias": torch.zeros(8, dtype=torch.int32)}, "int32, not floating"),
    ],
    ids=["nan", "sparse", "int"],
)
def test_malformed_tensors_are_refused(project, tmp_path: Path, change, match) -> None:
    layout, config = project
    path = _save(tmp_path / "null.pth", change(abmil_state()))
    with pytest.raises(DataError, match=match):
        import_theta0(layout, config, path)
    assert not layout.theta0.exists()


def test_compressed_or_oversized_records_are_refused_before_loading(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.pth", abmil_state())
    packed = tmp_path / "packed.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(DataError, match="compressed records"):
        load_reference_checkpoint(packed)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(DataError, match="not a zip archive"):
        load_reference_checkpoint(tmp_path / "text.pth")
    assert set(load_reference_checkpoint(good)) == set(abmil_state())
