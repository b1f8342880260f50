"""Feature files crafted by a hostile party (issue #32, loader side): each test is built from
one reproduction and failed on the loaders before they were hardened.

Crashes (SIGSEGV) and memory bombs run in a subprocess: a crash must not take pytest with it,
and the peak RSS of a fresh process measures what a read allocates.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _published import DATASET, make_published_project, write_lmdb

from steph.checkpoints import load_checked_torch
from steph.config import load_project
from steph.data import check_features, load_cohort
from steph.data.features import feature_shape, read_features
from steph.data.safe_load import loads_safe
from steph.errors import DataError

# -- 1. memory corruption from a crafted pickle -------------------------------------------------


class _ObjectArray:
    """``numpy.ndarray((2,), 'O', buffer)``: an object array whose two "pointers" are file bytes."""

    def __reduce__(self):
        return (np.ndarray, ((2,), "O", b"\x41" * 16))


class _FollowPointers:
    """``OrderedDict(object array)``: iterating the array dereferences the pointers."""

    def __reduce__(self):
        return (collections.OrderedDict, (_ObjectArray(),))


def _stephctl(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stephctl", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def _errors(report: str, check: str) -> list[str]:
    findings = json.loads(report)["findings"]
    return [f["message"] for f in findings if f["level"] == "error" and f["check"] == check]


def test_crafted_lmdb_value_is_refused_not_a_segfault(tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "lmdb", n_patients=4)
    store = tmp_path / "download" / f"{DATASET}.lmdb"
    for name in store.iterdir():
        name.unlink()
    store.rmdir()
    crafted = rows[0]["slide_id"]
    write_lmdb(store, rows, {crafted: pickle.dumps(_FollowPointers())})
    result = _stephctl("-p", root, "check", "--json")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # was -11 (SIGSEGV)
    errors = _errors(result.stdout, "unreadable features")
    assert len(errors) == 1 and crafted in errors[0] and "dtype object is not numeric" in errors[0]


def test_crafted_trident_pt_is_refused_not_a_segfault(tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "trident-pt", n_patients=4)
    crafted = rows[0]["slide_id"]
    torch.save(_FollowPointers(), tmp_path / "download" / "trident" / "features_uni_v2" / f"{crafted}.pt")
    result = _stephctl("-p", root, "check", "--json")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # was -11 (SIGSEGV)
    errors = _errors(result.stdout, "unreadable features")
    assert len(errors) == 1 and crafted in errors[0] and "dtype object is not numeric" in errors[0]


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class _Build:
    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args, self.state)


@pytest.mark.parametrize(
    ("crafted", "refusal"),
    [
        (_ObjectArray(), "dtype object is not numeric"),
        (
            _Reduce(np.ndarray, (2,), "f4"),
            "built from bytes in the pickle",
        ),  # no buffer: uninitialised memory
        (_Reduce(np.ndarray, (4,), "f4", b"\0" * 4, 0, (0,)), "without strides"),  # stride 0 repeats bytes
        (_Reduce(np.ndarray, (1 << 40,), "f4", b"\0" * 16), "needs 4398046511104 bytes"),
        (_Reduce(np.ndarray, (2,), "f4,O", b"\0" * 24), "not numeric"),  # structured with an object field
        (_Reduce(np.ndarray, (2,), "(4,)f4", b"\0" * 32), "not numeric"),  # sub-array dtype
        (
            _Build(np.dtype, ("V16",), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 16, 1, 0)),
            "not numeric",
        ),
        (_Build(np.dtype, ("f4",), (3, "<", None, ("a",), None, 4, 1, 0)), "structured"),
    ],
)
def test_only_numeric_arrays_held_by_the_pickle_are_rebuilt(crafted: object, refusal: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        loads_safe(pickle.dumps(crafted, protocol=2))
    buffer = io.BytesIO()
    torch.save(crafted, buffer)
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        loads_safe(buffer.getvalue())  # the torch.load path (TRIDENT .pt, archives in LMDB values)


def test_array_state_must_hold_exactly_its_bytes() -> None:
    a = np.arange(6, dtype=np.float32)
    good = pickle.dumps(a, protocol=2)
    assert np.array_equal(loads_safe(good), a)
    # the same pickle claiming 6e6 values over its 24 bytes
    bad = good.replace(b"K\x06\x85", b"J\x80\x8d\x5b\x00\x85")
    assert bad != good
    with pytest.raises(pickle.UnpicklingError, match="needs exactly 24000000 bytes"):
        loads_safe(bad)


# -- 2. memory bombs from tiny files ----------------------------------------------------------

_MEMO_BOMB = textwrap.dedent(
    """
    import resource
    from steph.data.safe_load import loads_safe
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(loads_safe(b"\\x80\\x02K\\x01r\\x00\\x00\\x00\\x08."))  # 1, LONG_BINPUT 0x08000000
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """
)


def test_a_ten_byte_lmdb_value_naming_a_huge_memo_index_is_not_a_memory_bomb() -> None:
    """Python's C unpickler sized its memo table from the index: 2 GB for these 10 bytes."""
    result = subprocess.run([sys.executable, "-c", _MEMO_BOMB], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    value, grew_mib = result.stdout.strip().splitlines()[-2:]
    assert value == "1" and float(grew_mib) < 64, grew_mib  # grew 2048 MiB before


_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from steph.data.features import feature_shape, read_features
    from steph.errors import StephError
    path = Path(sys.argv[1])
    feature_shape(path.with_name("warm.npy")), read_features(path.with_name("warm.npy"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error = None
    try:
        feature_shape(path)
        read_features(path)
    except StephError as exc:
        error = exc.message
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"error": error, "grew_mib": grew / 1024}))
    """
)

ROWS, DIM = 1_000_000, 128  # 512 MB of float32; the file declared 4,000,000 x 128


def _measure(path: Path) -> dict:
    """Read ``path`` in a fresh process: the error (or None) and how much its peak RSS grew."""
    np.save(path.with_name("warm.npy"), np.zeros((2, 3), dtype=np.float32))
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stride_zero_pt_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    torch.save(torch.zeros(DIM).expand(ROWS, DIM), path)
    assert path.stat().st_size < 4096
    found = _measure(path)
    assert found["error"] and "needs 512000000 bytes but its storage holds 512" in found["error"]
    assert found["grew_mib"] < 64, found


def test_stride_zero_lmdb_value_is_refused(tmp_path: Path) -> None:
    from _published import cohort

    from steph.data.lmdb_store import LmdbStore

    rows = cohort(n_patients=2)
    path, crafted = tmp_path / "s.lmdb", rows[0]["slide_id"]
    write_lmdb(path, rows, {crafted: pickle.dumps(torch.zeros(1, 1, DIM).expand(1, 100_000, DIM))})
    store = LmdbStore()
    ref = store.ref(path, crafted)
    for read in (store.shape, store.read):  # shape is what `check` asks
        with pytest.raises(DataError, match=r"needs 51200000 bytes but its storage holds 512"):
            read(ref)
    store.close()


def test_unwritten_chunked_h5_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", shape=(ROWS, DIM), dtype="f4", chunks=(1024, DIM))
    assert path.stat().st_size < 10_000
    found = _measure(path)
    assert found["error"] and "declares shape [1000000, 128] (512,000,000 bytes)" in found["error"]
    assert "stores 0 bytes" in found["error"]
    assert found["grew_mib"] < 64, found


def test_compressed_h5_expanding_beyond_the_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zeros.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset(
            "features", data=np.zeros((20_000, DIM), dtype="f4"), chunks=(1000, DIM), compression="gzip"
        )
    with pytest.raises(DataError, match=r"compressed: at most 100x is read"):
        read_features(path)
    honest = tmp_path / "honest.h5"
    values = np.random.default_rng(0).normal(size=(500, DIM)).astype(np.float32)
    with h5py.File(honest, "w") as fh:
        fh.create_dataset("features", data=values, chunks=(100, DIM), compression="gzip", shuffle=True)
    assert torch.equal(read_features(honest), torch.from_numpy(values))


def test_npy_header_must_match_the_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (ROWS, DIM)}
    )
    path = tmp_path / "bomb.npy"
    path.write_bytes(buffer.getvalue() + b"\0" * 64)
    for read in (feature_shape, read_features):
        with pytest.raises(
            DataError,
            match=r"declares shape \[1000000, 128\] \(512,000,000 bytes of float32\), the file holds 64",
        ):
            read(path)


# -- 9. HDF5 external storage, external links, virtual datasets --------------------------------


def test_h5_external_storage_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)  # 128 bytes
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", shape=(16, 8), dtype="u1", external=[(str(secret), 0, 128)])
    with pytest.raises(DataError, match=r"s\.h5: dataset '/features' is stored in external files"):
        read_features(path)  # read the password file as features before
    with pytest.raises(DataError, match="stored in external files"):
        feature_shape(path)


def _target(tmp_path: Path) -> np.ndarray:
    values = np.arange(48, dtype=np.float32).reshape(6, 8)
    with h5py.File(tmp_path / "target.h5", "w") as fh:
        fh.create_dataset("padding", data=np.full((64, 8), -1.0, dtype=np.float32))
        fh.create_dataset("features", data=values)
    return values


def test_h5_external_link_is_refused(tmp_path: Path) -> None:
    _target(tmp_path)
    path = tmp_path / "link.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("padding", data=np.full((256, 8), 7.0, dtype=np.float32))
        fh["features"] = h5py.ExternalLink("target.h5", "/features")
    with pytest.raises(DataError, match=r"link\.h5: 'features' is an external link to target\.h5:/features"):
        read_features(path)  # the raw reader read link.h5 at target.h5's offsets before: 7.0s, no error


def test_h5_soft_link_into_an_external_group_is_refused(tmp_path: Path) -> None:
    _target(tmp_path)
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as fh:
        fh["elsewhere"] = h5py.ExternalLink("target.h5", "/")
        fh["features"] = h5py.SoftLink("/elsewhere/features")
    with pytest.raises(DataError, match=r"'features' leads into another file, .*target\.h5"):
        read_features(path)


def test_h5_virtual_dataset_is_refused(tmp_path: Path) -> None:
    _target(tmp_path)
    layout = h5py.VirtualLayout(shape=(6, 8), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp_path / "target.h5"), "features", shape=(6, 8))
    path = tmp_path / "virtual.h5"
    with h5py.File(path, "w") as fh:
        fh.create_virtual_dataset("features", layout)
    with pytest.raises(DataError, match=r"virtual\.h5: dataset '/features' is a virtual dataset"):
        read_features(path)


def test_h5_soft_link_inside_the_file_still_reads(tmp_path: Path) -> None:
    values = np.ones((3, 4), dtype=np.float32)
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data/x", data=values)
        fh["features"] = h5py.SoftLink("/data/x")
    assert torch.equal(read_features(path), torch.from_numpy(values))


# -- 10. sparse, meta and big-endian feature tensors -------------------------------------------


@pytest.mark.parametrize(
    ("make", "refusal"),
    [
        (lambda: torch.eye(3).to_sparse(), "a sparse_coo tensor"),
        (lambda: torch.eye(3).to_sparse_csr(), "a sparse_csr tensor"),
        (lambda: torch.empty(5, 8, device="meta"), "a tensor on device 'meta'"),
        (lambda: torch.ones(2, 3, dtype=torch.complex64), "a tensor of dtype complex64"),
    ],
)
def test_sparse_meta_and_complex_tensors_are_one_line_errors(
    tmp_path: Path, make: Callable[[], torch.Tensor], refusal: str
) -> None:
    path = tmp_path / "s.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "in beta"
        torch.save(make(), path)
    for read in (feature_shape, read_features):  # feature_shape is what `check` asks
        with pytest.raises(DataError, match=rf"s\.pt: refused features: {refusal}"):
            read(path)


@pytest.mark.parametrize(
    ("make", "refusal"),
    [
        (lambda: torch.eye(3).to_sparse(), "tensor 'w' is a sparse_coo tensor, not a dense tensor"),
        (lambda: torch.empty(5, 8, device="meta"), "tensor 'w' on device 'meta'"),
        (lambda: torch.ones(2, 3, dtype=torch.complex64), "tensor 'w' of dtype complex64"),
        (
            lambda: torch.zeros(1).expand(64, 8),
            r"tensor 'w' of shape \[64, 8\] needs 2048 bytes but its storage holds 4",
        ),
    ],
)
def test_checkpoints_refuse_the_tensors_features_refuse_by_the_same_check(
    tmp_path: Path, make: Callable[[], torch.Tensor], refusal: str
) -> None:
    """Weights files and theta0 checkpoints go through :func:`checked_tensor` too (one check,
    one wording), with the tensor's name in the message."""
    path = tmp_path / "w.pth"
    torch.save({"w": make()}, path)
    with pytest.raises(DataError, match=rf"w\.pth: {refusal}"):
        load_checked_torch(path, floating_only=False)


