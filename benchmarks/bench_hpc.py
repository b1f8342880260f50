"""Cost of the cluster-scale layer on a study-sized project: task lists, status, the task path.

Side by side in one run, on a synthetic project whose files are empty placeholders (only their
existence matters here):

- ``extract_task_list``: the extract task list (shards of ``slurm.slides_per_task``) of an
  N-slide manifest, against reading and validating the manifest alone (the floor: extract
  itself must read it).
- ``train_source_task_list``: the 13 x 5 cancer-fold list, done flags included.
- ``status``: ``stephctl status``'s survey (labels of every cancer, one existence check per
  slide, models, task vectors, merges, one walk of the project for locks and temporary files),
  reported per slide.
- ``skip_done_task``: ``run_task`` on a unit that is already done (what a resubmitted array task
  costs), against planning the list alone.

Run ``python -m benchmarks.bench_hpc [--quick]``; it prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steph.config import load_project
from steph.config.project import Project
from steph.fileio import write_csv
from steph.hpc.status import project_status
from steph.pipeline.extract import select_slides
from steph.project import init_project
from steph.stages import ExtractSelection, TrainSourceSelection, get_stage, plan
from steph.synthetic.cohort import TCGA_CANCERS

CANCERS = list(TCGA_CANCERS)
FOLDS = 5


def _best(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build_project(root: Path, n_slides: int) -> Path:
    """13 cancers, ``n_slides`` slides (one per patient) with labels, 5 splits, placeholder
    feature files and manifest rows; BRCA's models trained (placeholder files)."""
    layout = init_project(root, cancers=CANCERS)
    per_cancer = max(2 * FOLDS, n_slides // len(CANCERS))
    manifest = []
    encoder = load_project(root)[1].encoder
    for cancer in CANCERS:
        ids = [f"{cancer}-{i:05d}" for i in range(per_cancer)]
        write_csv(
            layout.labels(cancer),
            ["patient_id", "slide_id", "t", "e"],
            [[i, f"{i}-S", 100 + n, n % 2] for n, i in enumerate(ids)],
        )
        for k in range(FOLDS):
            test = ids[k::FOLDS]
            train = [i for i in ids if i not in set(test)]
            rows = [
                [train[r] if r < len(train) else "", test[r] if r < len(test) else ""]
                for r in range(len(train))
            ]
            write_csv(layout.split(cancer, k), ["train", "test"], rows)
        features = layout.features_dir(encoder)
        features.mkdir(parents=True, exist_ok=True)
        for i in ids:
            (features / f"{i}-S.h5").touch()
            manifest.append([f"{i}-S", i, cancer, f"slides/{i}-S.svs", 0.5])
    write_csv(layout.manifest, ["slide_id", "patient_id", "cancer", "path", "mpp"], manifest)
    for k in range(FOLDS):
        for path in (
            layout.model_weights("BRCA", k),
            layout.model_metrics("BRCA", k),
            layout.model_meta("BRCA", k),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return root


def run(quick: bool = False) -> dict[str, Any]:
    n_slides = 1300 if quick else 13000
    repeat = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-hpc-") as tmp:
        root = build_project(Path(tmp) / "study", n_slides)
        layout, config = load_project(root)
        read_manifest = _best(lambda: select_slides(layout), repeat)
        project = Project(layout, config)
        extract_list = _best(lambda: plan(project, ExtractSelection()), repeat)
        n_shards = len(plan(project, ExtractSelection()))
        train_list = _best(lambda: plan(project, TrainSourceSelection()), repeat)
        status = _best(lambda: project_status(layout, config), repeat)
        train = get_stage("train-source")
        skip = _best(lambda: train.run_task(project, 5, TrainSourceSelection()), repeat)  # BRCA/fold_0: done
        done_item = train.run_task(project, 5, TrainSourceSelection()).items[0].status.value
    return {
        "slides": n_slides,
        "extract_shards": n_shards,
        "read_manifest_s": round(read_manifest, 4),
        "extract_task_list_s": round(extract_list, 4),
        "extract_task_list_vs_manifest_read": round(extract_list / read_manifest, 2),
        "train_source_tasks": len(CANCERS) * FOLDS,
        "train_source_task_list_s": round(train_list, 4),
        "status_s": round(status, 4),
        "status_per_slide_us": round(1e6 * status / n_slides, 1),
        "skip_done_task_s": round(skip, 4),
        "skip_done_task_vs_list": round(skip / train_list, 2),
        "skipped_task_status": done_item,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,300 slides instead of 13,000")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
