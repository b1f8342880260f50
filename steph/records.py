"""Typed run records: what a stage writes last, so that its presence marks the work as finished.

One frozen dataclass per record, with :meth:`~Record.to_json` / :meth:`~Record.from_json`:

=========================  ===========================================================  ===========================
record                     file (:mod:`steph.layout` owns the names)                    written by
=========================  ===========================================================  ===========================
:class:`ModelRecord`       ``models/<C>/fold_<k>/meta.json``                            ``train-source``
:class:`TaskVectorRecord`  ``task_vectors/<C>/fold_<k>.json``                           ``task-vector``
:class:`MergeRecord`       ``merged/<T>/<run>/fold_<k>/meta.json``                      ``merge``
:class:`PredictionRecord`  ``predictions/<name>/meta.json``                             ``predict``
:class:`SplitsRecord`      ``splits/<C>/<C>_splits.json``                               ``splits``
:class:`TransferRecord`    ``transfer/targets/<T>.json``                                ``transfer``
:class:`MetricsRecord`     ``results/<T>/<method>/fold_<k>/metrics.json``               ``train-source``, ``merge``
:class:`Theta0Record`      ``models/null.json``                                         ``train-source``
:class:`ExplainRecord`     ``reports/<T>/patients/<P>/<method>_fold_<k>/explain.json``  ``explain``
:class:`CohortRecord`      ``synthetic/cohort.json``                                    ``demo``, cohort generator
=========================  ===========================================================  ===========================

The JSON keys (and their order) are those stephctl always wrote, so existing projects load.
Keys a record does not know (written by a newer stephctl, or by ``import-sources``) are kept in
``extra`` and written back unchanged. Readers use the typed fields instead of string keys.

:meth:`~Record.from_json` checks every value against its field's annotation (one implementation
for all records, read from the dataclass fields): ``int`` takes integers but not ``true``/``false``,
``float`` any number but not a boolean, ``X | None`` also ``null``, ``list[X]`` and
``dict[str, X]`` are checked item by item, ``Any`` takes anything, and a field typed as a record
is read as that record. A mismatch is a :class:`~steph.errors.DataError` naming the file, the
field, the expected and the found type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from .errors import DataError
from .fileio import read_json, write_json

R = TypeVar("R", bound="Record")


class _Mismatch(Exception):
    """A JSON value that does not have its field's type (``at``: the field, with list indices and
    object keys below it)."""

    def __init__(self, at: str, expected: Any, value: object) -> None:
        super().__init__(at)
        self.at, self.expected, self.value = at, expected, value


_FIELD_TYPES: dict[type, dict[str, Any]] = {}
_REQUIRED: dict[type, tuple[str, ...]] = {}


def _field_types(cls: type[Record]) -> dict[str, Any]:
    """Field name -> resolved annotation of a record class (``extra`` and class variables left out)."""
    found = _FIELD_TYPES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELD_TYPES[cls] = {
            f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "extra"
        }
    return found


def _required(cls: type[Record]) -> tuple[str, ...]:
    """``REQUIRED`` plus the fields without a default, in that order."""
    found = _REQUIRED.get(cls)
    if found is None:
        bare = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        found = _REQUIRED[cls] = tuple(dict.fromkeys([*cls.REQUIRED, *bare]))
    return found


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _decode(value: Any, tp: Any, at: str) -> Any:
    """``value`` checked against the annotation ``tp``; a mapping under a record type becomes that
    record. Raises :class:`_Mismatch` at the first value that does not fit."""
    if tp is Any:
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _Mismatch(at, tp, value)
    if _is_union(tp):
        for option in typing.get_args(tp):
            try:
                return _decode(value, option, at)
            except _Mismatch as bad:
                if bad.at != at:  # the container fits, an item inside it does not
                    raise
        raise _Mismatch(at, tp, value)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise _Mismatch(at, tp, value)
        items = [_decode(v, item, f"{at}[{i}]") for i, v in enumerate(value)]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if origin is dict:
        key_type, item = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise _Mismatch(at, tp, value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):  # JSON object keys are strings; a dict built in Python may not be
                raise _Mismatch(f"{at}.{k}", key_type, k)
            out[k] = _decode(v, item, f"{at}.{k}")
        return out if any(out[k] is not v for k, v in value.items()) else value
    if isinstance(tp, type) and issubclass(tp, Record):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch(at, tp, value)
        known = set(tp.keys())
        nested = _nested_values(tp, {k: v for k, v in value.items() if k in known}, at)
        return tp(**nested, extra={k: v for k, v in value.items() if k not in known})
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"record fields of type {tp!r} are not supported")
    if not ok:
        raise _Mismatch(at, tp, value)
    return value


def _nested_values(cls: type[Record], values: Mapping[str, Any], at: str) -> dict[str, Any]:
    missing = [k for k in _required(cls) if k not in values]
    if missing:
        raise _Mismatch(f"{at}.{missing[0]}", _field_types(cls)[missing[0]], _ABSENT)
    hints = _field_types(cls)
    return {k: _decode(v, hints[k], f"{at}.{k}") for k, v in values.items()}


_ABSENT = object()
"""Stands for a missing key in a :class:`_Mismatch`."""


def _describe(tp: Any) -> str:
    """An annotation in words: ``int | None`` -> "an integer or null"."""
    if tp is Any:
        return "any value"
    if tp is None or tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(_describe(option) for option in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return "a list" if item is Any else f"a list of ({_describe(item)})"
    if origin is dict:
        item = (typing.get_args(tp) or (str, Any))[1]
        return "an object" if item is Any else f"an object of ({_describe(item)})"
    if isinstance(tp, type) and issubclass(tp, Record):
        return f"a {tp.KIND} object"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(tp, str(tp))


def _found(value: object) -> str:
    """The JSON type of ``value``, with the value itself when short."""
    if value is _ABSENT:
        return "nothing (the key is missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    kinds = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    kind = next((name for t, name in kinds.items() if isinstance(value, t)), type(value).__name__)
    shown = repr(value)
    return f"{kind} ({shown})" if len(shown) <= 40 else kind


def _encode(value: Any) -> Any:
    """A field value as JSON: records nested in it as their objects (anything else as it is)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list) and any(isinstance(v, Record) for v in value):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and any(isinstance(v, Record) for v in value.values()):
        return {k: _encode(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Record:
    """Base of the run records: JSON round trip, unknown keys kept in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version of stephctl does not know, kept as they were."""

    KIND: ClassVar[str] = "record"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    """Keys without which the record is refused (:class:`~steph.errors.DataError`)."""
    EXTRA_AFTER: ClassVar[str | None] = None
    """``extra`` is written after this key (None: at the end), where stephctl always wrote it."""

    OMIT_NONE: ClassVar[tuple[str, ...]] = ()
    """Keys left out of the JSON while their value is None (stephctl writes them only when set)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The JSON keys of the typed fields, in the order they are written."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object stephctl writes (same keys and order as ever)."""
        out: dict[str, Any] = {}
        extra_done = False
        for name in self.keys():
            value = getattr(self, name)
            if not (value is None and name in self.OMIT_NONE):
                out[name] = _encode(value)
            if name == self.EXTRA_AFTER:
                out.update(self.extra)
                extra_done = True
        if not extra_done:
            out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_json(cls: type[R], data: Any, where: str = "record") -> R:
        """The record of a JSON object; missing optional keys take their defaults.

        Raises:
            DataError: not an object, a required key is missing, or a value does not have its
                field's type.
        """
        if not isinstance(data, Mapping):
            raise DataError(
                f"{where} is not a JSON object", hint="rerun the stage that wrote it with --overwrite"
            )
        known = set(cls.keys())
        values = cls.checked({k: v for k, v in data.items() if k in known}, where)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    @classmethod
    def checked(cls, values: Mapping[str, Any], where: str = "record") -> dict[str, Any]:
        """``values`` (JSON key -> value, known keys only) checked against the field types, with
        the values of record-typed fields read as those records.

        Raises:
            DataError: a required key is missing or a value does not have its field's type.
        """
        missing = [k for k in _required(cls) if k not in values]
        if missing:
            raise DataError(
                f"{where} is not a valid {cls.KIND} record: missing {', '.join(missing)}",
                hint="rerun the stage that wrote it with --overwrite",
            )
        hints = _field_types(cls)
        out: dict[str, Any] = {}
        for key, value in values.items():
            try:
                out[key] = _decode(value, hints[key], key)
            except _Mismatch as bad:
                raise DataError(
                    f"{where}: {cls.KIND} record field {bad.at!r} must be {_describe(bad.expected)}, "
                    f"found {_found(bad.value)}",
                    hint="the file was edited or written by another tool; rerun the stage that wrote "
                    "it with --overwrite",
                ) from None
        return out

    @classmethod
    def read(cls: type[R], path: Path | str) -> R:
        """The record in ``path``.

        Raises:
            DataError: the file is not valid JSON or not a valid record.
        """
        try:
            data = read_json(path)
        except ValueError as exc:
            raise DataError(
                f"{path} is not valid JSON: {exc}", hint="rerun the stage with --overwrite"
            ) from exc
        return cls.from_json(data, str(path))

    def write(self, path: Path | str) -> Path:
        """Write the record atomically to ``path``."""
        return write_json(path, self.to_json())


@dataclass(frozen=True, kw_only=True)
class ModelRecord(Record):
    """A trained cancer model (``stephctl train-source``)."""

    KIND: ClassVar[str] = "model"
    EXTRA_AFTER: ClassVar[str | None] = "versions"

    cancer: str | None = None
    fold: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    encoder: str | None = None
    architecture: dict[str, Any] | None = None
    theta0_sha256: str | None = None
    model_sha256: str | None = None
    seed: int | None = None
    device: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved project configuration the model was trained with."""


@dataclass(frozen=True, kw_only=True)
class TaskVectorRecord(Record):
    """A task vector tau = theta - theta0 (``stephctl task-vector``, or ``import-sources``)."""

    KIND: ClassVar[str] = "task-vector"

    kind: str = "task_vector"
    cancer: str | None = None
    fold: int | None = None
    theta0_sha256: str | None = None
    source_model: str | None = None
    source_model_sha256: str | None = None
    architecture: dict[str, Any] | None = None
    sha256: str | None = None
    """sha256 of the safetensors file."""
    parameter_names: list[str] = field(default_factory=list)
    cohort_size: int | None = None
    """Imported vectors: the source cohort's patients, from the bundle's card."""
    train_patients: dict[str, int | None] | None = None
    """Imported vectors: training patients per fold (fold number as a string), from the card."""
    imported_from: dict[str, Any] | None = None
    """Imported vectors: the bundle it came from (path, sha256, signer, part_sha256)."""
    versions: dict[str, Any] = field(default_factory=dict)
    created: str | None = None

    OMIT_NONE: ClassVar[tuple[str, ...]] = (
        "source_model",
        "source_model_sha256",
        "cohort_size",
        "train_patients",
        "imported_from",
    )
    """An imported vector has no model of this project; a vector of its own was not imported."""

    @property
    def imported(self) -> bool:
        """Whether the vector came from another lab's bundle (``import-sources``)."""
        return self.imported_from is not None


IMPORTED = "imported_from"
"""Key of the bundle an imported vector came from (:attr:`TaskVectorRecord.imported_from`), also
used by a sources card's entries."""


MERGE_SIGNATURE = ("method", "options", "sources", "source_fold", "epochs", "seed", "theta0_sha256")
"""Settings that must match for an existing merge fold to count as done."""


@dataclass(frozen=True, kw_only=True)
class MergeRecord(Record):
    """One merged target fold (``stephctl merge``)."""

    KIND: ClassVar[str] = "merge"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "method",
        "sources",
        "source_fold",
        "seed",
        "theta0_sha256",
        "vector_sha256",
        "dim_in",
        "model_config",
        "merge_config",
        "files",
    )

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    """The method's resolved settings (its settings dataclass as a dict)."""
    sources: list[str] = field(default_factory=list)
    source_fold: int = 0
    epochs: int | None = None
    seed: int | None = None
    theta0_sha256: str | None = None
    run: str | None = None
    """The folder name (method plus a suffix per non-default setting)."""
    target: str | None = None
    fold: int | None = None
    label: str | None = None
    top_k: int | None = None
    gamma_selection: dict[str, Any] | None = None
    vector_sha256: dict[str, str] = field(default_factory=dict)
    """``"<CANCER>/fold_<k>"`` -> sha256 of each task-vector file used."""
    dim_in: int = 0
    model_config: dict[str, Any] = field(default_factory=dict)
    merge_config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """Weights file name -> its sha256."""
    tables: list[str] = field(default_factory=list)
    trainable_parameters: int | None = None
    train_losses: list[float] = field(default_factory=list)
    train_seconds: float | None = None
    device: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    c_index: float | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    source_choice: dict[str, Any] | None = None
    """How ``--sources auto:K`` chose the sources (:mod:`steph.transfer.choose`); None when listed.
    Last, so that the records written before it keep their key order."""
    trained_with: list[str] = field(default_factory=list)
    """The other units (keys) trained in the same optimiser steps (``train.stack_units``);
    ``train_seconds`` is then that whole run's. Empty when trained alone."""

    def signature(self) -> dict[str, Any]:
        """The settings that decide whether the fold is done (:data:`MERGE_SIGNATURE`)."""
        return {k: getattr(self, k) for k in MERGE_SIGNATURE}


@dataclass(frozen=True, kw_only=True)
class PredictionRecord(Record):
    """One ``stephctl predict`` run. The model's identity (bundle sha256, or target, method and
    fold) comes first, as its own keys."""

    KIND: ClassVar[str] = "prediction"

    identity: dict[str, Any] = field(default_factory=dict)
    """The model's identity keys, written at the top level before the others."""
    signature: dict[str, Any] = field(default_factory=dict)
    manifest: str | None = None
    patients: int = 0
    failed: list[str] = field(default_factory=list)
    slides: dict[str, dict[str, str]] = field(default_factory=dict)
    train_median_risk: float | None = None
    encoder: str | None = None
    encoder_weights: Any = None
    versions: dict[str, Any] = field(default_factory=dict)
    explain: dict[str, Any] | None = None
    """What ``--explain`` wrote (absent without it)."""

    def to_json(self) -> dict[str, Any]:
        out = {**self.identity}
        for name in self.keys():
            if name == "identity" or (name == "explain" and self.explain is None):
                continue
            out[name] = getattr(self, name)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> PredictionRecord:
        """Keys before ``signature`` are the model's identity; unknown ones after it go to ``extra``."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where} is not a JSON object", hint="rerun the prediction with --overwrite")
        known = set(cls.keys()) - {"identity"}
        identity: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        seen_signature = False
        for key, value in data.items():
            if key == "signature":
                seen_signature = True
            if key not in known:
                (extra if seen_signature else identity)[key] = value
        values = cls.checked({k: v for k, v in data.items() if k in known}, where)
        return cls(identity=identity, **values, extra=extra)


@dataclass(frozen=True, kw_only=True)
class MetricsRecord(Record):
    """The headline test metrics of one model fold (:func:`steph.predictions.write_predictions`)."""

    KIND: ClassVar[str] = "metrics"
    OMIT_NONE: ClassVar[tuple[str, ...]] = (
        "n",
        "events",
        "c_index_undefined_reason",
        "train_median_risk",
        "method",
        "run",
        "fold",
    )

    c_index: float | None = None
    """Harrell's C on the test patients (raw days); null when undefined."""
    n: int | None = None
    events: int | None = None
    c_index_undefined_reason: str | None = None
    train_median_risk: float | None = None
    """Median risk of the same model on its training patients: evaluate's low/high-risk cut."""
    method: str | None = None
    run: str | None = None
    fold: int | None = None


@dataclass(frozen=True, kw_only=True)
class CohortRecord(Record):
    """A generated synthetic cohort (:mod:`steph.synthetic`): what was drawn, and its statistics."""

    KIND: ClassVar[str] = "synthetic cohort"

    generator_version: int | None = None
    level: str | None = None
    """``slides`` or ``features``."""
    spec: dict[str, Any] | None = None
    """The :class:`~steph.synthetic.CohortSpec` as plain data."""
    phenotypes: list[str] = field(default_factory=list)
    cancers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per cancer: patients, slides, events, censoring, oracle C-index, coefficients ..."""


@dataclass(frozen=True, kw_only=True)
class ExplainRecord(Record):
    """What one patient's explanation was made from (``stephctl explain``): a patient whose record
    is unchanged (files aside) and whose files exist is skipped."""

    KIND: ClassVar[str] = "explanation"

    compare: str | None = None
    patches: int = 0
    scale: str = ""
    version: str = ""
    models: dict[str, str] = field(default_factory=dict)
    """Model file -> its sha256."""
    features: dict[str, str] = field(default_factory=dict)
    """Slide id -> ``<size>:<mtime_ns>`` of its feature file."""
    files: list[str] = field(default_factory=list)
    """The files of the patient page, beside the record."""


@dataclass(frozen=True, kw_only=True)
class Theta0Record(Record):
    """The shared initialisation theta0 (:mod:`steph.theta0`): its sha256 and where it came from."""

    KIND: ClassVar[str] = "theta0"
    REQUIRED: ClassVar[tuple[str, ...]] = ("sha256",)
    OMIT_NONE: ClassVar[tuple[str, ...]] = ("seed", "source", "source_sha256")

    sha256: str
    architecture: dict[str, int] = field(default_factory=dict)
    seed: int | None = None
    """The seed of a random theta0."""
    source: str | None = None
    """``random``, or the reference checkpoint it was imported from."""
    source_sha256: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    created: str | None = None


__all__ = [
    "MERGE_SIGNATURE",
    "CohortRecord",
    "ExplainRecord",
    "MergeRecord",
    "MetricsRecord",
    "ModelRecord",
    "PredictionRecord",
    "Record",
    "SplitsRecord",
    "TaskVectorRecord",
    "Theta0Record",
    "TransferRecord",
]


@dataclass(frozen=True, kw_only=True)
class SplitsRecord(Record):
    """How a cancer's split files were made (``stephctl splits``); ``stephctl check`` reports it."""

    KIND: ClassVar[str] = "splits"
    REQUIRED: ClassVar[tuple[str, ...]] = ("cancer", "folds", "seed")

    cancer: str
    folds: int
    seed: int
    val_fraction: float = 0.0
    stratified_by: list[str] = field(default_factory=list)
    time_bins: int | None = None
    patients: int | None = None
    events: int | None = None
    labels: str | None = None
    labels_sha256: str | None = None
    """sha256 of the labels file the splits were made from (a change means new patients may lack a fold)."""
    version: str | None = None
    created: str | None = None


@dataclass(frozen=True, kw_only=True)
class TransferRecord(Record):
    """One target's zero-shot transfer results (``stephctl transfer``, :mod:`steph.transfer`)."""

    KIND: ClassVar[str] = "transfer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("target", "sources", "folds", "pairs")

    target: str
    evaluation_only: bool = False
    """A rare tumour: every labelled patient is a test patient, there is no own model."""
    sources: list[str] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    """Row order of ``transfer_means`` (the patient-mean features)."""
    pairs: list[dict[str, Any]] = field(default_factory=list)
    """Per (source, fold): n, events, c, c_low, c_high, c_train, gain, gain_low, gain_high."""
    pooled: list[dict[str, Any]] = field(default_factory=list)
    """Per source (and ``mean-of-sources``): mean and sd over folds, pooled intervals, transfer."""
    bootstrap: int = 0
    confidence: float = 0.95
    seed: int = 0
    models: dict[str, str] = field(default_factory=dict)
    """``"<SOURCE>/fold_<k>"`` -> sha256 of the model weights used."""
    versions: dict[str, Any] = field(default_factory=dict)
