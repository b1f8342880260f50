"""Real-scale stage benchmarks shared by bench_train and bench_merge (not a benchmark itself).

A generated project shaped like real slides (D = 1536, the reference ABMIL 512/384, one slide per
patient, bag sizes log-normal around 1,500 patches clipped to 150..12,000) and three figures
measured side by side in one run, each in a fresh process (wall time and peak RSS from
``os.wait4``):

- ``stage``: the stage as users run it: ``stephctl train-source`` / ``stephctl merge``;
- ``one_bag``: the reference's loop on the same bags (read by the same :func:`open_bags`): per
  batch the 16 bags are forwarded one at a time, one loss over the 16, one backward, one step;
  then one forward per test and train bag (the predictions the stage writes). Its dropout
  masks are torch's, one Bernoulli draw per element, as the reference's ``nn.Dropout``
  (:func:`steph.models.dropout.bernoulli_masks`);
- ``bare``: the bare unpadded compute, timed inside the process around the arithmetic only:
  forward + backward of every bag alone (SurvMLE from the logits, as the stage computes it,
  weighted 1/16), the optimiser step, then the prediction forwards; no start-up, no reading,
  no writing.

Rounds alternate the three (the machine is shared: ratios come from one run, the best of the
rounds is kept, the load average is recorded). Every process runs with a bytecode cache
(``PYTHONPYCACHEPREFIX`` in the temp folder, warmed before the first round), as an installed
package has: where the environment sets ``PYTHONDONTWRITEBYTECODE=1`` every process would
otherwise compile torch and the rest at each start (9-15 s of CPU on this machine), a fixed
cost that is no part of the stage and that the bare compute does not pay. Run a worker by hand with
``python -m benchmarks.realscale one_bag|bare|huge ROOT ...`` from the repository root (prints one JSON line).

The stages request deterministic algorithms (:func:`steph.runtime.set_deterministic`); the
reference's loop does not, and neither do ``one_bag`` and ``bare``. ``STEPH_BENCH_DETERMINISTIC=1``
in the environment makes them request them as the stages do, to measure what determinism costs
(on a GPU it may choose slower kernels).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: every measured process runs there (``python -m benchmarks.realscale``)."""

TARGET = "BRCA"
SOURCES = ("BLCA", "LUAD")
FOLD = 0
DEVICE = os.environ.get("STEPH_BENCH_DEVICE", "cpu")
DETERMINISTIC = os.environ.get("STEPH_BENCH_DETERMINISTIC") == "1"
"""The workers request deterministic algorithms, as the stages do (see the module docstring)."""
"""Device of every figure (``--device`` of bench_train / bench_merge sets it for the workers too).
On CUDA the workers synchronise before reading the clock and report the peak GPU memory
(``torch.cuda.max_memory_allocated``); the stage process reports it through
:data:`CUDA_STAGE` (wall time is the figure to read there: CPU seconds count the host's waits)."""


def set_device(device: str) -> None:
    """Measure on ``device`` (``cpu`` or ``cuda[:i]``), in this process and the workers."""
    global DEVICE
    DEVICE = device
    os.environ["STEPH_BENCH_DEVICE"] = device
    ENV["STEPH_BENCH_DEVICE"] = device


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def hardware_peak(repeats: int = 5) -> dict[str, float]:
    """The device's measured dense matrix-product rate, in GFLOP/s (best of ``repeats``): on CPU
    fp32 (sgemm, 2,048-square, torch's default thread count, as the stage runs); on CUDA fp32 and
    bf16 (8,192-square). The arithmetic figures of a row are fractions of these."""
    import torch

    def rate(n: int, dtype: torch.dtype) -> float:
        a = torch.randn(n, n, device=DEVICE, dtype=dtype)
        b = torch.randn(n, n, device=DEVICE, dtype=dtype)
        best = math.inf
        for _ in range(repeats):
            _sync()
            start = time.perf_counter()
            torch.mm(a, b)
            _sync()
            best = min(best, time.perf_counter() - start)
        return round(2 * n**3 / best / 1e9, 1)

    if DEVICE.startswith("cuda"):
        return {"fp32_gflops": rate(8192, torch.float32), "bf16_gflops": rate(8192, torch.bfloat16)}
    return {"fp32_gflops": rate(2048, torch.float32), "threads": torch.get_num_threads()}


