"""Cohort loading: labels, splits, feature readers and the bag store, with every bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _cohorts import make_feature_project, write_features_h5

from steph.config import load_project
from steph.data import BagStore, check_features, load_cohort, load_split, open_bags, read_features
from steph.data import bags as bags_module
from steph.data.stores import FeatureStore, SlideRef, store_for
from steph.errors import DataError, MissingArtifactError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=12, dim=8)


def _layout(root: Path, overrides: dict | None = None):
    return load_project(root, overrides)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_cohort_groups_slides_by_patient(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    assert len(cohort.patients) == 12
    assert next(iter(cohort.patients)) == "BRCA-P000"  # file order
    multi = [p for p in cohort.patients.values() if len(p.slide_ids) == 2]
    assert multi, "the synthetic cohort has patients with two slides"
    targets = cohort.targets(["BRCA-P001", "BRCA-P000"], config.model)
    assert targets.ids == ["BRCA-P001", "BRCA-P000"]
    assert targets.times.tolist() == [cohort.patients["BRCA-P001"].t, cohort.patients["BRCA-P000"].t]
    assert targets.bins.tolist() == [int(t // 365) for t in targets.times.tolist()]


def test_pathology_id_column_and_extra_columns(project: Path) -> None:
    layout, config = _layout(project)
    _write(
        layout.labels("BRCA"),
        "project,patient_id,pathology_id,t,e\nX,A,A-1,10,1\nX,A,A-2,10,1\nX,B,B-1,400.5,0\n",
    )
    cohort = load_cohort(layout, config, "BRCA")
    assert cohort.patients["A"].slide_ids == ("A-1", "A-2")
    assert cohort.patients["B"].t == 400.5 and cohort.patients["B"].e == 0


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("B,B-1,,1", "t is missing"),
        ("B,B-1,-3,1", "t = '-3' must be a finite number >= 0"),
        ("B,B-1,abc,1", "t = 'abc' is not a number"),
        ("B,B-1,nan,1", "must be a finite number"),
        ("B,B-1,10,2", "e = '2' must be 0 or 1"),
        ("B,B-1,10,yes", "e = 'yes' must be 0 or 1"),
        ("A,B-1,11,1", "disagree with t=10, e=1 in row 2"),
        ("B,A-1,10,1", "slide A-1 is already listed in row 2"),
        ("B,../x,10,1", "not a safe file name"),
    ],
)
def test_bad_labels_name_file_and_row(project: Path, row: str, fragment: str) -> None:
    layout, config = _layout(project)
    _write(layout.labels("BRCA"), f"patient_id,slide_id,t,e\nA,A-1,10,1\n{row}\n")
    with pytest.raises(DataError) as info:
        load_cohort(layout, config, "BRCA")
    assert fragment in info.value.message
    assert f"{layout.labels('BRCA')}, row 3" in info.value.message


def test_labels_missing_columns_and_file(project: Path) -> None:
    layout, config = _layout(project)
    _write(layout.labels("BRCA"), "patient_id,time,e\nA,1,1\n")
    with pytest.raises(DataError, match=r"missing column\(s\) t, slide_id"):
        load_cohort(layout, config, "BRCA")
    with pytest.raises(MissingArtifactError, match="BLCA labels not found"):
        load_cohort(layout, config, "BLCA")


def test_split_reads_reference_format(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(cohort.patients)
    # pandas-style index column, val column used as the test set, empty padding cells.
    rows = [",train,val"] + [f"{i},{ids[i]},{ids[8 + i] if i < 4 else ''}" for i in range(8)]
    _write(layout.split("BRCA", 0), "\n".join(rows) + "\n")
    split = load_split(layout, cohort, 0)
    assert split.train == tuple(ids[:8]) and split.test == tuple(ids[8:]) and split.val == ()


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        (
            "train,test\nBRCA-P000,NOPE\n",
            DataError,
            "row 2, column 'test': patient NOPE is not in the labels",
        ),
        (
            "train,test\nBRCA-P000,BRCA-P001\nBRCA-P001,\n",
            DataError,
            "BRCA-P001 is also in the test set (row 2)",
        ),
        (
            "train,test\nBRCA-P000,BRCA-P001\nBRCA-P000,\n",
            DataError,
            "BRCA-P000 is also in the train set (row 2)",
        ),
        (
            "patients,other\nBRCA-P000,BRCA-P001\n",
            DataError,
            "need a train column and a test (or val) column",
        ),
        ("train,test\nBRCA-P000,\n", DataError, "the test set is empty"),
    ],
)
def test_bad_splits(project: Path, text: str, error: type, fragment: str) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    _write(layout.split("BRCA", 0), text)
    with pytest.raises(error) as info:
        load_split(layout, cohort, 0)
    assert fragment in info.value.message
    with pytest.raises(MissingArtifactError, match="split not found"):
        load_split(layout, cohort, 7)


def test_missing_features_listed_with_extract_command(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    victims = [cohort.patients["BRCA-P002"].slide_ids[0], cohort.patients["BRCA-P005"].slide_ids[0]]
    for sid in victims:
        layout.own_features(config.encoder, sid).unlink()
    with pytest.raises(MissingArtifactError) as info:
        check_features(layout, config, cohort, list(cohort.patients))
    assert "2 slide feature file(s) missing" in info.value.message
    assert all(sid in info.value.message for sid in victims)
    assert "stephctl" in (info.value.hint or "") and "extract" in (info.value.hint or "")


def test_nan_features_name_the_slide(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    sid = cohort.patients["BRCA-P003"].slide_ids[0]
    bad = np.ones((5, 8), dtype=np.float32)
    bad[2, 3] = np.inf
    write_features_h5(layout.own_features(config.encoder, sid), bad, encoder=config.encoder)
    with pytest.raises(DataError, match=f"slide {sid} .*NaN or inf"):
        open_bags(layout, config, cohort, list(cohort.patients))


def test_dimension_mismatch_between_slides(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    sid = cohort.patients["BRCA-P004"].slide_ids[0]
    write_features_h5(
        layout.own_features(config.encoder, sid), np.zeros((4, 9), dtype=np.float32), encoder=config.encoder
    )
    with pytest.raises(DataError, match=rf"most files have D=8, but .*{sid}.h5 \(D=9\)"):
        check_features(layout, config, cohort, list(cohort.patients))


def test_readers_accept_trident_and_pt_layouts(tmp_path: Path) -> None:
    data = torch.randn(6, 4)
    with h5py.File(tmp_path / "trident.h5", "w") as fh:
        fh.create_dataset("features", data=data.numpy()[None])
    torch.save(data[None], tmp_path / "batched.pt")
    torch.save(data, tmp_path / "plain.pt")
    torch.save({"features": data, "coords": torch.zeros(6, 2)}, tmp_path / "dict.pt")
    np.save(tmp_path / "array.npy", data.numpy())
    for name in ("trident.h5", "batched.pt", "plain.pt", "dict.pt", "array.npy"):
        assert torch.equal(read_features(tmp_path / name), data), name
    torch.save({"coords": torch.zeros(2)}, tmp_path / "nofeat.pt")
    with pytest.raises(DataError, match="dict with key 'features'"):
        read_features(tmp_path / "nofeat.pt")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read features"):
        read_features(tmp_path / "junk.h5")


def test_feature_path_template_points_at_pt_download(project: Path, tmp_path: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    download = tmp_path / "download" / "tcga_brca"
    download.mkdir(parents=True)
    for patient in cohort.patients.values():
        for sid in patient.slide_ids:
            torch.save(read_features(layout.own_features(config.encoder, sid))[None], download / f"{sid}.pt")
    tlayout, tconfig = _layout(
        project, {"paths.features": str(tmp_path / "download" / "{dataset}" / "{slide_id}.pt")}
    )
    bags = open_bags(tlayout, tconfig, cohort, list(cohort.patients))
    reference = open_bags(layout, config, cohort, list(cohort.patients))
    assert all(torch.equal(bags.get(pid), reference.get(pid)) for pid in cohort.patients)


def test_bag_store_streams_beyond_the_cache(project: Path) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(cohort.patients)
    full = open_bags(layout, config, cohort, ids)
    assert full.n_cached == len(ids) and full.n_streamed == 0
    first = full.get(ids[0]).numel() * 4
    _, small = _layout(project, {"train.cache_gb": (first + 1) / 2**30})
    bounded = open_bags(layout, small, cohort, ids)
    assert bounded.n_cached == 1 and bounded.n_streamed == len(ids) - 1
    assert bounded.cached_bytes <= first + 1
    for pid in ids:
        assert torch.equal(bounded.get(pid), full.get(pid))
        assert bounded.n_patches(pid) == full.get(pid).shape[0]
    multi = next(p for p in cohort.patients.values() if len(p.slide_ids) == 2)
    parts = [read_features(layout.features(config.encoder, s)) for s in multi.slide_ids]
    assert torch.equal(bounded.get(multi.patient_id), torch.cat(parts))


def _threads(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Read with ``n`` threads whatever the CPU count (``1``: the serial path)."""
    monkeypatch.setattr("steph.data.bags.reader_threads", lambda n_reads: max(1, min(n, n_reads)))


