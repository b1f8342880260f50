"""Speed of STEPH's merge at real scale (the stage against the one-bag loop and the bare compute),
plus kernel figures: training overhead, batched vs per-bag merging, inference vs ROUPKT.

``stage`` (default; see ``benchmarks/realscale.py``): ``stephctl merge --method steph --top-k 2``
as users run it (whole process, sources trained for 0 epochs so the task vectors exist; the
figures do not depend on their values), the reference's one-bag-per-forward loop on the same
bags and the bare unpadded compute, on heavy-tailed bags (log-normal around 1,500 patches,
150..12,000, D = 1536) and, as a second row, bags of 1,500 patches. Targets (>= 4 epochs): stage
/ bare <= 1.10; stage / one-bag <= 1.0 in wall time and in peak RSS.

Kernel figures (``--kernels``; each pair measured side by side in one process: one warm-up each, then alternating
repeats, best CPU time kept, best wall time reported too):

1. ``epoch``: one training epoch through :func:`steph.training.loop.fit` (bag store, padding,
   background loading, loss, optimiser, schedule) against the bare forward + backward + step of
   the same model on the same batches already padded in memory. Target ratio <= 1.3.
2. ``per_bag``: the batched STEPH forward + backward (one ``[B, 1+m] @ [1+m, P]`` merge and
   batched matmuls) against the reference's strategy, one bag at a time: merge
   ``theta0 + sum_S w tau_s + sum_S w lambda (tau_t - tau_s)`` tensor by tensor and run the
   ABMIL with ``torch.func.functional_call``. Same outputs (max abs difference reported),
   speed-up at bag sizes 256, 2,000 and 10,000.
3. ``merge_step``: the merge alone, masked-coefficient matmul over all m sources (what STEPH
   uses) against gathering the k selected source vectors per bag (``[B, k, P]``) and a bmm.
4. ``inference``: eval-mode prediction of one patient at a time, STEPH against ROUPKT with 12
   sources (13 frozen ABMIL encoders + router). Target speed-up >= 5.
5. ``merge_split``: the merged encoders' 8 tensors cut out of ``[B, P]`` and back-propagated, one
   ``split_with_sizes`` (what runs) against a slice per tensor (what ran before), B = 1 (a bag
   alone, the CPU path) and 16 (a pack).
6. ``dropout``: one ABMIL training step (forward, backward, AdamW) of a 2,000-patch bag with
   stephctl's dropout masks (``steph.models.dropout``: four 16-bit uniforms per 64-bit random
   word), with torch's (one Bernoulli draw per element, ``bernoulli_masks``) and with no
   dropout; the cost of dropout is each figure minus the last.

``--methods roupkt adamerging``: after the race, one ``stephctl merge --method M`` process of
each on the same project (2 sources, ROUPKT top-2, the same epochs), with its analytic FLOPs over the
bags the bare worker ran (:mod:`steph.models.flops`), its achieved rate and the fractions of the
measured peak.

Run ``python -m benchmarks.bench_merge [--quick] [--epochs 4] [--no-equal] [--kernels]
[--methods roupkt adamerging] [--threads N] [--profile DIR]``; prints JSON. ``--profile DIR``: after the race, one more run
of the stage and of the one-bag loop traced (cProfile and an RSS timeline: ``DIR/stage.txt``,
``DIR/one_bag.txt``; see ``benchmarks/tracing.py``). Full mode uses D = 1536 (UNI2-h). On a shared machine
``--threads 1`` gives much steadier kernel numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from benchmarks import realscale as rs
from steph.config import ModelConfig
from steph.data import BagStore
from steph.merging.roupkt import RouPKTModel
from steph.merging.steph_method import StephModel, StephSettings
from steph.models import flops
from steph.models.abmil import ENCODER_KEYS, create_abmil
from steph.models.dropout import bernoulli_masks
from steph.survival import SurvivalTargets, surv_labels, surv_mle_from_logits
from steph.task_vectors import unflatten
from steph.training.batching import epoch_batches, pad_bags
from steph.training.loop import FitSettings, ModelOutput, fit
from steph.training.optim import build_optimizer

MODEL = ModelConfig()
N_SOURCES = 12
QUICK = rs.Cohort(patients=48, source_patients=24, dim=384, median=600, clip=(60, 4000), equal=600)


def method_flops(method: str, w: flops.Widths, sources: int) -> tuple[Callable[[int], int], ...]:
    """``(train step, once per training patient, prediction)`` analytic FLOPs of one bag of k
    patches, for the built-in methods ``--methods`` can time (their default settings)."""
    if method == "roupkt":
        return (
            lambda k: flops.roupkt_step(k, w, sources, experts=False),
            lambda k: flops.roupkt_experts(k, w, sources),
            lambda k: flops.roupkt_forward(k, w, sources),
        )
    if method == "adamerging":
        return (
            lambda k: flops.adamerging_step(k, w, sources, 16),
            lambda k: 0,
            lambda k: flops.adamerging_forward(k, w, sources, 16),
        )
    if method == "steph":
        return (
            lambda k: flops.steph_step(k, w, sources),
            lambda k: 0,
            lambda k: flops.steph_forward(k, w, sources),
        )
    raise ValueError(f"no analytic FLOPs for method {method!r} (steph, roupkt, adamerging)")


def affine_total(cost: Callable[[int], int], bags: int, patches: int) -> int:
    """``sum_i cost(k_i)`` over ``bags`` bags of ``patches`` patches in all, for a cost affine in
    k (every model here: a per-patch part and a per-bag part)."""
    per_patch = cost(2) - cost(1)
    return bags * (cost(1) - per_patch) + per_patch * patches


def method_rows(
    root: Path, methods: list[str], bare: dict[str, Any], peak: dict[str, float], epochs: int
) -> dict[str, Any]:
    """One ``stephctl merge --method M`` process per method on the race's project, with its
    analytic FLOPs over the bags the bare worker ran (the same training bags, epochs and
    predictions), the achieved rate and its fractions of the peak."""
    from steph.config import load_project

    shape = load_project(root)[1].model
    w = flops.Widths(int(bare["dim"]), shape.dim_emb, shape.dim_attn, shape.time_bins)
    rows: dict[str, Any] = {}
    for method in methods:
        step, once, forward = method_flops(method, w, len(rs.SOURCES))
        total = (
            affine_total(step, bare["train_bags"], bare["train_patches"])
            + affine_total(once, bare["train_bags"] // epochs, bare["train_patches"] // epochs)
            + affine_total(forward, bare["predict_bags"], bare["predict_patches"])
        )
        merge = ["merge", "--target", rs.TARGET, "--method", method, "--fold", str(rs.FOLD)]
        merge += ["--top-k", "2"] if method == "roupkt" else []
        run = rs.measure_rss(rs.stephctl(root, *merge, "--epochs", str(epochs), "--device", rs.DEVICE))
        rate = total / run["wall_s"] / 1e9
        rows[method] = {
            **run,
            "analytic_gflop": round(total / 1e9, 2),
            "stage_gflops": round(rate, 2),
            **{
                f"stage_fraction_of_{name.removesuffix('_gflops')}": round(rate / value, 4)
                for name, value in peak.items()
                if name.endswith("_gflops")
            },
        }
    return rows


def stage_row(
    cohort: rs.Cohort,
    *,
    epochs: int,
    rounds: int,
    profile: Path | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """``stephctl merge`` (STEPH top-2 over 2 sources) vs the one-bag loop vs the bare compute;
    then one stage process per other method of ``methods`` (:func:`method_rows`)."""
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        root = Path(tmp) / "project"
        shape = rs.make_project(root, cohort, sources=True)
        rs.measure_rss(
            rs.stephctl(root, "train-source", "--fold", "0", "--epochs", "0", "--device", rs.DEVICE)
        )
        rs.measure_rss(rs.stephctl(root, "task-vector", "--fold", str(rs.FOLD)))
        merge = ["merge", "--target", rs.TARGET, "--method", "steph", "--fold", str(rs.FOLD), "--top-k", "2"]
        commands = {
            "stage": rs.stephctl(root, *merge, "--epochs", str(epochs), "--device", rs.DEVICE, "--overwrite"),
            "one_bag": rs.worker("one_bag", root, "merge", epochs),
            "bare": rs.worker("bare", root, "merge", epochs),
        }
        load_before = rs.load_average()
        peak = rs.hardware_peak()
        race = rs.race(commands, rounds)
        others = method_rows(root, methods, race["best"]["bare"], peak, epochs) if methods else None
        load_after = rs.load_average()
        profiles = rs.profile(commands, ("stage", "one_bag"), profile) if profile is not None else None
    row = {
        "cohort": shape,
        "epochs": epochs,
        "rounds": rounds,
        "load_average": [load_before, load_after],
        **race,
        "ratios": rs.ratios(race["best"]),
        "peak": peak,
        "arithmetic": rs.arithmetic(race["best"], peak),
    }
    if others is not None:
        row["methods"] = others
    if profiles is not None:
        row["profile"] = profiles
    return row


def stage(
    quick: bool = False,
    *,
    epochs: int | None = None,
    rounds: int = 1,
    equal: bool | None = None,
    patients: int | None = None,
    profile: Path | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    cohort = QUICK if quick else rs.Cohort()
    if patients:
        cohort = rs.Cohort(**{**cohort.__dict__, "patients": patients})
    epochs = epochs or (2 if quick else 4)
    equal = (not quick) if equal is None else equal
    result: dict[str, Any] = {
        "heavy": stage_row(cohort, epochs=epochs, rounds=rounds, profile=profile, methods=methods)
    }
    if equal:
        result["equal"] = stage_row(rs.Cohort(**{**cohort.__dict__, "median": 0.0}), epochs=epochs, rounds=1)
    result["per_patch"] = rs.per_patch(result["heavy"])
    r = result["heavy"]["ratios"]
    result["targets_met"] = rs.targets_met(r, epochs)
    return result


def _race(repeats: int, **fns: Callable[[], Any]) -> dict[str, float]:
    """Best CPU time (``time.process_time``: every thread of this process, not other processes)
    of each function; after one warm-up each, the repeats alternate between the functions.

    CPU time rather than wall time: on a shared machine other jobs' load changes wall time by
    tens of percent from one repeat to the next, but hardly the CPU time this process needs.
    The best wall time of each is stored under ``"<name>_wall"``.
    """
    for fn in fns.values():
        fn()  # warm-up (allocator, lazy imports)
    best = dict.fromkeys(fns, float("inf"))
    wall = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            fn()
            best[name] = min(best[name], time.process_time() - cpu0)
            wall[name] = min(wall[name], time.perf_counter() - wall0)
    return {**best, **{f"{name}_wall": value for name, value in wall.items()}}


def _inputs(dim: int, seed: int = 0) -> tuple[dict, dict, list[dict]]:
    torch.manual_seed(seed)
    theta0 = {k: v.detach().clone() for k, v in create_abmil(dim, MODEL).state_dict().items()}
    tau = [{k: 0.01 * torch.randn_like(v) for k, v in theta0.items()} for _ in range(N_SOURCES + 1)]
    return theta0, tau[0], tau[1:]


def _steph(dim: int, top_k: int = 5) -> StephModel:
    theta0, tau_t, tau_s = _inputs(dim)
    settings = StephSettings(top_k=top_k)
    torch.manual_seed(1)
    return StephModel(
        theta0, tau_t, tau_s, dim_in=dim, dim_emb=512, time_bins=32, dropout=0.25, settings=settings
    )


def bench_epoch(dim: int, n_patients: int, k: int, repeats: int) -> dict[str, Any]:
    """fit() epoch vs bare forward/backward/step on pre-padded in-memory batches."""
    g = torch.Generator().manual_seed(0)
    bags = {f"P{i}": torch.randn(k - (i % 4) * (k // 8), dim, generator=g) for i in range(n_patients)}
    times = torch.linspace(100, 4000, n_patients, dtype=torch.float64)
    data = SurvivalTargets(
        list(bags), times, torch.tensor([i % 2 for i in range(n_patients)]), (times / 365).long()
    )
    store = BagStore.in_memory(bags)
    settings = FitSettings(epochs=1, batch_size=16, seed=0)
    fit_model, bare_model = _steph(dim), _steph(dim)

    def with_fit() -> None:
        fit(fit_model, data, store, settings, device=torch.device("cpu"))

    batches = epoch_batches(n_patients, 16, torch.Generator().manual_seed(0))
    bins = bare_model.pred_head.out_features
    padded = [
        (*pad_bags([bags[data.ids[i]] for i in b]), surv_labels(data.bins[b], data.events[b], bins))
        for b in batches
    ]

    def bare() -> None:
        torch.manual_seed(0)
        bare_model.train()
        optimizer = build_optimizer(list(bare_model.named_parameters()), lr=1e-4, weight_decay=1e-5)
        for x, mask, labels in padded:
            out = bare_model(x, mask)
            assert isinstance(out, ModelOutput)
            loss = surv_mle_from_logits(out.logits, labels) + out.aux_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    times = _race(repeats, fit=with_fit, bare=bare)
    t_fit, t_bare = times["fit"], times["bare"]
    return {
        "dim": dim,
        "patients": n_patients,
        "max_patches": k,
        "fit_epoch_cpu_s": round(t_fit, 3),
        "bare_epoch_cpu_s": round(t_bare, 3),
        "ratio": round(t_fit / t_bare, 3),
        "fit_epoch_wall_s": round(times["fit_wall"], 3),
        "bare_epoch_wall_s": round(times["bare_wall"], 3),
    }


def _per_bag(model: StephModel, abmil: torch.nn.Module, bags: list[torch.Tensor]) -> torch.Tensor:
    """The reference strategy: merge and run one bag at a time (functional_call)."""
    theta0 = unflatten(model.stack.base, model.stack.spec)
    tau_t, *tau_s = (unflatten(v, model.stack.spec) for v in model.stack.vectors)
    head = {"pred_head.weight": model.pred_head.weight, "pred_head.bias": model.pred_head.bias}
    outs = []
    for bag in bags:
        x = bag.unsqueeze(0)
        w, lam = model.mixing(x, None)
        chosen = w[0].detach().topk(model.settings.top_k).indices.tolist()
        params = dict(head)
        for key in ENCODER_KEYS:
            theta = theta0[key]
            for i in chosen:
                theta = theta + w[0, i] * tau_s[i][key] + w[0, i] * lam[0, i] * (tau_t[key] - tau_s[i][key])
            params[key] = theta
        outs.append(functional_call(abmil, params, (x,)))
    return torch.cat(outs)


def bench_per_bag(dim: int, sizes: tuple[int, ...], batch: int, repeats: int) -> list[dict[str, Any]]:
    """Batched STEPH vs one bag at a time, forward + backward, same parameters."""
    model = _steph(dim).eval()  # no dropout: both paths must give the same numbers
    abmil = create_abmil(dim, MODEL).eval()
    rows = []
    for k in sizes:
        g = torch.Generator().manual_seed(k)
        bags = [torch.randn(k, dim, generator=g) for _ in range(batch)]
        x, mask = pad_bags(bags)
        with torch.no_grad():
            diff = float((model(x, mask).logits - _per_bag(model, abmil, bags)).abs().max())

        def batched(x: torch.Tensor = x, mask: torch.Tensor = mask) -> None:
            model.zero_grad(set_to_none=True)
            model(x, mask).logits.sum().backward()

        def one_by_one(bags: list[torch.Tensor] = bags) -> None:
            model.zero_grad(set_to_none=True)
            _per_bag(model, abmil, bags).sum().backward()

        times = _race(repeats, batched=batched, per_bag=one_by_one)
        t_batched, t_loop = times["batched"], times["per_bag"]
        rows.append(
            {
                "bag_size": k,
                "bags": batch,
                "max_abs_diff": diff,
                "batched_cpu_s": round(t_batched, 4),
                "per_bag_cpu_s": round(t_loop, 4),
                "speedup": round(t_loop / t_batched, 2),
                "batched_wall_s": round(times["batched_wall"], 4),
                "per_bag_wall_s": round(times["per_bag_wall"], 4),
            }
        )
    return rows


def bench_merge_step(dim: int, batch: int, repeats: int) -> dict[str, Any]:
    """Merging only: masked coefficients over all m sources vs gathering the selected k."""
    model = _steph(dim)
    g = torch.Generator().manual_seed(0)
    w = torch.rand(batch, N_SOURCES, generator=g).requires_grad_()
    lam = torch.rand(batch, N_SOURCES, generator=g).requires_grad_()
    base, vectors = model.stack.base, model.stack.vectors

    def masked() -> None:
        sel = model.select(w.detach())
        flat = torch.addmm(base.unsqueeze(0), model.coefficients(w, lam, sel), vectors)
        flat.sum().backward()

    def gathered() -> None:
        index = w.detach().topk(model.settings.top_k, dim=1).indices
        wk, lk = w.gather(1, index), lam.gather(1, index)
        coef = torch.cat([(wk * lk).sum(1, keepdim=True), wk * (1 - lk)], dim=1).unsqueeze(1)
        chosen = torch.cat([vectors[:1].expand(batch, 1, -1), vectors[1:][index]], dim=1)
        flat = base + torch.bmm(coef, chosen).squeeze(1)
        flat.sum().backward()

    times = _race(repeats, masked=masked, gathered=gathered)
    t_masked, t_gather = times["masked"], times["gathered"]
    return {
        "bags": batch,
        "masked_matmul_cpu_s": round(t_masked, 4),
        "gather_cpu_s": round(t_gather, 4),
        "gather_over_masked": round(t_gather / t_masked, 2),
    }


def bench_merge_split(dim: int, batch: int, repeats: int) -> dict[str, Any]:
    """The merged encoders' 8 tensors cut out of ``theta0 + c @ vectors [B, P]`` and back-propagated:
    one ``split_with_sizes`` (``steph.task_vectors.unflatten``) against a slice per tensor, whose
    backward gives autograd one full-size, zero-filled gradient per tensor to add up."""
    model = _steph(dim)
    stack = model.stack
    g = torch.Generator().manual_seed(0)
    coef = torch.rand(batch, stack.n, generator=g).requires_grad_()
    grads = [torch.ones(batch, *shape) for _, shape in stack.spec]

    def split() -> None:
        torch.autograd.backward(list(stack.merge(coef).values()), grads)

    def slices() -> None:
        flat = torch.addmm(stack.base.unsqueeze(0), coef, stack.vectors)
        parts, offset = [], 0
        for _, shape in stack.spec:
            parts.append(flat[:, offset : offset + shape.numel()].reshape(batch, *shape))
            offset += shape.numel()
        torch.autograd.backward(parts, grads)

    times = _race(repeats, split=split, slices=slices)
    return {
        "bags": batch,
        "values_per_bag": int(stack.vectors.shape[1]),
        "split_cpu_ms": round(1000 * times["split"], 2),
        "slices_cpu_ms": round(1000 * times["slices"], 2),
        "slices_over_split": round(times["slices"] / times["split"], 2),
    }


def bench_dropout(dim: int, k: int, repeats: int) -> dict[str, Any]:
    """One ABMIL training step of a ``k``-patch bag (dropout 0.25 in both attention branches):
    stephctl's masks, torch's Bernoulli masks, and dropout off (the step without its cost)."""
    torch.manual_seed(0)
    model = create_abmil(dim, MODEL).train()
    optimizer = build_optimizer(model.named_parameters(), lr=1e-4, weight_decay=1e-5)
    bag = torch.randn(1, k, dim)

    def step(p: float, reference: bool = False) -> Callable[[], None]:
        def go() -> None:
            model.dropout = p
            with bernoulli_masks() if reference else contextlib.nullcontext():
                loss = model(bag).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return go

    times = _race(repeats, stephctl=step(0.25), bernoulli=step(0.25, reference=True), off=step(0.0))
    model.dropout = MODEL.dropout
    ms = {name: round(1000 * value, 1) for name, value in times.items()}
    return {
        "bag_size": k,
        "step_cpu_ms": {"stephctl": ms["stephctl"], "bernoulli": ms["bernoulli"], "off": ms["off"]},
        "step_wall_ms": {
            "stephctl": ms["stephctl_wall"],
            "bernoulli": ms["bernoulli_wall"],
            "off": ms["off_wall"],
        },
        "dropout_cpu_ms": {
            "stephctl": round(ms["stephctl"] - ms["off"], 1),
            "bernoulli": round(ms["bernoulli"] - ms["off"], 1),
        },
    }


def bench_inference(dim: int, k: int, n_patients: int, repeats: int) -> dict[str, Any]:
    """One patient per forward, eval mode: STEPH vs ROUPKT over 13 experts."""
    steph = _steph(dim).eval()
    theta0, tau_t, tau_s = _inputs(dim)
    experts = [{key: theta0[key] + v[key] for key in ENCODER_KEYS} for v in (tau_t, *tau_s)]
    roupkt = RouPKTModel(
        experts,
        dim_in=dim,
        dim_emb=512,
        dim_attn=384,
        time_bins=32,
        dropout=0.25,
        top_k=5,
        balance_weight=0.01,
        z_weight=0.01,
    ).eval()
    g = torch.Generator().manual_seed(0)
    bags = [torch.randn(1, k, dim, generator=g) for _ in range(n_patients)]

    def run(model: torch.nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                for bag in bags:
                    model(bag)

        return go

    times = _race(repeats, steph=run(steph), roupkt=run(roupkt))
    t_steph, t_roupkt = times["steph"], times["roupkt"]
    return {
        "bag_size": k,
        "sources": N_SOURCES,
        "steph_cpu_ms_per_patient": round(1000 * t_steph / n_patients, 2),
        "roupkt_cpu_ms_per_patient": round(1000 * t_roupkt / n_patients, 2),
        "speedup": round(t_roupkt / t_steph, 2),
        "steph_wall_ms_per_patient": round(1000 * times["steph_wall"] / n_patients, 2),
        "roupkt_wall_ms_per_patient": round(1000 * times["roupkt_wall"] / n_patients, 2),
    }


def kernels(quick: bool = False) -> dict[str, Any]:
    """The kernel figures; ``quick`` uses D = 256 and small bags (seconds instead of minutes)."""
    dim = 256 if quick else 1536
    sizes = (64, 256, 1024) if quick else (256, 2000, 10000)
    repeats = 3
    return {
        "dim": dim,
        "epoch": bench_epoch(dim, n_patients=32, k=256 if quick else 1000, repeats=repeats),
        "per_bag": bench_per_bag(dim, sizes, batch=4, repeats=repeats),
        "merge_step": bench_merge_step(dim, batch=16, repeats=repeats),
        "merge_split": [bench_merge_split(dim, batch=b, repeats=5) for b in (1, 16)],
        "inference": bench_inference(dim, k=512 if quick else 2000, n_patients=4, repeats=repeats),
        "dropout": bench_dropout(dim, k=512 if quick else 2000, repeats=8),
    }


def run(
    quick: bool = False,
    *,
    epochs: int | None = None,
    equal: bool | None = None,
    with_kernels: bool = False,
    patients: int | None = None,
    rounds: int = 1,
    profile: Path | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """The stage figures (and the kernel figures with ``with_kernels``; cProfile runs of the
    stage and the one-bag loop into ``profile``)."""
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": rs.DEVICE,
            "device_name": torch.cuda.get_device_name() if rs.DEVICE.startswith("cuda") else "cpu",
        },
        "quick": quick,
        "stage": stage(
            quick,
            epochs=epochs,
            rounds=rounds,
            equal=equal,
            patients=patients,
            profile=profile,
            methods=methods,
        ),
    }
    if with_kernels:
        result["kernels"] = kernels(quick)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (D = 256)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--epochs", type=int, help="merge epochs (default 4; quick 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the three figures")
    parser.add_argument("--no-equal", action="store_true", help="skip the equal-size row")
    parser.add_argument("--kernels", action="store_true", help="also the kernel figures")
    parser.add_argument("--patients", type=int, help="patients of the target cancer (default 48)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: the stage figures on it")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["roupkt", "adamerging"],
        help="also one stage process of each of these methods on the same project, with its "
        "analytic FLOPs and achieved rate",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="then one traced run (cProfile, RSS timeline) each of the stage and the one-bag loop, into this folder",
    )
    args = parser.parse_args()
    rs.set_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = run(
        quick=args.quick,
        epochs=args.epochs,
        equal=False if args.no_equal else None,
        with_kernels=args.kernels,
        patients=args.patients,
        rounds=args.rounds,
        profile=args.profile,
        methods=args.methods,
    )
    print(json.dumps(result, indent=2))