def arithmetic(best: dict[str, dict[str, Any]], peak: dict[str, float]) -> dict[str, float]:
    """The analytic FLOPs of the run (:mod:`steph.models.flops`, counted by the bare worker over
    the bags it ran) over each process's time: the bare compute's and the stage's achieved rate
    (GFLOP/s) and their fractions of the measured fp32 peak (and of bf16 on CUDA)."""
    bare, stage = best["bare"], best["stage"]
    flops = bare["analytic_flops"]
    out = {
        "analytic_gflop": round(flops / 1e9, 2),
        "bare_gflops": round(flops / bare["compute_s"] / 1e9, 2),
        "stage_gflops": round(flops / stage["wall_s"] / 1e9, 2),
        "one_bag_gflops": round(flops / best["one_bag"]["wall_s"] / 1e9, 2),
    }
    for name, rate in peak.items():
        if name.endswith("_gflops"):
            kind = name.removesuffix("_gflops")
            out[f"bare_fraction_of_{kind}"] = round(out["bare_gflops"] / rate, 4)
            out[f"stage_fraction_of_{kind}"] = round(out["stage_gflops"] / rate, 4)
    return out


def _gpu_peak() -> dict[str, float]:
    if not DEVICE.startswith("cuda"):
        return {}
    import torch

    return {"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


@dataclass(frozen=True)
class Cohort:
    """Shape of a benchmark cohort: ``median`` > 0 = heavy-tailed, else every bag ``equal``."""

    patients: int = 48
    source_patients: int = 24
    """Patients of each source cancer: 80 % of them must fill a batch of 16 (train-source refuses
    a fold with fewer training patients than the batch)."""
    dim: int = 1536
    median: float = 1500.0
    spread: float = 0.8
    clip: tuple[int, int] = (150, 12_000)
    equal: int = 1500

    @property
    def label(self) -> str:
        if self.median > 0:
            lo, hi = self.clip
            return f"log-normal median {self.median:g} sd(log) {self.spread:g} clip {lo}..{hi}"
        return f"equal {self.equal}"


def make_project(root: Path, cohort: Cohort, *, sources: bool = False) -> dict[str, Any]:
    """Generate the project (features level) and return its bag-size summary."""
    import numpy as np

    from steph.synthetic import generate_cohort
    from steph.synthetic.cohort import FeatureSpec, standard_spec

    if cohort.median > 0:
        features = FeatureSpec(
            dim=cohort.dim, patches=cohort.clip, size_median=cohort.median, size_spread=cohort.spread
        )
    else:
        features = FeatureSpec(dim=cohort.dim, patches=(cohort.equal, cohort.equal))
    n_src = cohort.source_patients
    spec = standard_spec(
        cancers=(TARGET, *SOURCES) if sources else (TARGET,),
        target=TARGET,
        target_patients=cohort.patients,
        source_patients=(n_src, n_src),
        features=features,
    )
    start = time.perf_counter()
    generate_cohort(root, spec, level="features", encoder="uni2-h-synthetic")
    from steph.data.features import feature_shape

    sizes = [feature_shape(path)[0] for path in target_feature_files(root)]
    arr = np.array(sizes)
    return {
        "bags": cohort.label,
        "patients": len(sizes),
        "patches_median": int(np.median(arr)),
        "patches_mean": int(arr.mean()),
        "patches_max": int(arr.max()),
        "patches_total": int(arr.sum()),
        "gib": round(float(arr.sum()) * cohort.dim * 4 / 2**30, 2),
        "write_s": round(time.perf_counter() - start, 1),
    }


def patient_feature_files(root: Path, cancer: str = TARGET) -> dict[str, list[Path]]:
    """Each patient's feature files (one a slide) of ``cancer`` in the project at ``root``."""
    from steph.config import load_project
    from steph.data import load_cohort

    layout, config = load_project(root)
    cohort = load_cohort(layout, config, cancer)
    return {
        pid: [layout.features(config.encoder, sid, cancer=cancer) for sid in patient.slide_ids]
        for pid, patient in cohort.patients.items()
    }


def target_feature_files(root: Path) -> list[Path]:
    """The feature files of the target's slides in the project at ``root``."""
    return [path for files in patient_feature_files(root).values() for path in files]


PYCACHE = Path(tempfile.gettempdir()) / "stephctl-bench-pycache"
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(PYCACHE),
}
"""Environment of every measured process (see the module docstring)."""
WARM_IMPORTS = (
    "import torch, h5py, stephctl.main, steph.pipeline.train_source, steph.pipeline.merge, "
    "steph.merging, steph.training.loop, steph.theta0"
)


