"""``stephctl demo``: the whole method on a synthetic slide-level cohort, on a laptop CPU.

:func:`run_demo` creates a project (``stephctl init`` plus the demo's settings, marked
``# demo`` in its stephctl.yaml), generates pyramidal TIFF slides of four cancers whose tissue
phenotypes drive survival, then runs every stage: extract (tiny-cnn), train-source,
task-vector, merge for the target BRCA (STEPH, task arithmetic, ROUPKT; the cancer-specific
baseline comes from train-source), transfer (every source model applied to each cancer), explain (the pages of fold 0's highest- and lowest-risk test
patients under STEPH, beside the cancer-specific model) and evaluate (whose report links them). Every stage skips what exists, so a second run
reuses everything. The summary compares the methods' mean test C-index over the folds with
the oracle (the true risk of the generator).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DEFAULT_ENCODER, ProjectConfig
from .layout import ProjectLayout
from .logs import run_log
from .progress import NULL_PROGRESS, Progress
from .records import MetricsRecord
from .report import StageReport
from .synthetic import CancerSpec, CohortSpec, SlideSpec, generate_cohort
from .synthetic.project import init_configured_project
from .synthetic.tables import oracle_fold_c_index

log = logging.getLogger(__name__)

TARGET = "BRCA"
SOURCES = ("BLCA", "COADREAD", "KIPAN")
"""The paper's most useful sources for BRCA (the paper's analysis of BRCA's sources: lambda < 0.3, large w)."""
METHODS = ("steph", "task-arithmetic", "roupkt")
STAGES = ("generate", "extract", "train-source", "task-vector", "merge", "transfer", "explain", "evaluate")
EXPLAIN_FOLD = 0


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: the cohort and the settings written into stephctl.yaml."""

    target_patients: int
    source_patients: int
    slide_um: float
    overrides: dict[str, Any]
    smoke_test: bool = False
    """Too small for the comparison to mean anything: it only shows that every stage runs."""


FULL = DemoSize(
    target_patients=90,
    source_patients=100,
    slide_um=1024.0,
    overrides={
        "targets": [TARGET],
        "model.dim_emb": 64,
        "model.dim_attn": 32,
        "train.epochs": 20,
        "train.batch_size": 8,
        "train.lr": 5e-4,
        "merge.options": {"top_k": 2},
        "evaluate.bootstrap": 200,
    },
)
QUICK = DemoSize(
    target_patients=30,
    source_patients=20,
    slide_um=640.0,
    overrides={
        "targets": [TARGET],
        "model.dim_emb": 32,
        "model.dim_attn": 16,
        "train.epochs": 4,
        "train.batch_size": 8,
        "train.lr": 5e-4,
        "merge.options": {"top_k": 2},
        "evaluate.bootstrap": 50,
    },
    smoke_test=True,
)
SMOKE_TEST_NOTE = (
    "--quick is a smoke test: {per_fold} test patients per fold, so these C-indices (and the ranking "
    "of the methods) are noise; `stephctl demo` runs the cohort that shows the method"
)


def demo_spec(size: DemoSize) -> CohortSpec:
    """The demo cohort: a smaller target, three sources sharing most of the prognostic rule.

    The signal is stronger (sd of the log-hazard 2, about half the patients censored) than in the
    transfer benchmark, so that five small test folds still rank patients visibly better than chance.
    """
    cancers = [
        CancerSpec(name=TARGET, n_patients=size.target_patients, censoring=0.45, median_days=4 * 365.0)
    ]
    for i, name in enumerate(SOURCES):
        cancers.append(
            CancerSpec(
                name=name,
                n_patients=size.source_patients,
                censoring=0.45 + 0.05 * i,
                median_days=(3 + i) * 365.0,
            )
        )
    return CohortSpec(
        cancers=tuple(cancers),
        sharing=0.8,
        effect_sd=2.0,
        second_slide_rate=0.1,
        seed=7,
        slides=SlideSpec(size_um=size.slide_um),
    )


@dataclass(frozen=True)
class MethodScore:
    """Mean and standard deviation (over folds) of one method's test C-index."""

    method: str
    mean: float
    sd: float
    folds: int


