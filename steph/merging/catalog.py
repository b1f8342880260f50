"""The built-in merge methods without their models: one :class:`~steph.merging.spec.MethodSpec`
per method (name, description, reference, settings, files, checks and run folder) and the
module and class that implement it.

The registry holds each built-in as this spec until something needs its model
(:meth:`steph.registry.Registry.add_lazy`): planning a merge (``stephctl status``, ``slurm``,
``--list-tasks``) and listing the methods read the specs, which import no torch; ``merge``
itself imports the implementation, a subclass of its spec (``class Steph(StephSpec,
MergeMethod)``), so the checks and run names exist once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from ..config.merge import MergeConfig
from ..errors import ConfigError
from .method_settings import (
    AdaSettings,
    FixedSettings,
    IsoCtsAdaSettings,
    IsoCtsSettings,
    RouPKTSettings,
    ScaledSettings,
    StephSettings,
    SurgerySettings,
    TaskArithmeticSettings,
    TiesAdaSettings,
    TiesSettings,
)
from .settings import fold_block
from .spec import MethodSpec

_STEPH_DEFAULTS = StephSettings()


def check_density(density: float, method: str) -> None:
    """Refuse a TIES density outside (0, 1]."""
    if not 0.0 < density <= 1.0:
        raise ConfigError(
            f"merge.options.density = {density} for {method}: must be in (0, 1]",
            hint="the fraction of each task vector's entries TIES keeps, e.g. --option density=0.2",
        )


def check_fraction(fraction: float, method: str) -> None:
    """Refuse an Iso-CTS common fraction outside [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"merge.options.common_fraction = {fraction} for {method}: must be in [0, 1]",
            hint="e.g. --option common_fraction=0.8",
        )


def check_coefficients(coefficients: Sequence[float] | None, n_sources: int, method: str) -> None:
    """Refuse per-vector coefficients whose count is not the number of task vectors, 1 + m."""
    if coefficients is not None and len(coefficients) != n_sources + 1:
        raise ConfigError(
            f"{method}: {len(coefficients)} coefficients for {n_sources + 1} task vectors",
            hint="give one per task vector, the target's first, then the sources in --sources order, "
            "e.g. --option coefficients=[0.5,0.3,0.2]",
        )


# -- STEPH ------------------------------------------------------------------------------------
class StephSpec(MethodSpec):
    """STEPH, with the paper's ablations as options."""

    name = "steph"
    description = (
        "Sparse task-vector mixup with hypernetworks: per-WSI top-k mixture of target/source task vectors"
    )
    reference = "Liu et al., STEPH, CVPR 2026 (arXiv 2603.10526); github.com/liupei101/STEPH"
    settings_class: ClassVar[type] = StephSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hypernet.safetensors": ("hypernet", "global_w", "global_r"),
        "head.safetensors": ("pred_head",),
    }

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        config = fold_block(config, self.name)  # merge.steph: {...} wins over merge.options
        s, given = self.settings(config), config.options
        m = n_sources + 1 if s.target_as_source else n_sources
        if s.sparse and s.top_k > m:
            raise ConfigError(
                f"top-k is {s.top_k} but only {n_sources} source cancer(s) are available"
                + (" (+ the target with target_as_source)" if s.target_as_source else ""),
                hint=f"lower it with --top-k {m} (or add sources, or use --no-sparse)",
            )
        if s.fixed_lambdas is not None and (s.mix != "fixed" or len(s.fixed_lambdas) != m):
            raise ConfigError(
                f"fixed_lambdas needs mix: fixed and one lambda per mixture ({m}), got {s.fixed_lambdas}",
                hint="e.g. --mix fixed --option fixed_lambdas=["
                + ",".join(["0.5"] * m)
                + "]"
                + " (the sources in --sources order; the target first with target_as_source)",
            )
        if s.fixed_lambdas is not None and s.fixed_lambda != _STEPH_DEFAULTS.fixed_lambda:
            raise ConfigError("fixed_lambda has no effect with fixed_lambdas", hint="drop --fixed-lambda")
        if s.mix != "fixed" and s.fixed_lambda != _STEPH_DEFAULTS.fixed_lambda:
            raise ConfigError("merge.fixed_lambda is only used with mix: fixed", hint="add --mix fixed")
        if s.mix == "fixed" and s.beta != _STEPH_DEFAULTS.beta:
            raise ConfigError(
                "merge.beta has no effect when lambda is fixed (mix: fixed)", hint="drop --beta"
            )
        if not s.sparse and given.get("top_k") is not None:
            raise ConfigError(
                "merge.top_k has no effect with sparse: false", hint="drop --top-k or --no-sparse"
            )

    def run_name(self, config: MergeConfig) -> str:
        """``steph`` plus ``-fixed-lambda<v>`` / ``-global-lambda``, ``-global-w``, ``-dense``,
        ``-top<k>``, ``-gamma<g>``, ``-beta<b>``, ``-clamp``, ``-target-as-source`` ... for every
        setting away from the paper's defaults."""
        s, parts = self.settings(config), [self.name]
        if s.mix == "fixed" and s.fixed_lambdas is not None:
            parts.append("fixed-lambdas-" + "-".join(f"{v:g}" for v in s.fixed_lambdas))
        elif s.mix == "fixed":
            parts.append(f"fixed-lambda{s.fixed_lambda:g}")
        elif s.mix in ("global", "fnn"):
            parts.append(f"{s.mix}-lambda")
        if s.weights == "global":
            parts.append("global-w")
        if not s.sparse:
            parts.append("dense")
        elif s.top_k != _STEPH_DEFAULTS.top_k:
            parts.append(f"top{s.top_k}")
        if s.gamma != _STEPH_DEFAULTS.gamma:
            parts.append("gamma-auto" if s.gamma == "auto" else f"gamma{s.gamma:g}")
        if s.beta != _STEPH_DEFAULTS.beta:
            parts.append(f"beta{s.beta:g}")
        if s.output != _STEPH_DEFAULTS.output:
            parts.append(f"output-{s.output}")
        if s.base != _STEPH_DEFAULTS.base:
            parts.append(f"base-{s.base}")
        if s.clamp_weights:
            parts.append("clamp")
        if s.target_as_source:
            parts.append("target-as-source")
        return "-".join(parts)