class _Recorder:
    def __init__(self) -> None:
        self.items: list[str] = []

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        pass

    def advance(self, task: str, n: int = 1, **info: object) -> None:
        self.items.append(str(info["item"]))

    def finish(self, task: str) -> None:
        pass


@pytest.mark.parametrize("threads", [1, 3])
def test_get_many_equals_get_in_order(project: Path, monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(cohort.patients)
    first = read_features(layout.features(config.encoder, cohort.patients[ids[0]].slide_ids[0]))
    _, small = _layout(project, {"train.cache_gb": 3 * first.numel() * 4 / 2**30})
    store = open_bags(layout, small, cohort, ids)
    assert 0 < store.n_cached < len(ids)
    _threads(monkeypatch, threads)
    asked = [ids[5], ids[0], ids[9], ids[1], ids[5], ids[11], ids[3]]
    bags = store.get_many(asked)
    assert len(bags) == len(asked)
    assert all(torch.equal(bag, store.get(pid)) for bag, pid in zip(bags, asked, strict=True))
    assert store.get_many([]) == []
    with pytest.raises(KeyError, match="NOPE"):
        store.get_many([ids[0], "NOPE"])


def test_open_bags_with_threads_keeps_the_serial_order(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(cohort.patients)
    mid = read_features(layout.features(config.encoder, cohort.patients[ids[2]].slide_ids[0]))
    _, small = _layout(project, {"train.cache_gb": 4.5 * mid.numel() * 4 / 2**30})
    stores, orders = [], []
    for threads in (1, 3):
        _threads(monkeypatch, threads)
        recorder = _Recorder()
        stores.append(open_bags(layout, small, cohort, ids, progress=recorder))
        orders.append(recorder.items)
    serial, threaded = stores
    assert orders == [ids, ids]
    assert 0 < serial.n_cached < len(ids)
    assert threaded._cache.keys() == serial._cache.keys()
    assert threaded.cached_bytes == serial.cached_bytes
    assert [threaded.n_patches(p) for p in ids] == [serial.n_patches(p) for p in ids]
    assert all(torch.equal(a, b) for a, b in zip(threaded.get_many(ids), serial.get_many(ids), strict=True))


def test_open_bags_reads_a_bounded_window_ahead(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(cohort.patients)
    started: list[str] = []
    real = bags_module.read_slide

    def counted(ref: SlideRef) -> torch.Tensor:
        started.append(ref.slide_id)
        return real(ref)

    slides_done: list[int] = []
    ahead: list[int] = []

    class Watch(_Recorder):
        def advance(self, task: str, n: int = 1, **info: object) -> None:
            slides_done.append(
                (slides_done[-1] if slides_done else 0) + len(cohort.patients[str(info["item"])].slide_ids)
            )
            ahead.append(len(started) - slides_done[-1])

    monkeypatch.setattr(bags_module, "read_slide", counted)
    _threads(monkeypatch, 2)
    open_bags(layout, config, cohort, ids, progress=Watch())
    assert sorted(started) == sorted(s for p in cohort.patients.values() for s in p.slide_ids)
    assert max(ahead) <= 2 * 2 and max(ahead) > 0


@pytest.mark.parametrize("threads", [1, 3])
def test_first_non_finite_slide_in_order_is_named(
    project: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    layout, config = _layout(project)
    cohort = load_cohort(layout, config, "BRCA")
    first, later = cohort.patients["BRCA-P004"].slide_ids[0], cohort.patients["BRCA-P005"].slide_ids[0]
    for sid, value in ((first, np.nan), (later, np.inf)):
        bad = np.ones((5, 8), dtype=np.float32)
        bad[1, 2] = value
        write_features_h5(layout.own_features(config.encoder, sid), bad, encoder=config.encoder)
    _threads(monkeypatch, threads)
    recorder = _Recorder()
    with pytest.raises(DataError, match=rf"slide {first} \(patient BRCA-P004\) has NaN or inf"):
        open_bags(layout, config, cohort, list(cohort.patients), progress=recorder)
    assert recorder.items == list(cohort.patients)[:4]


@pytest.mark.parametrize(("suffix", "parallel"), [(".pt", False), (".h5", True)])
def test_reader_threads_read_one_at_a_time_unless_the_store_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, parallel: bool
) -> None:
    refs = []
    for i in range(6):
        path = tmp_path / f"s{i}{suffix}"
        data = torch.full((3, 2), float(i))
        if suffix == ".pt":
            torch.save(data, path)
        else:
            write_features_h5(path, data.numpy())
        refs.append(SlideRef(f"s{i}", path))
    store_class = type(store_for(refs[0].path))
    assert store_class.parallel_reads is parallel
    active, most = [0], [0]
    lock = threading.Lock()
    real = store_class.read

    def watched(self: FeatureStore, ref: SlideRef) -> torch.Tensor:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        try:
            return real(self, ref)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(store_class, "read", watched)
    read = list(bags_module._read_in_order(refs, 3))
    assert [float(t[0, 0]) for t in read] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert (most[0] > 1) is parallel


def test_in_memory_store() -> None:
    store = BagStore.in_memory({"a": torch.ones(3, 2), "b": torch.zeros(1, 2)})
    assert store.dim == 2 and len(store) == 2 and "a" in store and store.get("b").shape == (1, 2)
    with pytest.raises(DataError, match="different feature dimensions"):
        BagStore.in_memory({"a": torch.ones(3, 2), "b": torch.zeros(1, 3)})


def test_split_cells_na_and_index_column(project: Path) -> None:
    layout, config = _layout(project)
    _write(
        layout.labels("BRCA"),
        "patient_id,slide_id,project,t,e\nA,A1,TCGA-BRCA,10,1\nB,B1,TCGA-BRCA,20,0\nC,C1,TCGA-BRCA,5,1\n",
    )
    _write(layout.split("BRCA", 0), ",train,val\n0,A,C\n1,B,NA\n2,NaN,None\n3,,nan\n")
    cohort = load_cohort(layout, config, "BRCA")
    split = load_split(layout, cohort, 0)
    assert (split.train, split.test) == (("A", "B"), ("C",))
    assert cohort.has_project and cohort.patients["A"].projects == ("TCGA-BRCA",)


def test_unsafe_project_value_is_refused(project: Path) -> None:
    layout, config = _layout(project)
    _write(layout.labels("BRCA"), "patient_id,slide_id,project,t,e\nA,A1,../etc,10,1\n")
    with pytest.raises(DataError, match=r"row 2 \(patient A\): project '\.\./etc' is not a safe file name"):
        load_cohort(layout, config, "BRCA")