def warm_bytecode() -> None:
    """Compile every module the measured processes import into :data:`PYCACHE` (once)."""
    subprocess.run([sys.executable, "-c", WARM_IMPORTS], check=True, cwd=ROOT, env=ENV)


CUDA_STAGE = (
    "import atexit, json, sys, torch\n"
    "def _peak():\n"
    "    print(json.dumps({'peak_gpu_gb': round(torch.cuda.max_memory_allocated() / 2**30, 3)}))\n"
    "atexit.register(_peak)\n"
    "from stephctl.main import main\n"
    "sys.argv[0] = 'stephctl'\n"
    "main()\n"
)
"""A stage process on CUDA: ``stephctl`` itself, printing its peak GPU memory at exit."""


def stephctl(root: Path, *args: str) -> list[str]:
    if DEVICE.startswith("cuda"):
        return [sys.executable, "-c", CUDA_STAGE, "-p", str(root), *args]
    return [sys.executable, "-m", "stephctl", "-p", str(root), *args]


def measure_rss(cmd: list[str]) -> dict[str, Any]:
    """Like :func:`measure`, with the process's own peak RSS (``os.wait4`` on its pid)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
    }
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if last.startswith("{"):
        result.update(json.loads(last))
    return result


def traced(cmd: list[str], out: Path) -> list[str]:
    """The Python command line ``cmd`` (``python -m ...`` or ``python -c ...``) under
    :mod:`benchmarks.tracing` (cProfile and a sampler of RSS and place), writing ``out.pstats``
    and ``out.samples.tsv``."""
    return [cmd[0], "-m", "benchmarks.tracing", str(out), *cmd[1:]]


def profile(commands: dict[str, list[str]], names: tuple[str, ...], out_dir: Path) -> dict[str, Any]:
    """One more run of each of ``names`` after the race, traced (:func:`traced`): in ``out_dir``,
    ``NAME.pstats``, ``NAME.samples.tsv`` and ``NAME.txt``: the timeline of the process (where
    its main thread was, for how long, the cores busy and the largest RSS meanwhile; then the
    seconds and busy cores of each place over the run), the 60 functions with the most
    cumulative time, then the 30 with the most own time. Where a process's wall time and memory
    go outside its arithmetic (imports, reading, waits on the GPU) shows there; the figures of
    the race are not affected."""
    import io
    import pstats

    from benchmarks.tracing import phases

    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    for name in names:
        out = out_dir / name
        measured = measure_rss(traced(commands[name], out))
        text = io.StringIO()
        text.write(phases(Path(f"{out}.samples.tsv")) + "\n")
        table = pstats.Stats(f"{out}.pstats", stream=text)
        table.sort_stats("cumulative").print_stats(60)
        table.sort_stats("tottime").print_stats(30)
        (out_dir / f"{name}.txt").write_text(text.getvalue())
        result[name] = measured
    return result


def worker(mode: str, root: Path, stage: str, epochs: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.realscale", mode, str(root), stage, str(epochs)]


def race(commands: dict[str, list[str]], rounds: int) -> dict[str, Any]:
    """Run the commands in alternating order for ``rounds``; keep every run and the best."""
    warm_bytecode()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runs[name].append(measure_rss(commands[name]))
    best = {name: min(v, key=lambda m: m["cpu_s"]) for name, v in runs.items()}
    return {"runs": runs, "best": best}


def ratios(best: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Wall-time ratios, and the same in CPU seconds (user + sys: steadier on a shared machine,
    where other jobs' load inflates wall time); the bare figure is its timed compute only.

    ``stage_over_bare_process_*`` compare the stage with the bare worker's whole process, and
    ``bare_fixed_*`` is what that process spends outside its compute (interpreter and torch
    start-up, reading the features): a cost no process that computes on these bags avoids, which
    the ``stage / bare`` target of 1.10 leaves no room for on short runs (docs/benchmarks.md)."""
    stage, one_bag, bare = best["stage"], best["one_bag"], best["bare"]
    return {
        "stage_over_bare_wall": round(stage["wall_s"] / bare["compute_s"], 3),
        "stage_over_bare_cpu": round(stage["cpu_s"] / bare["compute_cpu_s"], 3),
        "stage_over_one_bag_wall": round(stage["wall_s"] / one_bag["wall_s"], 3),
        "stage_over_one_bag_cpu": round(stage["cpu_s"] / one_bag["cpu_s"], 3),
        "stage_over_one_bag_peak_rss": round(stage["peak_rss_gb"] / one_bag["peak_rss_gb"], 3),
        "one_bag_over_bare_cpu": round(one_bag["cpu_s"] / bare["compute_cpu_s"], 3),
        # The floor of any process: the bare worker whole (start-up, reading, its compute).
        "stage_over_bare_process_wall": round(stage["wall_s"] / bare["wall_s"], 3),
        "stage_over_bare_process_cpu": round(stage["cpu_s"] / bare["cpu_s"], 3),
        "bare_fixed_wall_s": round(bare["wall_s"] - bare["compute_s"], 2),
        "bare_fixed_cpu_s": round(bare["cpu_s"] - bare["compute_cpu_s"], 2),
    }