# -- fixed-weight baselines -------------------------------------------------------------------
class FixedSpec(MethodSpec):
    """A fixed merged model: ``base + merged_vector`` on the ``merged`` tensors (the encoder by
    default), every other tensor the target model's own (``theta0 + tau_t``), as the reference's
    ``MergedModel`` fills the tensors it does not merge; or a new trained head (``head: trained``)."""

    settings_class: ClassVar[type] = FixedSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {"head.safetensors": ("pred_head",)}

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        if s.head == "trained" and s.merged != "encoder":
            raise ConfigError(
                f"{self.name}: head: trained replaces the head that merged: {s.merged} merges",
                hint="drop --option head=trained, or use --option merged=encoder",
            )


class ModelAverageSpec(FixedSpec):
    name = "model-avg"
    description = "theta0 + mean of the target and source task vectors (= average of the models); target head"
    reference = "Wortsman et al., Model soups, ICML 2022; STEPH paper baseline 'Model Avg.'"


class TaskArithmeticSpec(FixedSpec):
    name = "task-arithmetic"
    description = "theta0 + scale * sum of the task vectors (options.scale, default 0.3); target head"
    reference = "Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    settings_class = TaskArithmeticSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        check_coefficients(s.coefficients, n_sources, self.name)
        if s.coefficients is not None and s.scale != TaskArithmeticSettings().scale:
            raise ConfigError(
                f"{self.name}: scale has no effect with coefficients", hint="drop --option scale"
            )


class TiesSpec(FixedSpec):
    name = "ties"
    description = "TIES-merging: trim (kthvalue, >=), elect sign, disjoint mean, times scale; target head"
    reference = "Yadav et al., TIES-Merging, NeurIPS 2023"
    settings_class = TiesSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.settings(config).density, self.name)


class IsoCSpec(FixedSpec):
    name = "iso-c"
    description = "Iso-C: sum of the task vectors with a flat spectrum (mean singular value), times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = ScaledSettings


class IsoCTSSpec(FixedSpec):
    name = "iso-cts"
    description = "Iso-CTS: common + task-specific singular subspaces with a flat spectrum, times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = IsoCtsSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_fraction(self.settings(config).common_fraction, self.name)


# -- AdaMerging and its variants --------------------------------------------------------------
class AdaMergingSpec(MethodSpec):
    name = "adamerging"
    description = "one trainable coefficient per task vector (init 1/N) + new head, SurvMLE + z-loss"
    reference = "Yang et al., AdaMerging, ICLR 2024; STEPH paper baseline 'AdaMerging'"
    settings_class: ClassVar[type] = AdaSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "coefficients.safetensors": ("coefficients", "hypernet"),
        "head.safetensors": ("pred_head",),
    }

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        if s.top_k_loss is not None and not 1 <= s.top_k_loss <= n_sources + 1:
            raise ConfigError(
                f"top_k_loss is {s.top_k_loss} but {self.name} has only {n_sources + 1} task vectors",
                hint=f"lower it with --option top_k_loss={n_sources + 1}",
            )
        check_coefficients(s.coefficients, n_sources, self.name)
        if s.hypernet and s.coefficients is not None:
            raise ConfigError(
                f"{self.name}: coefficients are initial values of the global coefficients; with "
                "hypernet: true a hypernetwork gives them",
                hint="drop --option coefficients or --option hypernet",
            )
        if not s.hypernet and s.output != "relu":
            raise ConfigError(
                f"merge.options.output only applies with hypernet: true ({self.name})",
                hint="add --option hypernet=true or drop the output option",
            )


