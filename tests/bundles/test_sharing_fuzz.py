"""Property-based tests over what other labs send: bundles, cards, part names and checkpoints.

Every input gives a result or one :class:`~steph.errors.StephError`, never another exception
(a traceback in the CLI), and reading it never raises the process's peak memory by more than
:data:`MEMORY_BUDGET` plus :data:`MEMORY_PER_BYTE` times the file's size (Linux: the peak RSS,
``VmHWM``, is reset through ``/proc/self/clear_refs`` before each input and read after it).
Bundles are written with valid hashes (re-signed), so the content checks are what is exercised.
Example counts are bounded to keep CI time reasonable.
"""

from __future__ import annotations

import copy
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _crafted_bundles import abmil_state, model_bundle_parts, sources_card, vector_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steph.bundles.container import read_bundle, write_bundle
from steph.bundles.model import load_bundle_model
from steph.bundles.sources import check_sources_bundle
from steph.checkpoints import load_reference_checkpoint
from steph.errors import StephError

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["[/]", "../fold_0", "BRCA", "task_vector/BRCA/fold_0", "weights/fold_0", "1e3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
THETA0 = abmil_state()
SOURCES_PARTS = {"theta0": THETA0, "task_vector/BLCA/fold_0": vector_like(THETA0)}
SOURCES_CARD = sources_card(THETA0, {"BLCA": [0]})
MODEL_PARTS, MODEL_CARD = model_bundle_parts()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, card: dict[str, Any]) -> dict[str, Any]:
    """``card`` with one to three fields replaced by arbitrary JSON, or removed."""
    out = copy.deepcopy(card)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(out)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(JSON)
    return out


MEMORY_BUDGET = 192 << 20
"""Peak memory any one input may add (bytes): room for the allocator and torch's first calls;
the memory bombs of issue #32 took 2 to 6.6 GB from files of a few KB."""
MEMORY_PER_BYTE = 16
"""And per byte of the input file (the tensors read, a copy or two while checking them)."""
_PEAK = re.compile(r"VmHWM:\s+(\d+) kB")
_NOW = re.compile(r"VmRSS:\s+(\d+) kB")


def _status(pattern: re.Pattern[str]) -> int:
    match = pattern.search(Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1)) * 1024


def peak_memory_growth(action) -> int:
    """Bytes by which the process's peak RSS rose above its RSS at the start while ``action`` ran
    (exceptions propagate). 0 where ``/proc/self/clear_refs`` cannot reset the peak (not Linux)."""
    if not sys.platform.startswith("linux"):
        action()
        return 0
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        action()
        return 0
    start = _status(_NOW)
    action()
    return _status(_PEAK) - start


def _outcome(action, path: Path | None = None) -> str:
    """Run ``action``: it returns, or raises one StephError with a message; nothing else. With
    ``path`` (the file it reads), its peak memory must stay within the budget for that file."""
    outcome = "accepted"

    def run() -> None:
        nonlocal outcome
        try:
            action()
        except StephError as exc:
            assert exc.message
            outcome = "refused"

    grown = peak_memory_growth(run)
    if path is not None:
        budget = MEMORY_BUDGET + MEMORY_PER_BYTE * path.stat().st_size
        assert grown <= budget, f"{outcome} input of {path.stat().st_size:,} bytes took {grown:,} bytes"
    return outcome


@FUZZ
@given(card=mutated(SOURCES_CARD))
def test_sources_cards(tmp_path: Path, card: dict[str, Any]) -> None:
    path = tmp_path / "s.safetensors"
    write_bundle(path, "sources", SOURCES_PARTS, card)
    _outcome(lambda: check_sources_bundle(read_bundle(path, kind="sources")), path)


@FUZZ
@given(card=mutated(MODEL_CARD))
def test_model_cards(tmp_path: Path, card: dict[str, Any]) -> None:
    path = tmp_path / "m.safetensors"
    write_bundle(path, "model", MODEL_PARTS, card)
    _outcome(lambda: load_bundle_model(path, device=torch.device("cpu")), path)


