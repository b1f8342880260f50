"""Host overhead per bag: a training step of a tiny model, where the arithmetic is about zero.

With D = 16 and widths 8, a step's time is what Python, the operator dispatcher and the kernels'
fixed costs take. It is
measured for train-source (ABMIL), STEPH (top-2 of 4 sources), ROUPKT and AdaMerging, with 16 and
64 bags of 8-40 patches per step, on three execution paths over the same CPU tensors:

- ``packs``: what CUDA runs now: the step's bags laid end to end in packs up to the patch budget
  (one pack here), per-bag encoders as grouped products;
- ``padded``: what CUDA ran before: length-sorted padded chunks (10 % padding slack);
- ``alone``: every bag alone (the CPU path of models that do not pack; of STEPH and
  hypernetwork AdaMerging until they packed on CPU too).

Each figure is the median over ``--steps`` steps, per bag, in microseconds of this thread's CPU
time (one intra-op thread, so the CPU time is the whole cost and holds on a busy machine) and of
wall time, split as the CUDA path splits the work between two threads:

- ``step``: what the training thread does per step, forward + SurvMLE + backward
  (``backward_chunks``) and the optimiser's update (``fit``'s AdamW; its share apart as
  ``optimizer_cpu_us_per_bag``);
- ``loader``: building the step's chunks, packs and SurvMLE labels (``load_chunks``), which on
  CUDA the loader thread does while the previous step computes (``steph.training.staging``; on
  CPU the training thread builds them, see there);

and the operators dispatched per step. The steps draw their bags from a pool of training bags
inside a bag memo, as ``fit`` does, after one untimed epoch over the pool: ROUPKT's frozen
experts are then read from the memo, as in every epoch after a fit's first. Target: under 50 µs per bag on the training thread of
the packs path (issue: the protocol on one GPU). On CPU tensors every operator also runs its
kernel (a 16-bag pack is about 400 patches: a tanh over them costs about 10 µs, a grouped
product 2 µs per bag), so these figures bound the host's own cost from above.

With ``--device cuda`` the figures are those of the card: the packs path only (what CUDA runs),
bf16 autocast where the card has it (as ``train.precision: auto``), each step's chunks staged
on the device beforehand (the loader's work, not timed), then ``--steps`` steps queued back to
back and the device synchronised once at the end: ``us_per_bag`` is wall time (the longer of
the host's time and the kernels'), ``cpu_us_per_bag`` the training thread's CPU time (the
host's own cost: Python, dispatch, kernel launches), and ``operators_per_step`` counts what
CUDA dispatches (one fused dropout, for instance, where CPU tensors take several).

``split`` gives, per model, the step's cost as a fixed part per step and a part per bag, from
the figures at 16 and 64 bags, and the fewest units of 16 bags (a target's folds, say) one step
would have to hold to bring the per-bag figure under the target (:func:`split_step`): the part
per bag is what more bags per step cannot amortise.

    python -m benchmarks.bench_host [--steps 100] [--device cpu|cuda] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from steph.models.dispatch import DispatchCounter
from steph.synthetic.models import TINY as MODEL
from steph.synthetic.models import tiny_model, unit_splits
from steph.training.batching import load_chunks
from steph.training.loop import FitSettings, backward_chunks, label_spec
from steph.training.memo import bag_memo
from steph.training.optim import AdamW, build_optimizer

DIM = 16
PATHS = {"packs": (True, True), "padded": (True, False), "alone": (False, False)}
"""path -> (share, pack) of :func:`steph.training.batching.load_chunks`."""


def build(name: str) -> torch.nn.Module:
    """A tiny model of ``name`` (train-source or a merge method, STEPH and ROUPKT top-2 of 4
    sources) over random task vectors."""
    return tiny_model(name, DIM, MODEL, options={"top_k": 2})


POOL_BATCHES = 4
"""The training bags: this many batches' worth, drawn from epoch after epoch as ``fit`` does."""
BUDGET = 1 << 20
"""Patches per pack and forward: every step's bags in one pack."""