@dataclass
class DemoReport:
    """What :func:`run_demo` did and the comparison it ends with."""

    root: Path
    target: str
    stages: list[StageReport] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    scores: list[MethodScore] = field(default_factory=list)
    oracle: float | None = None
    report_path: Path | None = None
    patient_pages: list[Path] = field(default_factory=list)
    note: str | None = None
    """What the comparison does not show (the quick demo is a smoke test)."""

    @property
    def ok(self) -> bool:
        return all(stage.ok for stage in self.stages)

    @property
    def failed_stage(self) -> str | None:
        return next((stage.stage for stage in self.stages if not stage.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": str(self.root),
            "target": self.target,
            "ok": self.ok,
            "failed_stage": self.failed_stage,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "stages": [stage.to_dict() for stage in self.stages],
            "c_index": [score.__dict__ for score in self.scores],
            "oracle_c_index": self.oracle,
            "report": str(self.report_path) if self.report_path else None,
            "patient_pages": [str(p) for p in self.patient_pages],
            "note": self.note,
        }


def run_demo(
    root: Path | str, *, quick: bool = False, only_generate: bool = False, progress: Progress = NULL_PROGRESS
) -> DemoReport:
    """Generate the demo cohort into ``root`` and run the pipeline on it (see the module docstring).

    Stops after the first stage with failed items (``DemoReport.failed_stage``).

    Raises:
        ConfigError: ``root`` holds a different cohort (e.g. a full demo rerun with ``quick``).
    """
    size = QUICK if quick else FULL
    layout = init_configured_project(
        root,
        cancers=[TARGET, *SOURCES],
        encoder=DEFAULT_ENCODER,
        overrides=size.overrides,
        note="demo --quick" if quick else "demo",
    )
    demo = DemoReport(layout.root, TARGET)
    if size.smoke_test:
        demo.note = SMOKE_TEST_NOTE.format(per_fold=size.target_patients // 5)
    stages = STAGES[:1] if only_generate else STAGES
    progress.start("demo", len(stages), unit="stages")
    with run_log(layout.stage_log("demo", time.strftime("%Y%m%d-%H%M%S"))):
        for name in stages:
            started = time.perf_counter()
            progress.advance("demo", 0, item=name)  # which stage runs now (shown with the time so far)
            report = _stage(name, layout, size, progress)
            demo.seconds[name] = time.perf_counter() - started
            demo.stages.append(report)
            progress.advance("demo", 1, item=name)
            log.info("demo: %s finished in %.1f s", name, demo.seconds[name])
            if not report.ok:
                log.error("demo: %s failed; stopping (see the stage table)", name)
                break
    progress.finish("demo")
    if demo.ok and not only_generate:
        demo.scores = method_scores(layout, TARGET)
        demo.oracle = oracle_c_index(layout, TARGET)
        report_file = layout.report_file(TARGET, "report.html")
        demo.report_path = report_file if report_file.is_file() else None
        explained = next((s for s in demo.stages if s.stage == "explain"), None)
        demo.patient_pages = [Path(p) for p in explained.outputs.get("pages", [])] if explained else []
    return demo


def _stage(name: str, layout: ProjectLayout, size: DemoSize, progress: Progress) -> StageReport:
    """Run one stage of the demo through :mod:`steph.stages` (imported only when needed)."""
    if name == "generate":
        return generate_cohort(layout.root, demo_spec(size), level="slides", progress=progress)
    from .stages import open_project, run

    project = open_project(layout.root)
    if name == "explain":
        return _explain(layout, project.config, progress)
    return run(project, _selection(name), progress=progress)


def _selection(name: str) -> object:
    """What the demo runs of stage ``name``: what the project declares (``targets: [BRCA]``: the
    target on every fold, the sources only on the fold merge takes them from), the demo's
    methods, the transfer study, the target's evaluation."""
    from .stages import (
        EvaluateSelection,
        ExtractSelection,
        MergeSelection,
        TaskVectorSelection,
        TrainSourceSelection,
        TransferSelection,
    )

    chosen: dict[str, object] = {
        "extract": ExtractSelection(),
        "train-source": TrainSourceSelection(),
        "task-vector": TaskVectorSelection(),
        "merge": MergeSelection(target=TARGET, methods=list(METHODS)),
        "transfer": TransferSelection(),  # every source model applied to each cancer
        "evaluate": EvaluateSelection(targets=[TARGET]),
    }
    return chosen[name]


def _explain(layout: ProjectLayout, config: ProjectConfig, progress: Progress) -> StageReport:
    """Pages of the highest- and the lowest-risk test patient of fold 0 under STEPH, among the
    patients STEPH transfers to (a patient whose weights are all 0 has no transfer to show)."""
    from .explain.inputs import extremes, test_risks, transferring_patients
    from .explain.stage import explain_patients
    from .layout import CANCER_SPECIFIC

    run = next(m for m in layout.result_methods(TARGET) if m == METHODS[0] or m.startswith(METHODS[0] + "-"))
    risks = test_risks(layout, TARGET, run, EXPLAIN_FOLD)
    shown = transferring_patients(layout, TARGET, run, EXPLAIN_FOLD)
    if shown:
        risks = {pid: r for pid, r in risks.items() if pid in shown}
    return explain_patients(
        layout,
        config,
        target=TARGET,
        method=run,
        fold=EXPLAIN_FOLD,
        patients=extremes(risks, 1),
        compare=CANCER_SPECIFIC,
        patches=6,
        progress=progress,
    )


def method_scores(layout: ProjectLayout, target: str) -> list[MethodScore]:
    """Mean (sd over folds) test C-index of every method with results for ``target``, best first."""
    scores = []
    for method in layout.result_methods(target):
        values = []
        for fold in layout.result_folds(target, method):
            path = layout.result_metrics(target, method, fold)
            value = MetricsRecord.read(path).c_index if path.is_file() else None
            if value is not None:
                values.append(float(value))
        if values:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            scores.append(MethodScore(method, statistics.fmean(values), sd, len(values)))
    return sorted(scores, key=lambda s: -s.mean)


def oracle_c_index(layout: ProjectLayout, target: str) -> float | None:
    """Mean over the target's test folds of Harrell's C of the generator's true risk."""
    values = oracle_fold_c_index(layout, target)
    return statistics.fmean(values) if values else None
