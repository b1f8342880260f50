"""Bootstrap cost of the evaluation metrics: pair-matrix replicates vs one library call per resample.

Measured side by side on the same random test fold (n patients, ties and censoring, a separate
training set for the censoring distribution):

* ``ours``: :meth:`PairRatio.resample` on all R resamples at once (one ``[R, n] @ [n, n]``
  product per metric), the code path of ``stephctl evaluate``;
* ``sksurv_loop``: scikit-survival's ``concordance_index_censored`` / ``concordance_index_ipcw``
  called once per resample on the duplicated patients (what a straightforward bootstrap does);
* ``torchsurv_loop``: torchsurv's ``ConcordanceIndex`` (Harrell) called once per resample.

The replicates of ``ours`` and ``sksurv_loop`` are compared (max absolute difference). A second
figure times the whole stage (``evaluate_models``) on a synthetic project with and without the
report. Run: ``python -m benchmarks.bench_evaluate [--quick]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    train_t = rng.integers(1, 60, 3 * n).astype(float) * 30
    train_e = rng.random(3 * n) < 0.4
    train_t[0], train_e[0] = 61 * 30.0, True
    t = rng.integers(1, 60, n).astype(float) * 30
    e = rng.random(n) < 0.4
    risk = np.round(rng.normal(size=n) - t / 1500, 2)
    return (train_t, train_e), (t, e, risk)


def _metric_bench(n: int, resamples: int) -> dict[str, float]:
    import torch
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
    from sksurv.util import Surv
    from torchsurv.metrics.cindex import ConcordanceIndex

    from steph.metrics import censoring_survival, harrell_statistic, resample_counts, uno_statistic

    (tr_t, tr_e), (t, e, risk) = _data(n)
    counts = resample_counts(n, resamples, 0)
    start = time.perf_counter()
    g = censoring_survival(tr_t, tr_e)
    ours_h = harrell_statistic(t, e, risk).resample(counts)
    ours_u = uno_statistic(t, e, risk, g).resample(counts)
    ours_s = time.perf_counter() - start

    y_train = Surv.from_arrays(tr_e, tr_t)
    start = time.perf_counter()
    ref_h, ref_u = [], []
    for row in counts:
        idx = np.repeat(np.arange(n), row.astype(int))
        ref_h.append(concordance_index_censored(e[idx], t[idx], risk[idx])[0])
        ref_u.append(concordance_index_ipcw(y_train, Surv.from_arrays(e[idx], t[idx]), risk[idx])[0])
    sksurv_s = time.perf_counter() - start

    subset = counts[: max(1, resamples // 10)]  # torchsurv is slow: time a tenth and scale
    start = time.perf_counter()
    for row in subset:
        idx = np.repeat(np.arange(n), row.astype(int))
        ConcordanceIndex()(
            torch.tensor(risk[idx], dtype=torch.float32),
            torch.tensor(e[idx]),
            torch.tensor(t[idx], dtype=torch.float32),
        )
    torchsurv_s = (time.perf_counter() - start) * resamples / subset.shape[0]

    diff = max(float(np.max(np.abs(ours_h - ref_h))), float(np.max(np.abs(ours_u - ref_u))))
    return {
        "n_patients": n,
        "resamples": resamples,
        "ours_s": round(ours_s, 4),
        "sksurv_loop_s": round(sksurv_s, 3),
        "torchsurv_loop_harrell_only_s": round(torchsurv_s, 3),
        "speedup_vs_sksurv": round(sksurv_s / ours_s, 1),
        "speedup_vs_torchsurv_harrell_only": round(torchsurv_s / ours_s, 1),
        "max_abs_diff_vs_sksurv": diff,
    }


def _stage_bench(targets: int, methods: int, folds: int, patients: int, resamples: int) -> dict[str, float]:
    from steph.config import load_project
    from steph.pipeline.evaluate import evaluate_models
    from steph.project import init_project
    from steph.synthetic.results import write_results

    names = ["BRCA", "BLCA", "LUAD", "KIRC", "UCEC"][:targets]
    quality = dict(
        list({"cancer-specific": 0.55, "task-arithmetic": 0.6, "steph": 0.75, "ties": 0.58}.items())[:methods]
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = init_project(Path(tmp) / "project").root
        write_results(root, targets=tuple(names), methods=quality, folds=folds, patients=patients)
        out: dict[str, float] = {
            "targets": targets,
            "methods": methods,
            "folds": folds,
            "patients_per_target": patients,
        }
        for report in (False, True):
            layout, config = load_project(root, {"evaluate.report": report})
            start = time.perf_counter()
            result = evaluate_models(layout, config, bootstrap=resamples)
            out[f"stage_s_report_{str(report).lower()}"] = round(time.perf_counter() - start, 2)
            assert result.ok
        out["resamples"] = resamples
    return out


def run(quick: bool = False) -> dict:
    """Figures of one run (seconds; ratios measured side by side)."""
    metric = _metric_bench(n=100 if quick else 200, resamples=100 if quick else 1000)
    stage = _stage_bench(
        targets=2,
        methods=3,
        folds=3 if quick else 5,
        patients=120 if quick else 250,
        resamples=100 if quick else 1000,
    )
    return {"metric_bootstrap": metric, "stage": stage}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=2))
