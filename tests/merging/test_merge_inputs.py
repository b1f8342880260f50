"""`stephctl task-vector` outputs, and every refusal of task-vector and merge before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _merge_project import files_under, project_copy, trained_project

from steph.checkpoints import load_state_dict, read_metadata
from steph.config import load_project
from steph.errors import ConfigError, ConsistencyError, MissingArtifactError, UnknownNameError
from steph.fileio import read_json, sha256_file, write_json
from steph.pipeline.merge import merge_models
from steph.pipeline.task_vector import compute_task_vectors


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return project_copy(tmp_path_factory, tmp_path / "p")


def test_task_vector_is_model_minus_theta0_with_provenance(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = trained_project(tmp_path_factory)
    layout, _ = load_project(root)
    tau = load_state_dict(layout.task_vector("LUNG", 1))
    theta = load_state_dict(layout.model_weights("LUNG", 1))
    theta0 = load_state_dict(layout.theta0)
    assert set(tau) == set(theta) and all(torch.equal(tau[k], theta[k] - theta0[k]) for k in tau)
    assert any(tau[k].abs().sum() > 0 for k in tau)
    record = read_json(layout.task_vector_meta("LUNG", 1))
    assert record["theta0_sha256"] == sha256_file(layout.theta0)
    assert record["source_model"] == "models/LUNG/fold_1/model.safetensors"
    assert record["source_model_sha256"] == sha256_file(layout.model_weights("LUNG", 1))
    assert record["sha256"] == sha256_file(layout.task_vector("LUNG", 1)) and sorted(
        record["parameter_names"]
    ) == sorted(tau)
    assert record["architecture"] == {"dim_in": 16, "dim_emb": 32, "dim_attn": 16, "time_bins": 32}
    assert read_metadata(layout.task_vector("LUNG", 1))["theta0_sha256"] == record["theta0_sha256"]


def test_task_vector_cli_skips_then_overwrites(project: Path, cli) -> None:
    vector, record = (
        project / "task_vectors/BRCA/fold_0.safetensors",
        project / "task_vectors/BRCA/fold_0.json",
    )
    before, created = sha256_file(vector), read_json(record)["created"]
    skipped = cli("-p", project, "task-vector", "--cancer", "brca", "--json")
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["counts"] == {
        "done": 0,
        "skipped": 2,
        "failed": 0,
        "locked": 0,
    }
    redone = cli("-p", project, "task-vector", "-c", "BRCA", "-k", "0", "--overwrite", "--json")
    assert redone.exit_code == 0 and json.loads(redone.stdout)["counts"]["done"] == 1
    assert sha256_file(vector) == before == read_json(record)["sha256"]  # same bits again
    assert read_json(record)["created"] >= created
    assert not [f for f in files_under(project, "task_vectors") if f.endswith(".lock")]


def test_task_vector_refuses_a_model_from_another_theta0(project: Path) -> None:
    layout, config = load_project(project)
    meta = read_json(layout.model_meta("BLCA", 1))
    write_json(layout.model_meta("BLCA", 1), {**meta, "theta0_sha256": "0" * 64})
    with pytest.raises(
        ConsistencyError, match=r"shared coordinate system; refused: BLCA fold 1: theta0 sha256 000000000000"
    ):
        compute_task_vectors(layout, config, overwrite=True)
    meta["architecture"] = {**meta["architecture"], "dim_attn": 8}
    write_json(layout.model_meta("BLCA", 1), meta)
    with pytest.raises(ConsistencyError, match=r"BLCA fold 1: architecture differs .*dim_attn 8 vs 16"):
        compute_task_vectors(layout, config, cancers=["BLCA"], overwrite=True)


def test_task_vector_refuses_untrained_models(project: Path, cli) -> None:
    result = cli("-p", project, "task-vector", "--cancer", "BRCA", "--fold", "3")
    assert result.exit_code == 1
    assert (
        "no trained model for BRCA fold 3" in result.output
        and "train-source --cancer BRCA --fold 3" in result.output
    )


def _no_training_happened(root: Path) -> bool:
    return not (root / "merged").exists() or not any((root / "merged").iterdir())


def test_missing_task_vectors_are_all_listed_with_the_commands(project: Path, cli) -> None:
    for cancer, fold in (("LUNG", 0), ("SKCM", 0), ("BRCA", 1)):
        (project / f"task_vectors/{cancer}/fold_{fold}.json").unlink()
    result = cli("-p", project, "merge", "--target", "BRCA", "--fold", "0", "--fold", "1")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "3 task vector(s) missing: BRCA fold 1, LUNG fold 0, SKCM fold 0" in text
    assert (
        "task-vector --cancer LUNG --cancer SKCM --fold 0" in text
        and "task-vector --cancer BRCA --fold 1" in text
    )
    assert _no_training_happened(project)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "GBMLGG"], "target GBMLGG is not a cancer of the project"),
        (["--target", "BRCA", "--sources", "BLCA,LUNG"], "top-k is 5 but only 2 source cancer(s)"),
        (["--target", "BRCA", "--sources", "BLCA", "--sources", "XYZ"], "XYZ are not cancers of the project"),
        (["--target", "BRCA", "--method", "stehp"], "unknown merge method 'stehp'; did you mean 'steph'?"),
        (["--target", "BRCA", "--method", "ties", "--option", "dens=0.3"], "unknown merge option(s) 'dens'"),
        (
            ["--target", "BRCA", "--method", "ties", "--mix", "fixed"],
            "merge.mix is set to 'fixed' but no requested method",
        ),
        (["--target", "BRCA", "--mix", "blend"], "'blend' is not one of"),
        (["--target", "BRCA", "--method", "task-arithmetic", "--option", "scale=big"], "expected float"),
        (["--method", "steph"], "--target is required"),
    ],
)
def test_bad_invocations_fail_before_training(project: Path, cli, args: list[str], message: str) -> None:
    result = cli("-p", project, "merge", *args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert _no_training_happened(project)


def test_fewer_sources_than_top_k_suggests_lowering_it(project: Path) -> None:
    layout, config = load_project(project, {"merge.sources": ["BLCA", "LUNG"]})
    with pytest.raises(ConfigError) as info:
        merge_models(layout, config, target="BRCA")
    assert "--top-k 2" in str(info.value.hint)


def test_task_vectors_of_another_theta0_or_architecture_are_refused(project: Path) -> None:
    layout, config = load_project(project)
    record = read_json(layout.task_vector_meta("KIPAN", 0))
    write_json(layout.task_vector_meta("KIPAN", 0), {**record, "theta0_sha256": "f" * 64})
    with pytest.raises(
        ConsistencyError, match=r"same theta0.*KIPAN fold 0 was made from theta0 ffffffffffff"
    ):
        merge_models(layout, config, target="BRCA")
    write_json(
        layout.task_vector_meta("KIPAN", 0),
        {**record, "architecture": {**record["architecture"], "dim_emb": 64}},
    )
    with pytest.raises(ConsistencyError, match="KIPAN fold 0 has architecture"):
        merge_models(layout, config, target="BRCA")
    assert _no_training_happened(project)


def test_a_modified_task_vector_file_is_refused(project: Path) -> None:
    layout, config = load_project(project, {"merge.top_k": 3})
    path = layout.task_vector("UCEC", 0)
    state = load_state_dict(path)
    from safetensors.torch import save_file

    save_file({k: v + 1 for k, v in state.items()}, str(path))
    report = merge_models(layout, config, target="BRCA", folds=[0])
    assert not report.ok and "does not match its record" in report.items[0].message


def test_unknown_target_folds_and_missing_theta0(project: Path) -> None:
    layout, config = load_project(project)
    layout.theta0.unlink()
    with pytest.raises(MissingArtifactError, match="theta0 not found"):
        merge_models(layout, config, target="BRCA")
    with pytest.raises(UnknownNameError):
        merge_models(layout, config, target="BRCA", methods=["nope"])


def test_missing_features_fail_before_training(project: Path) -> None:
    layout, config = load_project(project)
    slide = next(iter(sorted((project / "features").rglob("BRCA-P003-S0.h5"))))
    slide.unlink()
    with pytest.raises(MissingArtifactError, match="BRCA-P003-S0"):
        merge_models(layout, config, target="BRCA")
    assert _no_training_happened(project)


def test_features_of_another_d_are_refused_before_any_slide_is_read(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #32: a feature file's D is checked against theta0's dim_in from its header; before,
    every bag was read and the mismatch reported afterwards, naming theta0, not a file."""
    import numpy as np
    from _cohorts import write_features_h5

    import steph.data.bags as bags
    from steph.data import load_cohort

    layout, config = load_project(project)
    cohort = load_cohort(layout, config, "BRCA")
    for patient in cohort.patients.values():  # the whole target re-extracted with another encoder
        for sid in patient.slide_ids:
            write_features_h5(layout.features(config.encoder, sid), np.ones((5, 12)), encoder=config.encoder)
    read: list[str] = []
    original = bags.read_slide
    monkeypatch.setattr(bags, "read_slide", lambda ref: read.append(ref.slide_id) or original(ref))
    with pytest.raises(ConsistencyError) as info:
        merge_models(layout, config, target="BRCA", methods=["model-avg"], folds=[0])
    assert f": features have D=12, theta0 {layout.theta0} takes D=16" in info.value.message
    assert info.value.message.startswith(str(layout.features_dir(config.encoder)))
    assert read == []