def targets_met(r: dict[str, float], epochs: int) -> dict[str, bool]:
    """Issue 18's targets for a stage row's ``ratios`` (runs of at least 4 epochs)."""
    return {
        "stage_over_bare<=1.10 (wall)": r["stage_over_bare_wall"] <= 1.10,
        "stage_over_bare<=1.10 (cpu)": r["stage_over_bare_cpu"] <= 1.10,
        "stage_over_one_bag<=1.0 (wall)": r["stage_over_one_bag_wall"] <= 1.0,
        "stage_over_one_bag<=1.0 (cpu)": r["stage_over_one_bag_cpu"] <= 1.0,
        "stage_over_one_bag_peak_rss<=1.0": r["stage_over_one_bag_peak_rss"] <= 1.0,
        "epochs>=4": epochs >= 4,
    }


def per_patch(row: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per real patch of the bare compute: training (forward + backward + step, per
    patch and epoch) and prediction (one forward), over the patches the worker actually ran."""
    bare = row["best"]["bare"]
    return {
        "train_cpu_s_per_patch_epoch": bare["train_compute_cpu_s"] / bare["train_patches"],
        "predict_cpu_s_per_patch": (bare["compute_cpu_s"] - bare["train_compute_cpu_s"])
        / bare["predict_patches"],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------------- workers --
def _setup(root: Path, stage: str, epochs: int) -> tuple[Any, ...]:
    import torch

    from steph.config import load_project
    from steph.data import load_cohort, load_split, open_bags
    from steph.models.abmil import create_abmil
    from steph.runtime import seed_everything
    from steph.theta0 import load_theta0
    from steph.training.loop import FitSettings

    layout, config = load_project(root, {"train.epochs": epochs, "train.device": DEVICE})
    cohort = load_cohort(layout, config, TARGET)
    split = load_split(layout, cohort, FOLD)
    bags = open_bags(layout, config, cohort, [*split.train, *split.test])
    train = cohort.targets(split.train, config.model)
    settings = FitSettings.from_train(config.train)
    theta0 = load_theta0(layout, model=config.model)
    seed_everything(settings.seed)
    if DETERMINISTIC:
        from steph.runtime import set_deterministic

        set_deterministic(True)
    if stage == "train":
        model = create_abmil(bags.dim, config.model)
        model.load_state_dict(theta0.state)
    else:
        from steph.config import MergeConfig
        from steph.merging import MERGE_METHODS, MergeContext
        from steph.merging.inputs import load_inputs

        inputs = load_inputs(layout, TARGET, FOLD, SOURCES, 0, theta0)
        ctx = MergeContext(
            target=TARGET,
            fold=FOLD,
            theta0=inputs.theta0.state,
            target_vector=inputs.target_vector,
            source_names=inputs.source_names,
            source_vectors=inputs.source_vectors,
            config=MergeConfig(sources=list(SOURCES), options={"top_k": 2}),
            model_config=config.model,
            dim_in=bags.dim,
            device=torch.device(DEVICE),
            seed=settings.seed,
            fit_settings=settings,
        )
        model = MERGE_METHODS.get("steph").build(ctx)
    return model, bags, train, split, settings


def _step_objects(model: Any, settings: Any, steps: int) -> tuple[Any, Any]:
    """The reference's optimiser: ``torch.optim.AdamW`` (decay on >= 2-d weights) and a
    ``LambdaLR`` with the protocol's warm-up + cosine factor. stephctl runs its own AdamW with
    the same updates (:mod:`steph.training.optim`; torch's imports TorchDynamo when built)."""
    import functools

    import torch

    from steph.training.optim import build_optimizer, warmup_cosine

    groups = build_optimizer(model.named_parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    optimizer = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups.param_groups],
        lr=settings.lr,
    )
    warmup = math.floor(settings.warmup_epochs * steps)
    factor = functools.partial(warmup_cosine, warmup_steps=warmup, total_steps=settings.epochs * steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run_worker(mode: str, root: Path, stage: str, epochs: int) -> dict[str, Any]:
    """``one_bag`` or ``bare`` (see the module docstring)."""
    import torch

    from steph.config import load_project
    from steph.models import flops
    from steph.models.dropout import bernoulli_masks
    from steph.survival import surv_labels, surv_mle_from_logits, surv_mle_loss
    from steph.training.batching import epoch_batches
    from steph.training.loop import as_output

    model, bags, train, split, settings = _setup(root, stage, epochs)
    shape = load_project(root)[1].model
    widths = flops.Widths(bags.dim, shape.dim_emb, shape.dim_attn, shape.time_bins)

    def step_flops(k: int) -> int:
        if stage == "train":
            return flops.abmil_step(k, widths)
        return flops.steph_step(k, widths, len(SOURCES))

    def forward_flops(k: int) -> int:
        if stage == "train":
            return flops.abmil_forward(k, widths)
        return flops.steph_forward(k, widths, len(SOURCES))

    counted = {"train": 0, "predict": 0}
    device = torch.device(DEVICE)
    model.to(device)
    steps = len(train) // settings.batch_size
    optimizer, scheduler = _step_objects(model, settings, steps)
    generator = torch.Generator().manual_seed(settings.seed)
    compute = cpu = 0.0
    seen = {"train": 0, "predict": 0}
    bag_count = {"train": 0, "predict": 0}
    for _ in range(settings.epochs):
        model.train()
        for batch in epoch_batches(len(train), settings.batch_size, generator):
            index = torch.tensor(batch)
            y, e = train.bins[index], train.events[index]
            xs = [bags.get(train.ids[i]).unsqueeze(0) for i in batch]
            seen["train"] += sum(int(x.shape[1]) for x in xs)
            bag_count["train"] += len(xs)
            counted["train"] += sum(step_flops(int(x.shape[1])) for x in xs)
            # the bare compute's per-bag SurvMLE labels, built as the stage's loader builds them
            labels = [
                surv_labels(
                    y[j : j + 1].to(device),
                    e[j : j + 1].to(device),
                    shape.time_bins,
                    alpha=settings.alpha,
                    eps=settings.eps,
                    scale=1.0 / len(xs),
                )
                for j in range(len(xs))
            ]
            _sync()
            start, cpu0 = time.perf_counter(), time.process_time()
            xs = [x.to(device) for x in xs]
            y, e = y.to(device), e.to(device)
            optimizer.zero_grad(set_to_none=True)
            if mode == "one_bag":  # the reference: 16 forwards, one loss, one backward
                with bernoulli_masks():  # the reference's nn.Dropout
                    outs = [as_output(model(x)) for x in xs]
                loss = surv_mle_loss(torch.sigmoid(torch.cat([o.logits for o in outs])), y, e)
                if outs[0].aux_loss is not None:
                    loss = loss + torch.stack([o.aux_loss for o in outs]).mean()  # type: ignore[misc]
                loss.backward()
            else:  # bare: every bag alone, its backward right away, with the stage's SurvMLE
                for j, x in enumerate(xs):
                    out = as_output(model(x))
                    loss = surv_mle_from_logits(out.logits.float(), labels[j])
                    if out.aux_loss is not None:
                        loss = loss + out.aux_loss / len(xs)
                    loss.backward()
            optimizer.step()
            scheduler.step()
            _sync()
            compute += time.perf_counter() - start
            cpu += time.process_time() - cpu0
    train_s, train_cpu = compute, cpu
    model.eval()
    with torch.no_grad():
        for pid in [*split.test, *split.train]:
            x = bags.get(pid).unsqueeze(0)
            seen["predict"] += int(x.shape[1])
            bag_count["predict"] += 1
            counted["predict"] += forward_flops(int(x.shape[1]))
            _sync()
            start, cpu0 = time.perf_counter(), time.process_time()
            torch.sigmoid(as_output(model(x.to(device))).logits).cpu()
            compute += time.perf_counter() - start
            cpu += time.process_time() - cpu0
    return {
        "compute_s": round(compute, 2),
        "compute_cpu_s": round(cpu, 2),
        "train_compute_s": round(train_s, 2),
        "train_compute_cpu_s": round(train_cpu, 2),
        "train_patches": seen["train"],
        "predict_patches": seen["predict"],
        "train_bags": bag_count["train"],
        "predict_bags": bag_count["predict"],
        "dim": bags.dim,
        "analytic_flops": counted["train"] + counted["predict"],
        "train_analytic_flops": counted["train"],
        **_gpu_peak(),
    }


def run_huge(root: Path, stage: str, patches: int, dim: int, budget: int) -> dict[str, Any]:
    """One optimiser step (train-source's ABMIL or STEPH top-2) on a single ``patches``-long bag,
    through :func:`steph.training.loop.fit`, then its prediction; ``budget`` as
    ``train.max_bag_batch_patches`` (0 = automatic, -1 = the whole bag at once)."""
    import torch

    from steph.config import MergeConfig, ModelConfig
    from steph.data import BagStore
    from steph.merging import MERGE_METHODS, MergeContext
    from steph.models.abmil import create_abmil
    from steph.survival import SurvivalTargets
    from steph.training.loop import FitSettings, fit, predict

    torch.manual_seed(0)
    bag = torch.randn(patches, dim)
    store = BagStore.in_memory({"P": bag})
    data = SurvivalTargets(["P"], torch.tensor([900.0]), torch.tensor([1]), torch.tensor([2]))
    settings = FitSettings(epochs=1, batch_size=1, max_batch_patches=budget)
    model_config = ModelConfig()
    if stage == "train":
        model: Any = create_abmil(dim, model_config)
    else:
        theta0 = {k: v.detach() for k, v in create_abmil(dim, model_config).state_dict().items()}
        vectors = [{k: 0.01 * torch.randn_like(v) for k, v in theta0.items()} for _ in range(3)]
        ctx = MergeContext(
            target=TARGET,
            fold=0,
            theta0=theta0,
            target_vector=vectors[0],
            source_names=SOURCES,
            source_vectors=tuple(vectors[1:]),
            config=MergeConfig(options={"top_k": 2}),
            model_config=model_config,
            dim_in=dim,
            device=torch.device(DEVICE),
            seed=0,
            fit_settings=settings,
        )
        model = MERGE_METHODS.get("steph").build(ctx)
    start = time.perf_counter()
    losses = fit(model, data, store, settings, device=torch.device(DEVICE))
    hazards, _ = predict(model, ["P"], store, device=torch.device(DEVICE), max_batch_patches=budget)
    _sync()
    return {
        **_gpu_peak(),
        "seconds": round(time.perf_counter() - start, 2),
        "finite": bool(math.isfinite(losses[0]) and torch.isfinite(hazards).all()),
        "input_gb": round(bag.numel() * 4 / 2**30, 3),
    }


if __name__ == "__main__":
    mode, root_arg, stage_arg, *rest = sys.argv[1:]
    if mode == "huge":
        result = run_huge(Path(root_arg), stage_arg, *(int(v) for v in rest))  # type: ignore[call-arg]
    else:
        result = run_worker(mode, Path(root_arg), stage_arg, int(rest[0]))
    print(json.dumps(result))
