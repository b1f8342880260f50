"""The settings of the built-in merge methods, one frozen dataclass per method.

Each method owns its settings (``MergeMethod.settings_class``); they live in this module, which
imports no torch, so that ``stephctl merge``'s flags are generated from them without loading
the methods (:func:`steph.merging.settings.flag_fields`). A field's metadata (:func:`doc`)
holds its help; ``flag=...`` gives it a ``stephctl merge`` flag of its own (``--top-k``),
with that help; every other setting is ``--option KEY=VALUE``. Values come from
``merge.options`` and the method's block ``merge.<method>`` (:mod:`steph.config.merge`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .settings import AUTO, doc

OutputLayer = Literal["relu", "sigmoid", "softplus"]
"""The output layer of a hypernetwork's weights (the reference's ``output_layer``)."""

BASE_HELP = "what the merged vector is added to: theta0 or target (theta0 + tau_t; the reference's base_parameters_from)"

GAMMA_FLAG = (
    "Weight of the coefficient / aggregation loss (0.005; also 0.05), or auto: chosen from "
    "merge.gamma_grid by inner cross-validation on the target's training split."
)


def list_suffix(label: str) -> Any:
    """A folder suffix for a list setting: ``coefficients-0.5-0.3``."""
    return lambda values: f"{label}-" + "-".join(f"{v:g}" for v in values) if values is not None else ""


CLAMP_HELP = (
    "clamp the merge weights to [0, 1] where they merge the vectors; the regulariser sees them "
    "unclamped (the reference's task_ari_clamp_weights)"
)


def check_gamma(gamma: float | str) -> None:
    if gamma != AUTO and (isinstance(gamma, str) or gamma < 0):
        raise ValueError(f"gamma must be >= 0 or auto, got {gamma!r}")


@dataclass(frozen=True, kw_only=True)
class StephSettings:
    """STEPH's settings: the knobs of the paper's ablations and the reference's variants."""

    top_k: int = field(
        default=5, metadata=doc("task-vector mixtures kept per bag", flag="Mixed task vectors kept per bag.")
    )
    sparse: bool = field(
        default=True,
        metadata=doc(
            "keep only the top-k mixtures (false: all m, z-loss alone)",
            flag="Keep the top-k mixtures (--no-sparse: all sources).",
        ),
    )
    mix: Literal["hypernet", "fnn", "fixed", "global"] = field(
        default="hypernet",
        metadata=doc(
            "lambda from the hypernetwork, its fnn variant (own embedding), a fixed value or a global vector",
            flag="lambda from: hypernet, fnn, fixed or global (ablation).",
        ),
    )
    fixed_lambda: float = field(
        default=1.0,
        metadata=doc(
            "lambda with mix: fixed (0 = sources only, 1 = target only)",
            flag="lambda with --mix fixed: 0 = sources only, 1 = target only.",
        ),
    )
    weights: Literal["hypernet", "global"] = field(
        default="hypernet",
        metadata=doc(
            "w from the hypernetwork or a global vector", flag="w from: hypernet or global (ablation)."
        ),
    )
    gamma: float | Literal["auto"] = field(
        default=0.005,
        metadata=doc("weight of the aggregation loss (auto: inner cross-validation)", flag=GAMMA_FLAG),
    )
    beta: float = field(
        default=0.05, metadata=doc("weight of the mixing loss", flag="Mixing loss weight (0.05).")
    )
    output: OutputLayer = field(
        default="relu",
        metadata=doc("output layer of w: relu, sigmoid or softplus (the reference's output_layer)"),
    )
    base: Literal["theta0", "target"] = field(default="theta0", metadata=doc(BASE_HELP))
    fixed_lambdas: list[float] | None = field(
        default=None,
        metadata=doc(
            "with mix: fixed, one lambda per mixture (sources in order; the target first with "
            "target_as_source) instead of fixed_lambda (the reference's initial_lambda_t)",
            suffix=list_suffix("fixed-lambdas"),
        ),
    )
    clamp_weights: bool = field(
        default=False, metadata=doc(CLAMP_HELP, suffix=lambda v: "clamp" if v else "")
    )
    target_as_source: bool = field(
        default=False,
        metadata=doc(
            "keep the target among the sources: one more mixture, tau_t with itself (the reference's "
            "task_ari_src_exlude_target: false)",
            suffix=lambda v: "target-as-source" if v else "",
        ),
    )

    def __post_init__(self) -> None:
        if self.fixed_lambdas is not None and not all(0.0 <= v <= 1.0 for v in self.fixed_lambdas):
            raise ValueError(f"fixed_lambdas must be in [0, 1], got {self.fixed_lambdas}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.fixed_lambda <= 1.0:
            raise ValueError(f"fixed_lambda must be in [0, 1], got {self.fixed_lambda}")
        check_gamma(self.gamma)
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def learns_lambda(self) -> bool:
        return self.mix != "fixed"


@dataclass(frozen=True, kw_only=True)
class FixedSettings:
    """A fixed-weight merge (``model-avg``): where the merged vector goes, which head."""

    head: Literal["target", "trained"] = field(
        default="target",
        metadata=doc(
            "target: the target model's own trained head, no training (the reference); trained: a new head"
        ),
    )
    base: Literal["theta0", "target"] = field(default="theta0", metadata=doc(BASE_HELP))
    merged: Literal["encoder", "all", "pred_head"] = field(
        default="encoder",
        metadata=doc(
            "which tensors are merged: the encoder (the target's head kept), all (the head merged "
            "too) or pred_head (the head only, the target's own encoder); the reference's "
            "task_ari_param_to_merge: mil_encoder, all, pred_head"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class ScaledSettings(FixedSettings):
    scale: float = field(default=1.0, metadata=doc("factor on the merged task vector"))


@dataclass(frozen=True, kw_only=True)
class TaskArithmeticSettings(FixedSettings):
    scale: float = field(default=0.3, metadata=doc("factor on the sum of the task vectors (Ilharco et al.)"))
    coefficients: list[float] | None = field(
        default=None,
        metadata=doc(
            "one coefficient per task vector (the target's first, then the sources in order) instead "
            "of scale (the reference's task_ari_src_init_coef with fixed weights)",
            suffix=list_suffix("coefficients"),
        ),
    )


@dataclass(frozen=True, kw_only=True)
class TiesSettings(ScaledSettings):
    density: float = field(
        default=0.2, metadata=doc("fraction of each task vector's entries kept (floor(density P) + 1)")
    )


@dataclass(frozen=True, kw_only=True)
class IsoCtsSettings(ScaledSettings):
    common_fraction: float = field(
        default=0.8, metadata=doc("fraction of the rank given to the common subspace")
    )


@dataclass(frozen=True, kw_only=True)
class AdaSettings:
    """AdaMerging and its variants."""

    gamma: float | Literal["auto"] = field(
        default=0.005,
        metadata=doc(
            "weight of the coefficient regulariser (z-loss [+ mean top-k]; auto: inner cross-validation)",
            flag=GAMMA_FLAG,
        ),
    )
    top_k_loss: int | None = field(
        default=None,
        metadata=doc(
            "add the mean of the top-k coefficients to the regulariser (the reference's task_ari_topk_task_vectors)"
        ),
    )
    hypernet: bool = field(
        default=False,
        metadata=doc(
            "per-patient coefficients from a hypernetwork (the reference's ADA-dynamic, '+hypernetwork')"
        ),
    )
    output: OutputLayer = field(
        default="relu", metadata=doc("output layer of the hypernetwork: relu, sigmoid or softplus")
    )
    base: Literal["theta0", "target"] = field(default="theta0", metadata=doc(BASE_HELP))
    coefficients: list[float] | None = field(
        default=None,
        metadata=doc(
            "initial coefficients, one per task vector (the target's first, then the sources in "
            "order) instead of 1/N (the reference's task_ari_src_init_coef, ADA mode)",
            suffix=list_suffix("init"),
        ),
    )
    clamp_weights: bool = field(
        default=False, metadata=doc(CLAMP_HELP, suffix=lambda v: "clamp" if v else "")
    )

    def __post_init__(self) -> None:
        check_gamma(self.gamma)


@dataclass(frozen=True, kw_only=True)
class TiesAdaSettings(AdaSettings):
    density: float = field(
        default=0.2, metadata=doc("fraction of each vector's entries TIES keeps (floor(density P) + 1)")
    )


@dataclass(frozen=True, kw_only=True)
class IsoCtsAdaSettings(AdaSettings):
    common_fraction: float = field(
        default=0.8, metadata=doc("fraction of the rank given to the common subspace")
    )


@dataclass(frozen=True, kw_only=True)
class SurgerySettings(AdaSettings):
    rank: int = field(default=16, metadata=doc("rank r of the surgery module W_u ReLU(W_d z)"))
    align_weight: float = field(default=1.0, metadata=doc("weight of the representation-alignment loss"))


@dataclass(frozen=True, kw_only=True)
class RouPKTSettings:
    top_k: int = field(
        default=5, metadata=doc("experts mixed per bag", flag="Mixed task vectors kept per bag.")
    )
    balance_weight: float = field(default=0.01, metadata=doc("weight of the balance loss"))
    z_weight: float = field(default=0.01, metadata=doc("weight of the router z-loss"))

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


BUILTIN_SETTINGS: tuple[type, ...] = (
    StephSettings,
    FixedSettings,
    ScaledSettings,
    TaskArithmeticSettings,
    TiesSettings,
    IsoCtsSettings,
    AdaSettings,
    TiesAdaSettings,
    IsoCtsAdaSettings,
    SurgerySettings,
    RouPKTSettings,
)
"""Every settings class above: where ``stephctl merge``'s own flags come from (a test checks that
each built-in method's ``settings_class`` is one of them)."""
