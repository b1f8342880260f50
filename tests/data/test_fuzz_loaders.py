"""Property-based fuzzing of every loader of files from elsewhere (docs/security.md).

Valid files are mutated (bytes replaced, inserted, cut) or built with hostile structure, and
each must give a result or one :class:`StephError`: never a crash, another exception, or a
tensor larger than the file that holds it. The example counts are bounded so CI stays fast
(seeded: the same examples every run); set ``STEPHCTL_FUZZ_EXAMPLES=2000`` for a deeper,
random run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from steph.config import load_config, load_project
from steph.data.cohort import load_cohort, load_split
from steph.data.features import feature_shape, read_features
from steph.data.lmdb_store import decode_value, value_shape
from steph.data.stores import SlideRef
from steph.errors import StephError
from steph.project import init_project
from steph.slides.manifest import read_manifest

_EXAMPLES = int(os.environ.get("STEPHCTL_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_EXAMPLES or 40,
    derandomize=not _EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with up to 8 bytes replaced, up to 2 runs inserted and maybe cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _result_or_steph_error(read: Callable[[], Any], budget: int) -> None:
    """``read()`` returns features of at most ``budget`` values, or raises a StephError."""
    try:
        found = read()
    except StephError:
        return
    if isinstance(found, torch.Tensor):
        assert found.dtype == torch.float32 and found.dim() == 2
        assert found.numel() <= budget, (list(found.shape), budget)
    else:
        k, d = found
        assert k >= 0 and d >= 1


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


_RNG = np.random.default_rng(0)
_ARRAY = _RNG.normal(size=(3, 4)).astype(np.float32)
_PICKLES = [
    pickle.dumps(torch.from_numpy(_ARRAY)[None]),  # the STEPH reference's LMDB value
    pickle.dumps(torch.from_numpy(_ARRAY)[None], protocol=2),
    pickle.dumps(_ARRAY),
    pickle.dumps(_ARRAY.astype(">f2"), protocol=2),
    pickle.dumps({"features": _ARRAY}),
    _torch_bytes(torch.from_numpy(_ARRAY)),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=mutated(_PICKLES))
def test_lmdb_values(data: bytes) -> None:
    ref = SlideRef("S1", Path("fuzz.lmdb"), "S1")
    _result_or_steph_error(lambda: decode_value(ref, data), len(data))
    _result_or_steph_error(lambda: value_shape(ref, data), len(data))


def _pt_members() -> dict[str, bytes]:
    """The members of a ``torch.save`` archive of a NumPy array (TRIDENT) and of a tensor,
    named ``<kind>|<member>``."""
    members: dict[str, bytes] = {}
    for name, obj in (("array", _ARRAY), ("tensor", torch.from_numpy(_ARRAY)[None])):
        with zipfile.ZipFile(io.BytesIO(_torch_bytes(obj))) as archive:
            for info in archive.infolist():
                members[f"{name}|{info.filename}"] = archive.read(info)
    return members


_PT_MEMBERS = _pt_members()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(kind=st.sampled_from(["array", "tensor"]), data=st.data())
def test_pt_files_with_a_mutated_pickle(kind: str, data: st.DataObject) -> None:
    members = {k.split("|", 1)[1]: v for k, v in _PT_MEMBERS.items() if k.startswith(f"{kind}|")}
    name = next(n for n in members if n.endswith("data.pkl"))
    members[name] = data.draw(mutated([members[name]]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    _check_file(buffer.getvalue(), ".pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=mutated([_torch_bytes(_ARRAY), _torch_bytes({"features": torch.from_numpy(_ARRAY)})]))
def test_pt_files_mutated_anywhere(data: bytes) -> None:
    _check_file(data, ".pt")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@FUZZ
@given(
    data=mutated(
        [_npy(_ARRAY), _npy(_ARRAY[None].astype(">f4")), _npy(np.arange(6, dtype=np.uint8).reshape(2, 3))]
    )
)
def test_npy_files(data: bytes) -> None:
    _check_file(data, ".npy")


def _check_file(data: bytes, suffix: str, expansion: int = 1) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"s{suffix}"
        path.write_bytes(data)
        size = path.stat().st_size
        _result_or_steph_error(lambda: feature_shape(path), size * expansion)
        _result_or_steph_error(lambda: read_features(path), size * expansion)


_H5_DTYPES = ["f4", "f2", ">f4", "<f8", "i8", "u1", "?", "c8", "S4", "f4,i4", "O"]


@st.composite
def hostile_h5(draw: st.DrawFn) -> Callable[[Path], None]:
    """A writer of an HDF5 file of random structure: name, dtype, shape, layout, compression,
    how much is written, and links or virtual datasets to another file."""
    name = draw(st.sampled_from(["features", "feats", "other"]))
    dtype = draw(st.sampled_from(_H5_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=0, max_size=3)))
    layout = draw(st.sampled_from(["contiguous", "chunked", "gzip"]))
    written = draw(st.sampled_from(["all", "part", "none"]))
    extra = draw(st.sampled_from(["none", "external-link", "soft-link", "virtual"]))

    def write(path: Path) -> None:
        other = path.with_name("other.h5")
        with h5py.File(other, "w") as fh:
            fh.create_dataset("features", data=np.ones((4, 3), dtype=np.float32))
        with h5py.File(path, "w") as fh:
            if extra == "external-link":
                fh[name] = h5py.ExternalLink(other.name, "/features")
                return
            if extra == "virtual":
                source = h5py.VirtualLayout(shape=(4, 3), dtype="f4")
                source[:] = h5py.VirtualSource(str(other), "features", shape=(4, 3))
                fh.create_virtual_dataset(name, source)
                return
            target = "data" if extra == "soft-link" else name
            kind = h5py.string_dtype() if dtype == "O" else np.dtype(dtype)
            options: dict[str, Any] = {}
            if shape and layout in ("chunked", "gzip") and all(shape):
                options["chunks"] = tuple(max(1, n // 2) for n in shape)
                if layout == "gzip":
                    options["compression"] = "gzip"
            try:
                dataset = fh.create_dataset(target, shape=shape, dtype=kind, **options)
            except (ValueError, TypeError):
                return  # a combination HDF5 itself refuses to write
            if written != "none" and shape and all(shape) and dtype != "O":
                rows = shape[0] if written == "all" else max(1, shape[0] // 3)
                values = np.arange(int(np.prod((rows, *shape[1:])))) % 251
                with contextlib.suppress(ValueError, TypeError):  # no cast to strings or records
                    dataset[:rows] = values.reshape((rows, *shape[1:])).astype(kind)
            if extra == "soft-link":
                fh[name] = h5py.SoftLink("/data")

    return write


@FUZZ
@given(write=hostile_h5())
def test_h5_files_of_hostile_structure(write: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        write(path)
        _check_file(path.read_bytes(), ".h5", expansion=100)


def _valid_h5() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as fh:
        fh.create_dataset("features", data=_ARRAY, chunks=(2, 4))
        fh.attrs["encoder"] = "uni2-h"
    return buffer.getvalue()


@FUZZ
@given(cut=st.integers(0, len(_valid_h5())))
def test_truncated_h5_files(cut: int) -> None:
    _check_file(_valid_h5()[:cut], ".h5", expansion=100)


# -- configurations, labels, splits and the slide manifest -------------------------------------

_CONFIG_TOKENS = st.sampled_from(
    [
        ": ",
        "\n",
        "  ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "!!python/object:os.system ",
        "1e999",
        "-1",
        "null",
        "'",
        '"',
        "#",
        "~",
        "train",
        "paths",
    ]
)


def _project(tmp: Path) -> Path:
    layout = init_project(tmp / "p", cancers=["BRCA", "LUAD"], encoder="uni2-h")
    return layout.root


@FUZZ
@given(data=st.data())
def test_configurations(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        config = root / "stephctl.yaml"
        text = config.read_text(encoding="utf-8")
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(text)))
            cut = data.draw(st.integers(0, 12))
            text = text[:at] + data.draw(_CONFIG_TOKENS) + text[at + cut :]
        config.write_text(text, encoding="utf-8")
        with contextlib.suppress(StephError):
            load_config(root)


_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "NA",
            "nan",
            "inf",
            "-1",
            "1e999",
            "0",
            "1",
            "2",
            "x",
            "../a",
            "a/b",
            "=HYPERLINK(1)",
            " ",
            "TCGA-01",
        ]
    ),
    st.text(max_size=8),
)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@FUZZ
@given(
    header=st.lists(
        st.sampled_from(["patient_id", "slide_id", "t", "e", "project", "x", ""]), min_size=0, max_size=6
    ),
    rows=st.lists(st.lists(_CELLS, min_size=0, max_size=7), max_size=6),
    split_rows=st.lists(st.lists(_CELLS, min_size=0, max_size=3), max_size=6),
)
def test_labels_and_splits(header: list[str], rows: list[list[str]], split_rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        layout, config = load_project(root)
        labels = layout.labels("BRCA")
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text(_csv([header, *rows]), encoding="utf-8")
        try:
            cohort = load_cohort(layout, config, "BRCA")
        except StephError:
            return
        split = layout.split("BRCA", 0)
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text(_csv([["", "train", "test"], *split_rows]), encoding="utf-8")
        with contextlib.suppress(StephError):
            load_split(layout, cohort, 0)


@FUZZ
@example(  # found by a deeper run: a short row's missing cells are None (a TypeError before)
    header=["slide_id", "cancer", "slide_id", "slide_id", "patient_id", "path"],
    rows=[["", "", "", ""], [""], ["", "", "", ""], [""]],
)
@given(
    header=st.lists(st.sampled_from(["slide_id", "patient_id", "cancer", "path", "mpp", "x"]), max_size=6),
    rows=st.lists(st.lists(_CELLS, max_size=6), max_size=6),
)
def test_slide_manifests(header: list[str], rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        layout, _ = load_project(root)
        layout.manifest.parent.mkdir(parents=True, exist_ok=True)
        layout.manifest.write_text(_csv([header, *rows]), encoding="utf-8")
        try:
            entries = read_manifest(layout)
        except StephError:
            return
        for entry in entries:
            assert entry.problem is None or isinstance(entry.problem, StephError)


def test_the_mutator_changes_its_input() -> None:
    """The fuzz tests exercise something: mutated seeds differ from the seeds."""
    seen = set()

    @settings(max_examples=30, derandomize=True, database=None)
    @given(data=mutated([b"abcdefgh"]))
    def collect(data: bytes) -> None:
        seen.add(data)

    collect()
    assert len(seen - {b"abcdefgh"}) > 10