def _pool(n_bags: int) -> tuple[torch.Generator, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The pool of training bags for steps of ``n_bags`` (8-40 patches each) and their bins and
    events, and the generator that then draws the steps' batches (:func:`_batches`)."""
    g = torch.Generator().manual_seed(n_bags)
    total = n_bags * POOL_BATCHES
    bags = [torch.randn(k, DIM, generator=g) for k in torch.randint(8, 41, (total,), generator=g).tolist()]
    return g, bags, torch.randint(0, 32, (total,), generator=g), torch.arange(total) % 2


def _batches(g: torch.Generator, n_bags: int, steps: int) -> list[list[int]]:
    """The warm-up epoch over the pool in order, then ``steps`` batches drawn from it."""
    total = n_bags * POOL_BATCHES
    first = [list(range(i * n_bags, (i + 1) * n_bags)) for i in range(POOL_BATCHES)]
    return first + [torch.randperm(total, generator=g)[:n_bags].tolist() for _ in range(steps)]


def _per_bag(seconds: float, n_bags: int) -> float:
    return round(seconds / n_bags * 1e6, 1)


def measure(model: torch.nn.Module, n_bags: int, path: str, steps: int) -> dict[str, float]:
    """Per-bag figures of ``steps`` training steps of ``n_bags`` bags drawn from a pool of
    training bags, inside a :func:`~steph.training.memo.bag_memo` as in ``fit``; a first pass over
    the pool (one epoch, not timed) warms up and fills the memo (ROUPKT's frozen experts)."""
    share, pack = PATHS[path]
    g, bags, bins, events = _pool(n_bags)
    settings = FitSettings(epochs=1)
    labels = label_spec(model, settings)
    times, cpu, loader, update = [], [], [], []
    model.train()
    optimizer = _optimizer(model)
    with bag_memo(len(bags)):
        for step, batch in enumerate(_batches(g, n_bags, steps)):
            index = torch.tensor(batch)
            loaded = [bags[i] for i in batch]
            optimizer.zero_grad(set_to_none=True)  # as every step of fit: gradients are stolen, not added
            cpu0 = time.thread_time()
            parts = load_chunks(
                loaded, bins[index], events[index], BUDGET, share, pack, BUDGET, batch, labels
            )
            start, cpu1 = time.perf_counter(), time.thread_time()
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=BUDGET)
            cpu2 = time.thread_time()
            optimizer.step()
            if step >= POOL_BATCHES:
                times.append(time.perf_counter() - start)
                cpu.append(time.thread_time() - cpu1)
                update.append(time.thread_time() - cpu2)
                loader.append(cpu1 - cpu0)
        optimizer.zero_grad(set_to_none=True)
        with DispatchCounter() as counter:
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=BUDGET)
            optimizer.step()
    return {
        "us_per_bag": _per_bag(statistics.median(times), n_bags),
        "cpu_us_per_bag": _per_bag(statistics.median(cpu), n_bags),
        "optimizer_cpu_us_per_bag": _per_bag(statistics.median(update), n_bags),
        "loader_cpu_us_per_bag": _per_bag(statistics.median(loader), n_bags),
        "operators_per_step": counter.count,
    }


