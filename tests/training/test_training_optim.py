"""The protocol's AdamW and cosine schedule equal torch.optim.AdamW + LambdaLR update for update,
and training does not import TorchDynamo (what building a torch.optim optimiser costs)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from steph.training.optim import AdamW, WarmupCosine, build_optimizer


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 2))
    b = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 2))
    b.load_state_dict(a.state_dict())
    return a, b


def _torch_reference(model: nn.Module, lr: float, weight_decay: float, warmup: int, total: int, kind: str):
    """The reference's optimiser: the same two groups, torch's AdamW (``kind``: single-tensor,
    foreach or fused) and a LambdaLR cosine."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        foreach=kind == "foreach",
        fused=kind == "fused",
    )

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@pytest.mark.parametrize(
    ("fused", "kind"),
    [(None, "fused"), (False, "single"), (False, "foreach")],
    ids=["fused", "single", "foreach"],
)
def test_adamw_and_schedule_equal_torch_bit_for_bit(fused: bool | None, kind: str) -> None:
    """The default (fused kernel on CPU) against torch's fused AdamW; the multi-tensor path against
    torch's single-tensor AdamW (its CPU default, the reference's) and its multi-tensor one (its
    CUDA default)."""
    ours_model, ref_model = _models()
    ours = build_optimizer(ours_model.named_parameters(), lr=3e-3, weight_decay=0.05, fused=fused)
    sched = WarmupCosine(ours, warmup_steps=2, total_steps=7)
    ref, ref_sched = _torch_reference(ref_model, 3e-3, 0.05, 2, 7, kind)
    g = torch.Generator().manual_seed(1)
    for step in range(7):
        x = torch.randn(4, 6, generator=g)
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            if step == 3:  # the last layer gets no gradient: skipped, its step count kept
                out = model[2](model[1](model[0](x)))
            out.square().mean().backward()
            opt.step()
        sched.step()
        ref_sched.step()
        assert sched.get_last_lr() == ref_sched.get_last_lr()
        for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters(), strict=True):
            assert torch.equal(a, b), (step, name, float((a - b).abs().max()))
    assert ours.param_groups[0]["lr"] == 0.0  # the cosine reaches 0 at total_steps


def test_schedule_starts_at_factor_zero_like_lambdalr() -> None:
    model, _ = _models()
    opt = build_optimizer(model.named_parameters(), lr=1e-4, weight_decay=1e-5)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=10)
    assert sched.get_last_lr() == [0.0, 0.0]  # the reference's first step takes lr 0
    sched.step()
    assert sched.get_last_lr() == [2.5e-5, 2.5e-5]
    assert [len(grp["params"]) for grp in opt.param_groups] == [3, 3]  # decay on weights only


def test_fused_update_stays_within_rounding_of_the_single_tensor_one() -> None:
    """The default (fused) path against the reference's single-tensor AdamW over 50 steps of a
    wider model: the same updates up to float32 rounding (a few ulps a step)."""
    torch.manual_seed(0)
    ours_model = nn.Sequential(nn.Linear(64, 37), nn.ReLU(), nn.Linear(37, 5))
    ref_model = nn.Sequential(nn.Linear(64, 37), nn.ReLU(), nn.Linear(37, 5))
    ref_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(ours_model.named_parameters(), lr=3e-3, weight_decay=0.05)
    ref, _ = _torch_reference(ref_model, 3e-3, 0.05, 0, 50, "single")
    g = torch.Generator().manual_seed(1)
    differ = False
    for _ in range(50):
        x = torch.randn(8, 64, generator=g)
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()
        for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            differ = differ or not torch.equal(a, b)
    assert differ  # the fused kernel really ran: its rounding is not the single-tensor one


@pytest.mark.parametrize(("fused", "kind"), [(None, "fused"), (False, "single")], ids=["fused", "single"])
def test_grad_scaler_steps_the_optimiser_like_torch(fused: bool | None, kind: str) -> None:
    """fp16 training unscales through ``param_groups`` (CPU GradScaler, same code path as CUDA)."""
    ours_model, ref_model = _models()
    ours = AdamW([{"params": list(ours_model.parameters())}], lr=1e-2, fused=fused)
    ref = torch.optim.AdamW(
        list(ref_model.parameters()), lr=1e-2, weight_decay=0.0, foreach=False, fused=kind == "fused"
    )
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    for model, opt in ((ours_model, ours), (ref_model, ref)):
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_does_not_import_torchdynamo() -> None:
    code = (
        "import sys, torch\n"
        "from steph.survival import SurvivalTargets\nfrom steph.training.loop import FitSettings, fit\n"
        "from steph.data import BagStore\n"
        "from steph.models.abmil import ABMIL\n"
        "torch.manual_seed(0)\n"
        "bags = {f'p{i}': torch.randn(5 + i, 8) for i in range(4)}\n"
        "data = SurvivalTargets(ids=list(bags), times=torch.arange(4.0) + 1, "
        "events=torch.tensor([1, 0, 1, 1]), bins=torch.tensor([0, 1, 2, 3]))\n"
        "losses = fit(ABMIL(8, dim_emb=8, dim_attn=4), data, BagStore.in_memory(bags), "
        "FitSettings(epochs=2, batch_size=2), device=torch.device('cpu'))\n"
        "print(len(losses), 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]


@pytest.mark.parametrize(("fused", "operators"), [(None, 4), (False, 8)], ids=["fused", "foreach"])
def test_a_step_dispatches_the_same_operators_whatever_the_number_of_parameters(
    fused: bool | None, operators: int
) -> None:
    """Fused: a step count and a kernel per group (decayed, not decayed); multi-tensor: one
    operator per line of the update, 8 for both groups (they share a learning rate). For 4
    parameters as for 24 (a GPU launches one kernel each)."""
    from steph.models.dispatch import DispatchCounter

    counts = []
    for layers in (2, 12):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(layers)])
        opt = build_optimizer(model.named_parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
        for _ in range(2):  # the first step creates the moments
            opt.zero_grad(set_to_none=True)
            model(torch.randn(3, 4)).square().sum().backward()
            with DispatchCounter() as counter:
                opt.step()
        counts.append(counter.count)
    assert counts == [operators, operators]
