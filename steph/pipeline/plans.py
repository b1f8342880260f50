"""The task lists of train-source, task-vector and merge, from the project's inputs and the
names of their outputs.

Planning reads labels, splits, records and the merge settings, never a tensor, so this module
imports no torch: ``stephctl status`` and ``stephctl slurm`` plan every stage in well under a
second. The stages' work lives in :mod:`.train_source`, :mod:`.task_vector` and :mod:`.merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config.project import project_cancers, project_folds
from ..errors import ConfigError, MissingArtifactError
from ..layout import normalize_cancer
from ..merging.inputs import for_method, requested_methods, resolve_sources, resolve_target, target_folds
from ..merging.paper import PAPER_VARIANTS, Variant
from ..merging.registry import method_spec
from ..merging.settings import check_search
from ..transfer.choose import choose_sources, parse_auto
from ..units import ModelUnit, WorkUnit

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

__all__ = [
    "MERGE",
    "TASK_VECTOR",
    "TRAIN_SOURCE",
    "MergeUnit",
    "plan_merge",
    "plan_task_vectors",
    "plan_train_source",
    "resolve_cancers",
    "resolve_folds",
]

TRAIN_SOURCE = "train-source"
TASK_VECTOR = "task-vector"
MERGE = "merge"


def resolve_cancers(layout: ProjectLayout, config: ProjectConfig, cancers: Sequence[str] | None) -> list[str]:
    """``cancers`` if given, else ``cancers:`` of stephctl.yaml, else every labels/<CANCER>.csv."""
    names = [normalize_cancer(c) for c in cancers] if cancers else project_cancers(layout, config)
    if not names:
        raise ConfigError(
            "no cancers to train",
            hint=f"list them under cancers: in {layout.config_file}, pass --cancer, or add labels/<CANCER>.csv",
        )
    return names


def resolve_folds(
    layout: ProjectLayout, config: ProjectConfig, cancer: str, folds: Sequence[int] | None
) -> list[int]:
    """``folds`` if given, else :func:`project_folds`."""
    chosen = list(folds) if folds else project_folds(layout, config, cancer)
    if not chosen:
        raise MissingArtifactError(
            f"{cancer}: no split files found ({layout.split(cancer, 0)})",
            hint="write splits_<k>.csv files with train and test columns, or set paths.splits",
        )
    return chosen


def plan_train_source(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
) -> list[ModelUnit]:
    """The (cancer, fold) units of the stage, done or not."""
    units = []
    for cancer in resolve_cancers(layout, config, cancers):
        for fold in resolve_folds(layout, config, cancer, folds):
            outputs = (
                layout.model_weights(cancer, fold),
                layout.model_metrics(cancer, fold),
                layout.model_meta(cancer, fold),
            )
            units.append(
                ModelUnit(TRAIN_SOURCE, f"{cancer}/fold_{fold}", outputs, cancer=cancer, fold=int(fold))
            )
    return units


def plan_task_vectors(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
) -> list[ModelUnit]:
    """The stage's task list: one unit per (cancer, fold) that train-source is asked to train
    (:func:`plan_train_source`), plus, with ``folds`` None, every
    fold already trained beyond those. It is built from the project's inputs, so that an array can
    be generated before any model exists; whether a unit's model is trained is checked when it
    runs (:class:`~steph.pipeline.task_vector.TaskVectorWorker`).

    Raises:
        ConfigError: no cancers; MissingArtifactError: a cancer without split files.
    """
    by_cancer: dict[str, list[int]] = {}
    for model in plan_train_source(layout, config, cancers=cancers, folds=folds):
        by_cancer.setdefault(model.cancer, []).append(model.fold)
    units: list[ModelUnit] = []
    for cancer, planned in by_cancer.items():
        chosen = planned if folds is not None else sorted(set(planned) | set(_trained(layout, cancer)))
        units.extend(_unit(layout, cancer, k) for k in chosen)
    return units


def _unit(layout: ProjectLayout, cancer: str, fold: int) -> ModelUnit:
    outputs = (layout.task_vector(cancer, fold), layout.task_vector_meta(cancer, fold))
    return ModelUnit(TASK_VECTOR, f"{cancer}/fold_{fold}", outputs, cancer=cancer, fold=int(fold))


def _trained(layout: ProjectLayout, cancer: str) -> list[int]:
    """Folds of ``cancer`` whose model record (``meta.json``, written last) exists."""
    return [k for k in layout.model_folds(cancer) if layout.model_meta(cancer, k).is_file()]


@dataclass(frozen=True)
class MergeUnit(WorkUnit):
    """One (method variant, target fold) of a target: the run folder ``run`` of ``method`` with
    the variant's ``merge:`` overrides (a paper row's), trained on the target's fold ``fold``
    from the task vectors of ``sources`` (their fold ``source_fold``)."""

    target: str = ""
    method: str = ""
    label: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    fold: int = 0
    sources: tuple[str, ...] = ()
    source_fold: int = 0
    paper: bool = False
    source_choice: dict[str, Any] | None = None
    """How ``--sources auto:K`` chose ``sources`` for this fold (:mod:`steph.transfer.choose`)."""


def plan_merge(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    target: str,
    methods: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    paper: bool = False,
    runs: Sequence[str] | None = None,
) -> list[MergeUnit]:
    """The stage's task list: one unit per (target fold, method variant), fold-major. The folds
    are ``folds``, else ``merge.folds``, else the folds the project trains (not the target's task
    vectors, which may not exist yet). ``paper`` runs the paper's comparison set
    (:data:`steph.merging.paper.PAPER_VARIANTS`) instead of ``methods``; ``runs`` keeps only the
    variants with those folder names.

    Raises:
        ConfigError, UnknownNameError, MissingArtifactError: as :func:`~steph.pipeline.merge.merge_models`'s checks.
    """
    name = resolve_target(layout, config, target)
    chosen = list(folds or config.merge.folds or project_folds(layout, config, name))
    return _plan(
        layout, config, name, resolve_sources(layout, config, name), methods, chosen, paper=paper, runs=runs
    )


def _plan(
    layout: ProjectLayout,
    config: ProjectConfig,
    name: str,
    sources: list[str],
    methods: Sequence[str] | None,
    folds: Sequence[int] | None,
    *,
    paper: bool = False,
    runs: Sequence[str] | None = None,
) -> list[MergeUnit]:
    """:func:`plan_merge` for a resolved target and its sources."""
    if paper:
        if methods:
            raise ConfigError("--paper runs the paper's own set of methods", hint="drop --method or --paper")
        requested_methods(config, list(dict.fromkeys(v.method for v in PAPER_VARIANTS)))
        variants = list(PAPER_VARIANTS)
    else:
        variants = [Variant(m.name, m.name) for m in requested_methods(config, methods)]
    check_search(config.merge)
    fold_list = target_folds(layout, name, folds or config.merge.folds)  # missing inputs first
    auto = parse_auto(config.merge.sources)  # --sources auto:K: chosen per fold (steph.transfer.choose)
    planned: dict[str, Variant] = {}
    for variant in variants:
        method = method_spec(variant.method)
        merge = for_method(variant.apply(config.merge), method)
        method.check(merge, auto or len(sources))
        planned.setdefault(method.run_name(merge) + (f"-auto{auto}" if auto else ""), variant)
    if runs is not None:
        planned = {run: v for run, v in planned.items() if run in runs}
    units = []
    for fold in fold_list:
        choice = choose_sources(layout, name, fold, sources, auto) if auto else None
        for run, variant in planned.items():
            units.append(
                MergeUnit(
                    MERGE,
                    f"{name}/{run}/fold_{fold}",
                    (layout.merged_meta(name, run, fold),),
                    target=name,
                    method=variant.method,
                    label=variant.label,
                    overrides=variant.overrides,
                    run=run,
                    fold=fold,
                    sources=tuple(choice.sources if choice else sources),
                    source_fold=config.merge.source_fold,
                    paper=paper,
                    source_choice=choice.to_json() if choice else None,
                )
            )
    return units