def _optimizer(model: torch.nn.Module) -> AdamW:
    """``fit``'s optimiser over the model's trainable parameters (the protocol's lr and decay)."""
    return build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_device(model: torch.nn.Module, n_bags: int, steps: int, device: torch.device) -> dict[str, Any]:
    """Per-bag figures of ``steps`` packed training steps on ``device`` (CUDA), their chunks
    staged beforehand; one synchronisation after the warm-up and one after the timed steps."""
    from steph.training.precision import resolve_precision

    g, bags, bins, events = _pool(n_bags)
    settings = FitSettings(epochs=1)
    labels = label_spec(model, settings)
    precision = resolve_precision("auto", device)
    on_device = [b.to(device) for b in bags]
    staged = []
    for batch in _batches(g, n_bags, steps):
        index = torch.tensor(batch)
        staged.append(
            load_chunks(
                [on_device[i] for i in batch],
                bins[index].to(device),
                events[index].to(device),
                BUDGET,
                True,
                True,
                BUDGET,
                batch,
                labels,
            )
        )
    model.to(device).train()
    optimizer = _optimizer(model)

    def step(parts: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        backward_chunks(model, parts, settings, device=device, budget=BUDGET, precision=precision)
        optimizer.step()

    with bag_memo(len(bags)):
        for parts in staged[:POOL_BATCHES]:
            step(parts)
        _sync(device)
        start, cpu0 = time.perf_counter(), time.thread_time()
        for parts in staged[POOL_BATCHES:]:
            step(parts)
        cpu = time.thread_time() - cpu0
        _sync(device)
        wall = time.perf_counter() - start
        with DispatchCounter() as counter:
            step(staged[-1])
    return {
        "us_per_bag": _per_bag(wall / steps, n_bags),
        "cpu_us_per_bag": _per_bag(cpu / steps, n_bags),
        "operators_per_step": counter.count,
        "precision": precision,
    }


STACKED = ("steph", "roupkt", "adamerging")
"""The models whose folds train together (``train.stack_units``, :mod:`steph.training.stacked`)."""
UNITS = (1, 2, 5)
"""Units a stacked step holds: one (the engine's own cost), two, and a target's five folds."""


def measure_stacked(name: str, units: int, n_bags: int, steps: int, device: torch.device) -> dict[str, Any]:
    """Per-bag figures of ``steps`` steps of ``units`` units of ``name`` trained together
    (:func:`~steph.training.stacked.fit_stacked`'s step: each unit's ``n_bags`` bags, unit after
    unit, in one pack), each step's pack staged beforehand (the loader's work), after one epoch
    over the pool that fills the bag memo (ROUPKT's frozen experts), as :func:`measure`. On CPU tensors
    the median step's CPU time of this thread; on a device the wall time of the queued steps,
    as :func:`measure_device`."""
    from steph.merging import MERGE_METHODS
    from steph.models.dropout import UnitStreams
    from steph.training.precision import resolve_precision
    from steph.training.stacked import backward_step, load_step
    from steph.training.staging import DeviceStager

    model = MERGE_METHODS.get(name).stack([build(name) for _ in range(units)])
    assert model is not None
    g, bags, bins, events = _pool(n_bags * units)
    store, data = unit_splits(bags, bins, events, units)
    per = len(data[0])
    spec = label_spec(model, FitSettings(epochs=1))
    assert spec is not None
    stager = DeviceStager(device)
    staged = []
    for k in range(POOL_BATCHES + steps):  # an epoch over the pool in order (the memo's), then drawn
        if k < POOL_BATCHES:
            batches = [list(range(k * n_bags, (k + 1) * n_bags))] * units
        else:
            batches = [torch.randperm(per, generator=g)[:n_bags].tolist() for _ in range(units)]
        staged.append(stager.claim(load_step(store, data, batches, stager, spec, BUDGET))[0])
    model.to(device).train()
    optimizer = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5, stacked=True)
    streams, precision = UnitStreams(units, device), resolve_precision("auto", device)

    def step(part: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        backward_step(model, part, units, streams, precision, BUDGET, device)
        optimizer.step()

    with bag_memo(len(bags)):  # ROUPKT's frozen experts: computed in the first epoch, then read
        for part in staged[:POOL_BATCHES]:
            step(part)
        _sync(device)
        times = []
        start = time.perf_counter()
        for part in staged[POOL_BATCHES:]:
            cpu0 = time.thread_time()
            step(part)
            times.append(time.thread_time() - cpu0)
        _sync(device)
        wall = time.perf_counter() - start
        with DispatchCounter() as counter:
            step(staged[-1])
    bags_per_step = n_bags * units
    figures = {
        "cpu_us_per_bag": _per_bag(statistics.median(times), bags_per_step),
        "operators_per_step": counter.count,
    }
    if device.type == "cuda":
        figures.update(us_per_bag=_per_bag(wall / steps, bags_per_step), precision=precision)
    return figures


TARGET_US = 50.0
"""The issue's target: under this many µs per bag at 16 bags a step."""


def split_step(per_bag_16: float, per_bag_64: float, target: float = TARGET_US) -> dict[str, Any]:
    """A step's cost as a fixed part and a part per bag, from its per-bag figures ``t16`` and
    ``t64`` at 16 and 64 bags (``n t(n) = fixed + n marginal``):

        marginal = (64 t64 - 16 t16) / 48,   fixed = 16 t16 - 16 marginal

    and ``units_for_target``, the fewest units of 16 bags (a target's folds, say) that one step
    would have to hold for ``fixed / (16 U) + marginal`` to fall under ``target``: 1 where one
    unit does, None where ``marginal`` alone reaches it (no number of bags a step meets it).

    >>> split_step(60.0, 30.0)
    {'fixed_us_per_step': 640.0, 'marginal_us_per_bag': 20.0, 'units_for_target': 2}
    """
    marginal = (64 * per_bag_64 - 16 * per_bag_16) / 48
    fixed = 16 * per_bag_16 - 16 * marginal
    units: int | None = None
    if marginal < target:
        units = max(1, math.floor(fixed / (16 * (target - marginal))) + 1)
    return {
        "fixed_us_per_step": round(fixed, 1),
        "marginal_us_per_bag": round(marginal, 1),
        "units_for_target": units,
    }


def run(quick: bool = False, steps: int | None = None, device: str = "cpu") -> dict[str, Any]:
    steps = steps or (5 if quick else 100)
    torch.set_num_threads(1)  # host overhead, not parallel arithmetic
    result: dict[str, Any] = {
        "dim": DIM,
        "widths": [MODEL.dim_emb, MODEL.dim_attn],
        "steps": steps,
        "device": device,
    }
    where = torch.device(device)
    if where.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(where)
    for name in ("train-source", "steph", "roupkt", "adamerging"):
        model = build(name)
        if where.type == "cuda":
            result[name] = {f"packs_{n}": measure_device(model, n, steps, where) for n in (16, 64)}
            continue
        result[name] = {f"{path}_{n}": measure(model, n, path, steps) for path in PATHS for n in (16, 64)}
    # CPU tensors: the training thread's CPU time; a device: the wall time of the queued steps
    figure = "us_per_bag" if where.type == "cuda" else "cpu_us_per_bag"
    names = ("train-source", "steph", "roupkt", "adamerging")
    result["target_met"] = {
        name: all(result[name][f"packs_{n}"][figure] < TARGET_US for n in (16, 64)) for name in names
    }
    # where the figure at 16 bags goes: a fixed cost per step, and a cost per bag that no
    # number of bags per step removes (on CPU tensors, kernels that run bag by bag or patch by patch)
    result["split"] = {
        name: split_step(result[name]["packs_16"][figure], result[name]["packs_64"][figure]) for name in names
    }
    # a target's folds trained together (train.stack_units): 16 bags of each unit per step
    result["stacked"] = {
        name: {f"units_{u}": measure_stacked(name, u, 16, steps, where) for u in UNITS} for name in STACKED
    }
    result["stacked_target_met"] = {
        name: {key: row[figure] < TARGET_US for key, row in result["stacked"][name].items()}
        for name in STACKED
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu (default: CPU tensors, every path) or cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(steps=args.steps, device=args.device)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