def test_check_refuses_a_meta_tensor(cli, tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "trident-pt", n_patients=4)
    torch.save(
        torch.empty(7, 8, device="meta"),
        tmp_path / "download" / "trident" / "features_uni_v2" / f"{rows[0]['slide_id']}.pt",
    )
    result = cli("-p", root, "check", "--json")
    assert result.exit_code == 2  # "all checks passed" before
    errors = _errors(result.output, "unreadable features")
    assert len(errors) == 1 and rows[0]["slide_id"] in errors[0] and "device 'meta'" in errors[0]


def test_big_endian_features_are_read_in_native_order(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    big = values.astype(">f4")
    np.save(tmp_path / "s.npy", big)
    torch.save(big, tmp_path / "s.pt")
    torch.save({"features": big[None]}, tmp_path / "d.pt")
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh.create_dataset("features", data=big)
    for name in ("s.npy", "s.pt", "d.pt", "s.h5"):
        assert torch.equal(read_features(tmp_path / name), torch.from_numpy(values)), name


def test_a_view_of_a_larger_storage_is_still_a_tensor() -> None:
    from steph.data.safe_load import checked_tensor

    base = torch.arange(24.0).reshape(4, 6)
    view = base[1:3, ::2]
    assert torch.equal(checked_tensor(view), view)
    assert torch.equal(loads_safe(pickle.dumps(view)), view)


# -- 2. the configurable patch limit -------------------------------------------------------------


def test_max_patches_refuses_larger_slides_before_reading(cli, tmp_path: Path) -> None:
    root, rows = make_published_project(tmp_path, "per-project-h5", n_patients=4)
    limit = max(len(r["features"]) for r in rows) - 1
    large = sorted(r["slide_id"] for r in rows if len(r["features"]) > limit)
    assert 0 < len(large) < len(rows)
    config = root / "stephctl.yaml"
    config.write_text(config.read_text(encoding="utf-8") + f"\nmax_patches: {limit}\n", encoding="utf-8")
    result = cli("-p", root, "check", "--json")
    assert result.exit_code == 2
    (errors,) = _errors(result.output, "unreadable features")
    assert f"more than max_patches ({limit})" in errors and large[0] in errors
    layout, project = load_project(root)
    cohort = load_cohort(layout, project, "KIPAN")
    with pytest.raises(DataError, match=rf"more than max_patches \({limit}\)") as info:
        check_features(layout, project, cohort, list(cohort.patients))
    assert "raise max_patches in stephctl.yaml" in (info.value.hint or "")


def test_coords_are_checked_as_features_are(tmp_path: Path) -> None:
    """explain and predict --explain read ``coords`` too: from the file itself, within its size."""
    from steph.explain.inputs import read_geometry
    from steph.extraction.h5format import read_coords

    _target(tmp_path)
    linked, bomb = tmp_path / "linked.h5", tmp_path / "bomb.h5"
    with h5py.File(linked, "w") as fh:
        fh.create_dataset("features", data=np.ones((6, 8), dtype=np.float32))
        fh["coords"] = h5py.ExternalLink("target.h5", "/padding")
    with h5py.File(bomb, "w") as fh:
        fh.create_dataset("features", data=np.ones((6, 8), dtype=np.float32))
        fh.create_dataset("coords", shape=(ROWS, 2), dtype="i8", chunks=(1024, 2))  # never written
    with pytest.raises(DataError, match=r"'coords' is an external link to target\.h5:/padding"):
        read_coords(linked)
    with pytest.raises(DataError, match=r"'coords' is an external link"):
        read_geometry(linked, "S1", patches=6)
    with pytest.raises(DataError, match=r"dataset '/coords' declares shape \[1000000, 2\]"):
        read_coords(bomb)
    with pytest.raises(DataError, match=r"dataset '/coords' declares shape \[1000000, 2\]"):
        read_geometry(bomb, "S1", patches=6)