class TiesAdaMergingSpec(AdaMergingSpec):
    name = "ties-adamerging"
    description = "AdaMerging over pairwise TIES(target, tau_j) vectors, the target's own included"
    reference = "STEPH paper baseline 'TIES AM'; Yadav et al., NeurIPS 2023 + Yang et al., ICLR 2024"
    settings_class = TiesAdaSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.settings(config).density, self.name)


class IsoCAdaMergingSpec(AdaMergingSpec):
    name = "iso-c-adamerging"
    description = "AdaMerging over pairwise Iso-C(target, tau_j) vectors, the target's own included"
    reference = "STEPH paper baseline 'Iso-C AM'; Marczak et al., ICML 2025 + Yang et al., ICLR 2024"


class IsoCTSAdaMergingSpec(AdaMergingSpec):
    name = "iso-cts-adamerging"
    description = "AdaMerging over pairwise Iso-CTS(target, tau_j) vectors (the reference's write-back fixed)"
    reference = "STEPH reference ('iso_cts'); Marczak et al., ICML 2025 + Yang et al., ICLR 2024"
    settings_class = IsoCtsAdaSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_fraction(self.settings(config).common_fraction, self.name)


class SurgeryAdaMergingSpec(AdaMergingSpec):
    name = "surgery-adamerging"
    description = (
        "AdaMerging + representation surgery z - W_u ReLU(W_d z) aligned to the target model's embedding"
    )
    reference = "Yang et al., Representation Surgery, ICML 2024; STEPH paper baseline 'Surgery AM'"
    settings_class: ClassVar[type] = SurgerySettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "coefficients.safetensors": ("coefficients", "hypernet"),
        "surgery.safetensors": ("surgery",),
        "head.safetensors": ("pred_head",),
    }

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        if s.rank < 1 or s.align_weight < 0:
            raise ConfigError(
                f"{self.name}: rank must be >= 1 and align_weight >= 0 (got {s.rank}, {s.align_weight})",
                hint="e.g. --option rank=16 --option align_weight=1.0",
            )


# -- ROUPKT -----------------------------------------------------------------------------------
class RouPKTSpec(MethodSpec):
    name = "roupkt"
    description = "representation transfer: router picks top-k of the frozen target + source ABMIL embeddings"
    reference = "Liu et al., CROPKT (ROUPKT baseline); github.com/liupei101/CROPKT"
    settings_class: ClassVar[type] = RouPKTSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "router.safetensors": ("router", "gate"),
        "experts.safetensors": ("experts",),
        "head.safetensors": ("pred_head",),
    }

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        top_k = self.settings(config).top_k
        if top_k > n_sources + 1:
            raise ConfigError(
                f"top-k is {top_k} but roupkt has only {n_sources + 1} experts (target + {n_sources} sources)",
                hint=f"lower it with --top-k {n_sources + 1} or add sources",
            )


BUILTIN: tuple[tuple[type[MethodSpec], str], ...] = (
    (StephSpec, "steph.merging.steph_method:Steph"),
    (ModelAverageSpec, "steph.merging.baselines:ModelAverage"),
    (TaskArithmeticSpec, "steph.merging.baselines:TaskArithmetic"),
    (TiesSpec, "steph.merging.baselines:Ties"),
    (IsoCSpec, "steph.merging.baselines:IsoC"),
    (IsoCTSSpec, "steph.merging.baselines:IsoCTS"),
    (AdaMergingSpec, "steph.merging.adamerging:AdaMerging"),
    (TiesAdaMergingSpec, "steph.merging.adamerging:TiesAdaMerging"),
    (IsoCAdaMergingSpec, "steph.merging.adamerging:IsoCAdaMerging"),
    (IsoCTSAdaMergingSpec, "steph.merging.adamerging:IsoCTSAdaMerging"),
    (SurgeryAdaMergingSpec, "steph.merging.surgery:SurgeryAdaMerging"),
    (RouPKTSpec, "steph.merging.roupkt:RouPKT"),
)
"""Each built-in method's spec and its implementation (``module:Class``, a subclass of the spec
and of :class:`~steph.merging.base.MergeMethod`), in the order of ``--list-methods``."""
