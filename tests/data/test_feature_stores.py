"""The paper's data as published: every feature store, multi-project cancers, label mapping,
NA-padded splits, the encoder identity check, and one-line errors for every bad input."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from _published import CANCER, DATASET, FORMATS, cohort, make_published_project, write_lmdb

from steph.config import load_config, load_project
from steph.data import load_cohort, load_split, open_bags, read_features
from steph.data.encoder_identity import canonical_encoder, same_encoder
from steph.data.features import read_slide
from steph.data.lmdb_store import LmdbStore
from steph.data.safe_load import ForbiddenGlobalError, loads_safe
from steph.data.stores import FEATURE_STORES, FeatureStore, SlideRef, store_for
from steph.errors import ConfigError, DataError, MissingArtifactError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _bags(root: Path) -> dict[str, torch.Tensor]:
    layout, config = load_project(root)
    cohort = load_cohort(layout, config, CANCER)
    store = open_bags(layout, config, cohort, list(cohort.patients))
    return {pid: store.get(pid) for pid in cohort.patients}


def _expected(rows: list[dict]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[np.ndarray]] = {}
    for r in rows:
        parts.setdefault(r["patient_id"], []).append(r["features"])
    return {pid: torch.from_numpy(np.concatenate(p).astype(np.float32)) for pid, p in parts.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_train_source_runs_on_each_published_format(cli, tmp_path: Path, fmt: str) -> None:
    root, rows = make_published_project(tmp_path, fmt)
    bags, expected = _bags(root), _expected(rows)
    assert bags.keys() == expected.keys()
    for pid, bag in bags.items():  # slides of a patient concatenated along the patch axis, [K, D]
        torch.testing.assert_close(bag, expected[pid], atol=1e-3 if fmt == "stamp-h5" else 0, rtol=1e-3)
    result = cli("-p", root, "train-source", "--device", "cpu")
    assert result.exit_code == 0, result.output
    layout, _ = load_project(root)
    assert all(layout.model_meta(CANCER, k).is_file() for k in (0, 1))


@pytest.mark.parametrize("pad", ["", "NA", "NaN", "None", "nan"])
def test_split_padding_cells_are_empty(tmp_path: Path, pad: str) -> None:
    root, rows = make_published_project(tmp_path, "per-project-h5", pad=pad)
    layout, config = load_project(root)
    cohort = load_cohort(layout, config, CANCER)
    split = load_split(layout, cohort, 0)
    assert len(split.train) + len(split.test) == len({r["patient_id"] for r in rows})


def test_tcga_cdr_columns_and_months(cli, tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "per-project-h5", labels_style="tcga-cdr")
    layout, config = load_project(root)
    assert config.labels.time_unit == "months"
    cohort = load_cohort(layout, config, CANCER)
    for r in rows:
        patient = cohort.patients[r["patient_id"]]
        assert patient.t == pytest.approx(r["t"], abs=1e-3) and patient.e == r["e"]
    assert not cohort.has_project
    result = cli("-p", root, "train-source", "--device", "cpu")
    # the template uses {project}, the CDR-style labels have no project column: one line naming both
    assert result.exit_code == 1
    assert "{project}" in result.output and f"{DATASET}_survival.csv" in result.output
    assert "labels.project" in result.output
    flat = tmp_path / "download" / "flat"
    flat.mkdir()
    for r in rows:  # the same files in one folder: no {project} needed
        shutil.copy(tmp_path / "download" / r["project"] / f"{r['slide_id']}.h5", flat)
    data = yaml.safe_load(layout.config_file.read_text())
    data["paths"]["features"] = str(flat / "{slide_id}.h5")
    layout.config_file.write_text(yaml.safe_dump(data))
    result = cli("-p", root, "train-source", "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_label_mapping_errors(tmp_path: Path) -> None:
    root, _ = make_published_project(tmp_path, "per-project-h5")
    layout, config = load_project(root)
    data = yaml.safe_load(layout.config_file.read_text())
    data["labels"] = {"time": "DSS.time"}
    layout.config_file.write_text(yaml.safe_dump(data))
    layout, config = load_project(root)
    with pytest.raises(DataError, match=r"missing column\(s\) DSS.time \(named by labels.time") as info:
        load_cohort(layout, config, CANCER)
    assert f"{DATASET}_survival.csv" in info.value.message
    data["labels"] = {"time_unit": "weeks"}
    layout.config_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"labels\.time_unit: 'weeks'") as info:
        load_config(root)
    assert "days or months" in (info.value.hint or "")


def test_slide_fields_only_in_features_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"paths.labels: \{project\} varies per slide"):
        load_config(tmp_path, {"paths.labels": "/x/{project}.csv"}, require=False)


# -- the reference's LMDB ---------------------------------------------------------------------


def _lmdb_project(tmp_path: Path) -> tuple[Path, list[dict], Path]:
    root, rows = make_published_project(tmp_path, "lmdb")
    return root, rows, tmp_path / "download" / f"{DATASET}.lmdb"


def test_lmdb_is_opened_read_only_without_a_lock_file(tmp_path: Path) -> None:
    _, rows, path = _lmdb_project(tmp_path)
    (path / "lock.mdb").unlink()
    store = LmdbStore()
    ref = store.ref(path, rows[0]["slide_id"])
    assert torch.equal(store.read(ref), torch.from_numpy(rows[0]["features"]))
    assert not (path / "lock.mdb").exists()
    store.close()


def test_lmdb_without_keys_is_named(tmp_path: Path) -> None:
    import lmdb

    path = tmp_path / "x.lmdb"
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"S1", pickle.dumps(torch.zeros(1, 2, 3)))
    env.close()
    with pytest.raises(DataError, match=r"x.lmdb: LMDB store has no key '__keys__'") as info:
        LmdbStore().missing([SlideRef("S1", path, "S1")])
    assert "pickle.dumps" in (info.value.hint or "")


def test_lmdb_bad_values_are_refused_and_named(tmp_path: Path) -> None:
    rows = cohort()
    path = tmp_path / "bad.lmdb"
    evil, wrong = rows[0]["slide_id"], rows[1]["slide_id"]
    write_lmdb(path, rows, {evil: pickle.dumps(_Evil()), wrong: pickle.dumps({"a": 1})})
    store = LmdbStore()
    with pytest.raises(DataError, match=rf"key {evil}\]: refused to unpickle: forbidden global \w+\.system"):
        store.read(store.ref(path, evil))
    with pytest.raises(DataError, match=rf"key {wrong}\]: value is a dict, not a tensor"):
        store.read(store.ref(path, wrong))
    with pytest.raises(DataError, match=rf"key {evil}\]: refused to unpickle"):
        store.shape(store.ref(path, evil))  # the cheap shape path refuses it too
    assert store.shape(store.ref(path, rows[2]["slide_id"])) == rows[2]["features"].shape
    good = store.read(store.ref(path, rows[2]["slide_id"]))  # other keys still read
    assert torch.equal(good, torch.from_numpy(rows[2]["features"]))
    store.close()


def test_truncated_lmdb_is_a_data_error(tmp_path: Path) -> None:
    _, rows, path = _lmdb_project(tmp_path)
    data = (path / "data.mdb").read_bytes()
    (path / "data.mdb").write_bytes(data[:4096])
    store = LmdbStore()
    with pytest.raises(DataError, match=r"tcga_kipan.lmdb") as info:
        store.read(store.ref(path, rows[-1]["slide_id"]))
    assert "truncated" in (info.value.hint or "")
    store.close()


def test_missing_lmdb_key_and_store(tmp_path: Path) -> None:
    _, rows, path = _lmdb_project(tmp_path)
    store = LmdbStore()
    refs = [store.ref(path, rows[0]["slide_id"]), store.ref(path, "TCGA-XX-0000-01Z-00-DX1")]
    assert store.missing(refs) == refs[1:]
    with pytest.raises(MissingArtifactError, match="LMDB feature store not found"):
        store.missing([store.ref(tmp_path / "nope.lmdb", "A")])
    store.close()


# -- safe loading -----------------------------------------------------------------------------


def test_raw_pickles_allow_tensors_and_arrays_only() -> None:
    t = torch.randn(1, 3, 4)
    assert torch.equal(loads_safe(pickle.dumps(t)), t)
    buffer = io.BytesIO()
    torch.save(t, buffer)
    assert torch.equal(loads_safe(buffer.getvalue()), t)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(loads_safe(pickle.dumps(a)), a)
    assert np.array_equal(loads_safe(pickle.dumps(a, protocol=2)), a)  # bytes via _codecs.encode(latin1)
    with pytest.raises(pickle.UnpicklingError, match="only latin1"):
        loads_safe(pickle.dumps(_Rot13()))
    with pytest.raises(ForbiddenGlobalError, match=r"forbidden global \w+\.system"):
        loads_safe(pickle.dumps(_Evil()))
    view = torch.randn(2, 5, 3)[:, 1:]  # offsets and strides survive
    assert torch.equal(loads_safe(pickle.dumps(view)), view)
    assert not loads_safe(pickle.dumps(torch.ones(2, requires_grad=True))).requires_grad
    with pytest.raises(pickle.UnpicklingError, match="rebuilt from a storage"):
        loads_safe(pickle.dumps(_FakeStorage()))
    nested = pickle.dumps(_StorageBomb())  # storage bytes are loaded with weights_only too
    with pytest.raises(pickle.UnpicklingError):
        loads_safe(nested)


class _Rot13:
    def __reduce__(self):
        import codecs

        return (codecs.encode, ("abc", "rot13"))


class _FakeStorage:
    def __reduce__(self):
        import collections

        return (torch._utils._rebuild_tensor_v2, ("x", 0, (1,), (1,), False, collections.OrderedDict()))


class _StorageBomb:
    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (pickle.dumps(_Evil()),))


def test_trident_numpy_pt_and_forbidden_pt(tmp_path: Path) -> None:
    a = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    torch.save(a, tmp_path / "s.pt")
    assert torch.equal(read_features(tmp_path / "s.pt"), torch.from_numpy(a))
    torch.save({"features": a[None]}, tmp_path / "d.pt")
    assert torch.equal(read_features(tmp_path / "d.pt"), torch.from_numpy(a))
    torch.save(_Evil(), tmp_path / "evil.pt")
    with pytest.raises(
        DataError, match=r"evil\.pt: cannot read features: the safe loader refused \w+\.system"
    ):
        read_features(tmp_path / "evil.pt")
    torch.save(np.array(["a", "b"], dtype=object), tmp_path / "obj.pt")
    with pytest.raises(
        DataError,
        match=r"obj\.pt: cannot read features: the safe loader refused this pickle: dtype object is not numeric",
    ):
        read_features(tmp_path / "obj.pt")


def test_stamp_h5_reads_feats(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh.create_dataset("feats", data=np.ones((3, 5), dtype=np.float16))
        fh.create_dataset("coords", data=np.zeros((3, 2)))
    assert read_features(tmp_path / "s.h5").shape == (3, 5)


# -- registry ---------------------------------------------------------------------------------


def test_unsupported_suffix_names_the_stores(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no feature store reads '.zarr'") as info:
        store_for(tmp_path / "x.zarr")
    assert "lmdb (.lmdb)" in (info.value.hint or "") and "stephctl.feature_stores" in (info.value.hint or "")


def test_a_plugin_store_is_used_by_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class CsvStore(FeatureStore):
        name = "csv-test"
        suffixes = (".csvfeat",)

        def read(self, ref: SlideRef) -> torch.Tensor:
            return torch.from_numpy(np.loadtxt(ref.path, delimiter=",", ndmin=2).astype(np.float32))

    FEATURE_STORES.load_plugins()
    monkeypatch.setitem(FEATURE_STORES._items, "csv-test", CsvStore())
    (tmp_path / "s.csvfeat").write_text("1,2\n3,4\n")
    assert read_slide(SlideRef("s", tmp_path / "s.csvfeat")).tolist() == [[1, 2], [3, 4]]
    assert set(FEATURE_STORES.names()) >= {"h5", "pt", "npy", "lmdb", "csv-test"}


# -- encoder identity -------------------------------------------------------------------------


def test_encoder_aliases() -> None:
    for name in ("uni_v2", "UNI2-h", "uni2", "hf-hub:MahmoodLab/UNI2-h", "uni2_h"):
        assert canonical_encoder(name) == "uni2-h", name
    assert same_encoder("conch_v15", "conch-v1.5")
    assert not same_encoder("conch_v15", "uni2-h")
    assert same_encoder("my-finetune", "uni2-h", ["my_finetune"])


def test_encoder_mismatch_refused_with_override(cli, tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "per-project-h5")
    for i, r in enumerate(rows):
        with h5py.File(tmp_path / "download" / r["project"] / f"{r['slide_id']}.h5", "a") as fh:
            fh["features"].attrs["encoder"] = "conch_v15" if i == 0 else "uni_v2"
    result = cli("-p", root, "train-source", "--device", "cpu")
    assert result.exit_code == 1
    assert f"{rows[0]['slide_id']}.h5: features were made by encoder 'conch_v15'" in result.output
    assert "encoder_aliases" in result.output
    layout, _ = load_project(root)
    data = yaml.safe_load(layout.config_file.read_text())
    data["encoder_aliases"] = ["conch_v15"]
    layout.config_file.write_text(yaml.safe_dump(data))
    assert cli("-p", root, "train-source", "--device", "cpu").exit_code == 0


@pytest.mark.parametrize("fmt", ["lmdb", "per-project-h5"])
def test_status_counts_slides_in_stores_and_project_folders(cli, tmp_path: Path, fmt: str) -> None:
    root, rows = make_published_project(tmp_path, fmt)
    result = cli("-p", root, "status", "--json")
    features = next(s for s in json.loads(result.stdout)["stages"] if s["stage"] == "features")
    assert features["done"] == features["total"] == len(rows)


def test_merge_on_a_project_without_cancers_names_the_stages(cli, empty_project: Path) -> None:
    result = cli("-p", empty_project, "merge", "--target", "BRCA")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "has no cancers yet" in text
    assert "train-source" in text and "task-vector" in text and "stephctl check" in text
