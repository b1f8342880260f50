"""Typed run records: what a stage writes last, so that its presence marks the work as finished.

One frozen dataclass per record, with :meth:`~Record.to_json` / :meth:`~Record.from_json`:

=========================  ===========================================  =======================
record                     file (:mod:`steph.layout` owns the names)     written by
=========================  ===========================================  =======================
:class:`ModelRecord`       ``models/<C>/fold_<k>/meta.json``              ``train-source``
:class:`TaskVectorRecord`  ``task_vectors/<C>/fold_<k>.json``             ``task-vector``
:class:`MergeRecord`       ``merged/<T>/<run>/fold_<k>/meta.json``        ``merge``
:class:`PredictionRecord`  ``predictions/<name>/meta.json``               ``predict``
:class:`SplitsRecord`      ``splits/<C>/<C>_splits.json``                 ``splits``
=========================  ===========================================  =======================

The JSON keys (and their order) are those stephctl always wrote, so existing projects load.
Keys a record does not know (written by a newer stephctl, or by ``import-sources``) are kept in
``extra`` and written back unchanged. Readers use the typed fields instead of string keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import DataError
from .fileio import read_json, write_json

R = TypeVar("R", bound="Record")


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

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The JSON keys of the typed fields, in the order they are written."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object stephctl writes (same keys and order as ever)."""
        out: dict[str, Any] = {}
        extra_done = False
        for name in self.keys():
            out[name] = getattr(self, name)
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
            DataError: not an object, or a required key is missing.
        """
        if not isinstance(data, Mapping):
            raise DataError(
                f"{where} is not a JSON object", hint="rerun the stage that wrote it with --overwrite"
            )
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise DataError(
                f"{where} is not a valid {cls.KIND} record: missing {', '.join(missing)}",
                hint="rerun the stage that wrote it with --overwrite",
            )
        known = set(cls.keys())
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

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
    versions: dict[str, Any] = field(default_factory=dict)
    created: str | None = None


IMPORTED = "imported_from"
"""Key of a :class:`TaskVectorRecord`'s ``extra`` naming the bundle an imported vector came from."""


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
        values = {k: v for k, v in data.items() if k in known}
        return cls(identity=identity, **values, extra=extra)


__all__ = [
    "MERGE_SIGNATURE",
    "MergeRecord",
    "ModelRecord",
    "PredictionRecord",
    "Record",
    "TaskVectorRecord",
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
