"""Where does a trained model attend? Mean attention per phenotype on a synthetic cohort.

A feature-level cohort (``steph.synthetic``) draws every patch from one of P tissue
phenotypes, and each cancer's true log-hazard is linear in the patient's phenotype proportions
with coefficients beta_c (``steph.synthetic.cohort``). The pipeline runs as a user would
(train-source, task-vector, merge STEPH for the target) and then, for every test patient of
every fold, the model's attention ``alpha`` (the weights ``stephctl explain`` draws) is
grouped by the phenotype each patch was drawn from:

    enrichment_j = mean over the test patches of phenotype j of  alpha_k * N_patient

(1 = the patch gets the uniform share 1/N; 2 = twice that). The phenotypes are known exactly
because the generator is re-run with the same seed. This is a measurement, not a test.

    python -m benchmarks.explain_attention --work /tmp/explain-bench --out docs/img

Prints a Markdown table (for docs/evaluate.md) and, with ``--out``, copies one example
patient's explain images (highest-risk test patient of fold 0) there.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.evaluation.predictors import project_model
from steph.explain.inputs import read_slide_patches
from steph.explain.stage import explain_patients, run_attention
from steph.fileio import read_json
from steph.pipeline.merge import merge_models
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.runtime import resolve_device
from steph.synthetic import PHENOTYPES, FeatureSpec, draw_cohort, generate_cohort, standard_spec
from steph.synthetic.features import patient_bags, prototypes, style_offset
from steph.synthetic.project import init_configured_project

TARGET = "BRCA"
CANCERS = ("BRCA", "BLCA", "COADREAD", "KIPAN")
OVERRIDES = {
    "model.dim_emb": 64,
    "model.dim_attn": 32,
    "train.epochs": 20,
    "train.lr": 5e-4,
    "merge.options": {"top_k": 2},
}


def build(root: Path, seed: int):  # type: ignore[no-untyped-def]
    spec = standard_spec(
        cancers=CANCERS,
        target=TARGET,
        target_patients=150,
        source_patients=(200, 300),
        sharing=0.8,
        seed=seed,
        phenotypes=6,
        effect_sd=2.0,
        features=FeatureSpec(dim=32, patches=(32, 96)),
    )
    layout = init_configured_project(
        root, cancers=spec.names, encoder="synthetic", overrides=OVERRIDES, note="explain benchmark"
    )
    for report in (generate_cohort(root, spec, level="features"),):
        assert report.ok, report.failed
    _, config = load_project(root)
    sources = [c for c in spec.names if c != TARGET]
    steps = (
        lambda: train_source_models(layout, config, cancers=[TARGET]),
        lambda: train_source_models(layout, config, cancers=sources, folds=[config.merge.source_fold]),
        lambda: compute_task_vectors(layout, config, cancers=[TARGET]),
        lambda: compute_task_vectors(layout, config, cancers=sources, folds=[config.merge.source_fold]),
        lambda: merge_models(layout, config, target=TARGET, methods=["steph"]),
    )
    for step in steps:
        report = step()
        assert report.ok, [(i.key, i.message) for i in report.failed]
    return spec, layout, config


def build_slides(root: Path, seed: int):  # type: ignore[no-untyped-def]
    """The demo's slide-level cohort (4 cancers, pyramidal TIFFs, tiny-cnn features), larger;
    ``seed`` is not used (the demo's cohort has its own)."""
    from steph.demo import FULL, SOURCES, DemoSize, demo_spec
    from steph.stages import ExtractSelection, TaskVectorSelection, TrainSourceSelection, open_project, run

    size = DemoSize(target_patients=90, source_patients=60, slide_um=768.0, overrides=FULL.overrides)
    spec = demo_spec(size)
    layout = init_configured_project(
        root,
        cancers=[TARGET, *SOURCES],
        encoder="tiny-cnn",
        overrides=size.overrides,
        note="explain benchmark",
    )
    generated = generate_cohort(root, spec, level="slides")
    assert generated.ok, [(i.key, i.message) for i in generated.failed]
    project = open_project(root)
    for selection in (ExtractSelection(), TrainSourceSelection(), TaskVectorSelection()):
        report = run(project, selection)
        assert report.ok, [(i.key, i.message) for i in report.failed]
    _, config = load_project(root)
    report = merge_models(layout, config, target=TARGET, methods=["steph"])
    assert report.ok, [(i.key, i.message) for i in report.failed]
    return spec, layout, config


def slide_phenotypes(spec, cohort_truth, i: int, slide_id: str, coords: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Phenotype of the cell under each patch's centre (the slide is re-rendered with its seed)."""
    from steph.synthetic.cohort import cancer_rng
    from steph.synthetic.slides import render_slide, textures

    j = cohort_truth.slide_ids[i].index(slide_id)
    mpp = spec.slides.mpp[(i + j) % len(spec.slides.mpp)]
    rng = cancer_rng(spec.seed, cohort_truth.name, 6, i, j)
    _, cells = render_slide(spec, cohort_truth.proportions[i], mpp, textures(spec, mpp), rng)
    cell = spec.slides.cell_um / mpp
    return np.array([cells[int(y // cell), int(x // cell)] for x, y in coords + 0.5 * cell])


def measure(spec, layout, config, methods, level: str = "features"):  # type: ignore[no-untyped-def]
    """Per method: sum of alpha * N and patch count per phenotype over every test patch."""
    cohort_truth = draw_cohort(spec)[TARGET]
    protos, offset = prototypes(spec), style_offset(spec, TARGET)
    index = {pid: i for i, pid in enumerate(cohort_truth.patient_ids)}
    cohort = load_cohort(layout, config, TARGET)
    device = resolve_device("cpu")
    sums = {m: np.zeros(spec.phenotypes) for m in methods}
    counts = np.zeros(spec.phenotypes)
    for fold in layout.split_folds(TARGET):
        test = load_split(layout, cohort, fold).test
        models = {}
        for pid in test:
            slides = [
                read_slide_patches(layout.features(config.encoder, s, cancer=TARGET), s)
                for s in cohort.patients[pid].slide_ids
            ]
            bag = torch.cat([s.features for s in slides])
            if level == "features":
                bags = patient_bags(spec, cohort_truth, index[pid], protos, offset)
                truth = {b.slide_id: b.phenotypes for b in bags}
            else:
                i = index[pid]
                truth = {
                    s.slide_id: slide_phenotypes(spec, cohort_truth, i, s.slide_id, s.coords) for s in slides
                }
            phen = np.concatenate([truth[s.slide_id] for s in slides])
            assert (phen >= 0).all(), pid
            counts += np.bincount(phen, minlength=spec.phenotypes)
            for m in methods:
                if m not in models:
                    models[m] = project_model(layout, config, TARGET, m, fold, device=device).modules[0][1]
                alpha, _ = run_attention(models[m], bag, device)
                sums[m] += np.bincount(phen, weights=alpha * len(alpha), minlength=spec.phenotypes)
    return cohort_truth, {m: sums[m] / counts for m in methods}, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/explain-bench"))
    parser.add_argument("--out", type=Path, default=None, help="copy the example patient's PNGs here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", choices=("features", "slides"), default="features")
    args = parser.parse_args()
    clock = time.perf_counter()
    spec, layout, config = (build if args.level == "features" else build_slides)(args.work, args.seed)
    run = next(m for m in layout.result_methods(TARGET) if m.startswith("steph"))
    methods = ["cancer-specific", run]
    truth, enrichment, counts = measure(spec, layout, config, methods, args.level)
    beta = truth.coefficients
    print(
        "| phenotype | beta (true log-hazard coefficient) | test patches | "
        + " | ".join(f"{m}: alpha x N" for m in methods)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(methods))
    for j in np.argsort(-beta):
        cells = " | ".join(f"{enrichment[m][j]:.2f}" for m in methods)
        print(f"| {PHENOTYPES[j]} | {beta[j]:+.2f} | {int(counts[j])} | {cells} |")
    for m in methods:
        r = np.corrcoef(np.abs(beta - np.average(beta, weights=counts)), enrichment[m])[0, 1]
        print(
            f"{m}: corr(|beta_j - mean beta|, enrichment_j) = {r:.2f}; corr(beta_j, enrichment_j) = "
            f"{np.corrcoef(beta, enrichment[m])[0, 1]:.2f}"
        )
    c = {
        m: [
            float(read_json(layout.result_metrics(TARGET, m, k))["c_index"])
            for k in layout.result_folds(TARGET, m)
        ]
        for m in methods
    }
    for m, v in c.items():
        print(f"{m}: test C-index {np.mean(v):.3f} (sd {np.std(v, ddof=1):.3f}) over {len(v)} folds")
    report = explain_patients(
        layout, config, target=TARGET, method=run, fold=0, top=1, compare="cancer-specific", patches=6
    )
    print("example pages:", report.outputs["pages"])
    if args.out is not None:
        page = Path(report.outputs["pages"][0]).parent
        args.out.mkdir(parents=True, exist_ok=True)
        for png in page.glob("*.png"):
            kind = "heatmap" if png.name.startswith("heatmap") else png.stem
            name = f"explain-{args.level}-{kind}.png"
            shutil.copyfile(png, args.out / name)
            print("copied", args.out / name)
    print(f"took {time.perf_counter() - clock:.0f} s")


if __name__ == "__main__":
    main()