@FUZZ
@given(
    names=st.lists(
        st.text(alphabet="task_vector/BLCAbrca.0123456789e-_ ", min_size=1, max_size=30),
        min_size=1,
        max_size=3,
    )
)
def test_sources_part_names(tmp_path: Path, names: list[str]) -> None:
    path = tmp_path / "s.safetensors"
    parts = {"theta0": THETA0, **{n: vector_like(THETA0) for n in names if n != "theta0" and "::" not in n}}
    write_bundle(path, "sources", parts, SOURCES_CARD)
    _outcome(lambda: check_sources_bundle(read_bundle(path, kind="sources")), path)


@FUZZ
@given(data=st.data())
def test_bundle_bytes(tmp_path: Path, data: st.DataObject) -> None:
    """Flipped, cut or inserted bytes anywhere in a valid bundle."""
    path = tmp_path / "s.safetensors"
    write_bundle(path, "sources", SOURCES_PARTS, SOURCES_CARD)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at : at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        if not raw:
            raw = bytearray(b"x")
    path.write_bytes(bytes(raw))
    _outcome(lambda: check_sources_bundle(read_bundle(path, kind="sources")), path)


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": abmil_state()}, buffer)
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_checkpoint_bytes(tmp_path: Path, checkpoint_bytes: bytes, data: st.DataObject) -> None:
    """A reference checkpoint with flipped or cut bytes: loaded, or one error; never more than the file."""
    raw = bytearray(checkpoint_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] ^= data.draw(st.integers(1, 255))
        else:
            del raw[at : at + data.draw(st.integers(1, 32))]
    path = tmp_path / "null.pth"
    path.write_bytes(bytes(raw))
    loaded: list[dict[str, torch.Tensor]] = []
    if _outcome(lambda: loaded.append(load_reference_checkpoint(path)), path) == "refused":
        return
    assert sum(t.numel() * t.element_size() for t in loaded[0].values()) <= len(raw)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is measured on Linux")
def test_the_memory_bound_sees_an_allocation(tmp_path: Path) -> None:
    """The measure above is not blind: an input that makes 256 MB of tensors is over the budget
    of a small file."""
    path = tmp_path / "small"
    path.write_bytes(b"x" * 1024)
    with pytest.raises(AssertionError, match="took"):
        _outcome(lambda: torch.ones(64 << 20).sum(), path)
    assert peak_memory_growth(lambda: torch.ones(64 << 20).sum()) >= 250 << 20


def test_the_fuzzed_cards_start_valid(tmp_path: Path) -> None:
    """The seeds of the mutations are accepted, so a refusal above is the mutation's."""
    write_bundle(tmp_path / "s.safetensors", "sources", SOURCES_PARTS, SOURCES_CARD)
    assert check_sources_bundle(read_bundle(tmp_path / "s.safetensors"))
    write_bundle(tmp_path / "m.safetensors", "model", MODEL_PARTS, MODEL_CARD)
    assert load_bundle_model(tmp_path / "m.safetensors", device=torch.device("cpu")).time_bins == 8
    assert json.loads(json.dumps(SOURCES_CARD)) == SOURCES_CARD


CELL = st.text(alphabet="abcXYZ019-_./=+@ \"',;[]", max_size=10) | st.sampled_from(
    ["", "NA", "-1", "1e309", "nan", "../x", '=HYPERLINK("x")', "S1", "P1"]
)


@FUZZ
@given(
    header=st.lists(
        st.sampled_from(["patient_id", "slide_id", "pathology_id", "path", "mpp", "x", ""]), max_size=5
    ),
    rows=st.lists(st.lists(CELL, max_size=6), max_size=5),
)
def test_predict_manifests(tmp_path: Path, header: list[str], rows: list[list[str]]) -> None:
    """A manifest from elsewhere: patients (each with one id-rule check) or one error."""
    import csv

    from steph.layout import ProjectLayout, check_safe_id
    from steph.predict.inputs import read_manifest

    path = tmp_path / "new.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    try:
        inputs = read_manifest(path, ProjectLayout(tmp_path))
    except StephError:
        return
    for patient in inputs.patients:
        check_safe_id(patient.patient_id, "patient_id")
        for slide in patient.slides:
            check_safe_id(slide.slide_id)
