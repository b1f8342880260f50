"""Task lists of the built-in stages (registered into :mod:`steph.hpc.tasks` on first use).

Each adapter enumerates units from the stage's inputs (see the table in :mod:`steph.hpc.tasks`)
and runs one unit by calling the stage's public function with a selection of exactly that unit.
Stage modules are imported inside the functions: listing tasks of one stage does not import the
others (extract's encoders, merge's registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport
from ..units import WorkUnit
from .shards import plan_extract_shards, shard_pins
from .tasks import Selection, StageTasks, register_stage

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout


def _folds(selection: Selection) -> list[int] | None:
    folds = selection.get("folds")
    return [int(k) for k in folds] if folds else None


# -- extract ------------------------------------------------------------------------------------
def _run_extract(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] | None = None,
) -> StageReport:
    """Extract one shard; with ``devices``, split it over one worker process per device."""
    p = unit.params
    selection = {
        "cancers": p.get("cancers"),
        "slides_file": Path(p["slides_file"]) if p.get("slides_file") else None,
        "num_shards": p["num_shards"],
        "shard_index": p["shard_index"],
    }
    if devices:
        from .multi_device import extract_on_devices

        return extract_on_devices(
            layout, config, devices, overwrite=overwrite, progress=progress, **selection
        )
    from ..pipeline.extract import extract_features

    return extract_features(layout, config, overwrite=overwrite, progress=progress, **selection)


register_stage(
    StageTasks(
        name="extract",
        plan=plan_extract_shards,
        run=_run_extract,
        lock_roots=lambda layout, config: [layout.features_dir(config.encoder)],
        gpus=True,
        pins=shard_pins,
    )
)


# -- train-source -------------------------------------------------------------------------------
def _plan_train(layout: ProjectLayout, config: ProjectConfig, selection: Selection) -> list[WorkUnit]:
    from ..pipeline.train_source import plan_train_source

    return plan_train_source(layout, config, cancers=selection.get("cancers"), folds=_folds(selection))


def _run_train(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    from ..pipeline.train_source import train_source_models

    p = unit.params
    return train_source_models(
        layout, config, cancers=[p["cancer"]], folds=[p["fold"]], overwrite=overwrite, progress=progress
    )


register_stage(
    StageTasks(
        name="train-source",
        plan=_plan_train,
        run=_run_train,
        lock_roots=lambda layout, config: [layout.models_root, layout.results_root],
    )
)


# -- task-vector --------------------------------------------------------------------------------
def _plan_task_vectors(layout: ProjectLayout, config: ProjectConfig, selection: Selection) -> list[WorkUnit]:
    """One unit per model that train-source is asked to train (not per model already trained)."""
    from ..pipeline.task_vector import STAGE

    units = []
    for model in _plan_train(layout, config, selection):
        cancer, fold = model.params["cancer"], model.params["fold"]
        outputs = (layout.task_vector(cancer, fold), layout.task_vector_meta(cancer, fold))
        units.append(WorkUnit(STAGE, model.key, outputs, {"cancer": cancer, "fold": fold}))
    return units


def _run_task_vector(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    from ..pipeline.task_vector import compute_task_vectors

    p = unit.params
    return compute_task_vectors(
        layout, config, cancers=[p["cancer"]], folds=[p["fold"]], overwrite=overwrite, progress=progress
    )


register_stage(
    StageTasks(
        name="task-vector",
        plan=_plan_task_vectors,
        run=_run_task_vector,
        lock_roots=lambda layout, config: [layout.task_vectors_root],
        gpus=False,
    )
)


# -- merge --------------------------------------------------------------------------------------
def _target_folds(
    layout: ProjectLayout, config: ProjectConfig, target: str, selection: Selection
) -> list[int]:
    from ..layout import normalize_cancer

    return _folds(selection) or list(config.merge.folds or layout.split_folds(normalize_cancer(target)))


def _plan_merge(layout: ProjectLayout, config: ProjectConfig, selection: Selection) -> list[WorkUnit]:
    """Target x method x fold, the folds taken from the target's split files (not its task vectors)."""
    from ..errors import ConfigError
    from ..pipeline.merge import plan_merge

    target = selection.get("target")
    if not target:
        raise ConfigError("merge tasks need a target", hint="pass --target, e.g. --target BRCA")
    folds = _target_folds(layout, config, target, selection)
    return plan_merge(
        layout,
        config,
        target=target,
        methods=selection.get("methods"),
        folds=folds,
        paper=bool(selection.get("paper")),
    )


def _run_merge(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    from ..pipeline.merge import merge_models

    p = unit.params
    return merge_models(
        layout,
        config,
        target=p["target"],
        methods=None if p.get("paper") else [p["method"]],
        folds=[p["fold"]],
        paper=bool(p.get("paper")),
        runs=[p["run"]],
        overwrite=overwrite,
        progress=progress,
    )


register_stage(
    StageTasks(
        name="merge",
        plan=_plan_merge,
        run=_run_merge,
        lock_roots=lambda layout, config: [layout.merged_root, layout.results_root],
    )
)


# -- evaluate -----------------------------------------------------------------------------------
def _plan_evaluate(layout: ProjectLayout, config: ProjectConfig, selection: Selection) -> list[WorkUnit]:
    """One unit per target (default: every cancer of the project). Evaluation is always
    recomputed, so the units have no outputs and are never done."""
    from ..layout import normalize_cancer
    from ..pipeline.evaluate import STAGE

    targets = selection.get("targets") or list(config.cancers) or layout.label_cancers()
    methods = list(selection["methods"]) if selection.get("methods") else None
    return [
        WorkUnit(STAGE, name, (), {"target": name, "methods": methods})
        for name in dict.fromkeys(normalize_cancer(t) for t in targets)
    ]


def _run_evaluate(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    from ..pipeline.evaluate import evaluate_models

    del overwrite  # evaluation always recomputes
    p = unit.params
    return evaluate_models(layout, config, targets=[p["target"]], methods=p["methods"], progress=progress)


register_stage(
    StageTasks(
        name="evaluate",
        plan=_plan_evaluate,
        run=_run_evaluate,
        lock_roots=lambda layout, config: [layout.results_root, layout.reports_root],
        gpus=False,
    )
)
