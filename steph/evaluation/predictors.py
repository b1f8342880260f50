"""A trained model ready for new patients, whether it lives in the project or in a bundle.

:class:`LoadedModel` carries what prediction needs besides the weights: how features must be
made (encoder, weights identity, extraction settings), ``D``, the time bins and the training
median risk that splits risk groups. An ensemble (``stephctl export --all-folds``) has one
module per fold; its survival curve is the mean of theirs (so its risk, ``-sum_j S_j``, is the
mean of their risks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import ExtractConfig
from ..errors import ConsistencyError
from ..layout import CANCER_SPECIFIC
from ..records import MergeRecord
from ..survival import survival_curve
from .inputs import train_median_risk

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from ..training.loop import BagSource


@dataclass(frozen=True)
class LoadedModel:
    """Fold modules (eval mode) and how their inputs are made."""

    name: str
    """Default name of a prediction run (``BRCA_steph_fold_0`` or the bundle's file stem)."""
    modules: tuple[tuple[int, nn.Module], ...]
    """(fold, module) pairs; ``module(x, mask)`` returns logits ``[B, T]``."""
    encoder: str
    encoder_weights: str | None
    """Weights identity the features must come from (None: not recorded, not checked)."""
    encoder_weights_file: Path | None
    """A local weights file known for the encoder (stephctl.yaml ``extract.weights``)."""
    extraction: ExtractConfig
    dim_in: int
    time_bins: int
    bin_width_days: float
    train_median_risk: float | None
    identity: dict[str, Any] = field(default_factory=dict)
    """What identifies the model in a run's meta.json (bundle sha256, or target/method/fold)."""
    sources: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Per fold of a merged model: its source cancers, in the order of its transfer coefficients."""

    def predict(
        self,
        ids: list[str],
        bags: BagSource,
        *,
        device: torch.device,
        max_batch_patches: int = 0,
        precision: str = "fp32",
    ) -> tuple[Tensor, Tensor]:
        """Hazards and survival ``S`` ``[N, T]`` (float64); ``precision`` as ``train.precision``.

        One fold: its hazards and ``S_j = prod_{i<=j} (1 - h_i)``. Ensemble: ``S`` is the mean of
        the folds' curves and the hazards are those of that curve (:func:`hazards_of`).
        """
        from ..training.loop import predict

        hazards, curves = [], []
        for _, module in self.modules:
            h, _ = predict(
                module, ids, bags, device=device, max_batch_patches=max_batch_patches, precision=precision
            )
            hazards.append(h.double())
            curves.append(survival_curve(h.double()))
        if len(curves) == 1:
            return hazards[0], curves[0]
        surv = torch.stack(curves).mean(dim=0)
        return hazards_of(surv), surv


def hazards_of(surv: Tensor) -> Tensor:
    """Per-bin hazards of a survival curve: ``h_1 = 1 - S_1``, ``h_j = 1 - S_j / S_{j-1}``.

    For one fold this gives back the model's hazards (up to rounding).
    """
    previous = torch.cat([torch.ones_like(surv[:, :1]), surv[:, :-1]], dim=1)
    return 1.0 - surv / previous.clamp(min=1e-300)


def project_model(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    method: str,
    fold: int,
    *,
    device: torch.device,
) -> LoadedModel:
    """The trained model of (target, method, fold) of the project.

    ``cancer-specific`` is the ABMIL of ``models/<target>/fold_<k>/``; any other method is the
    merged model of ``merged/<target>/<method>/fold_<k>/``. Features are the project's.

    Raises:
        MissingArtifactError: the model has not been trained.
        ConsistencyError: its shapes differ from ``model:`` of stephctl.yaml.
    """
    if method == CANCER_SPECIFIC:
        from ..checkpoints import load_state_dict
        from ..models.abmil import architecture_of, create_abmil

        path = layout.model_weights(target, fold)
        state = load_state_dict(
            path,
            what=f"{target} fold {fold} model",
            hint=f"run `stephctl train-source -c {target} -k {fold}`",
        )
        arch = architecture_of(state)
        wanted = {k: getattr(config.model, k) for k in ("dim_emb", "dim_attn", "time_bins")}
        differ = [
            f"model.{k} = {v} but the weights have {arch[k]}" for k, v in wanted.items() if arch[k] != v
        ]
        if differ:
            raise ConsistencyError(
                f"{path}: {'; '.join(differ)}", hint="use the stephctl.yaml the model was trained with"
            )
        model: nn.Module = create_abmil(arch["dim_in"], config.model)
        model.load_state_dict(state)
        model = model.to(device).eval()
        dim_in = arch["dim_in"]
    else:
        from ..merging import load_merged_model

        model = load_merged_model(layout, config, target, method, fold, device=device)
        dim_in = int(MergeRecord.read(layout.merged_meta(target, method, fold)).dim_in)
    weights = config.extract.weights.get(config.encoder)
    weights_file = None if weights is None else layout.slide_path(weights)
    return LoadedModel(
        name=f"{target}_{method}_fold_{int(fold)}",
        modules=((fold, model),),
        encoder=config.encoder,
        encoder_weights=None,
        encoder_weights_file=weights_file,
        extraction=config.extract,
        dim_in=dim_in,
        time_bins=config.model.time_bins,
        bin_width_days=config.model.bin_width_days,
        train_median_risk=train_median_risk(layout.result_metrics(target, method, fold)),
        identity={"target": target, "method": method, "fold": fold},
        sources={fold: _merged_sources(layout, target, method, fold)},
    )


def _merged_sources(layout: ProjectLayout, target: str, method: str, fold: int) -> tuple[str, ...]:
    """Source cancers of a merged run (``meta.json`` ``sources``; none for cancer-specific)."""
    meta = layout.merged_meta(target, method, fold) if method != CANCER_SPECIFIC else None
    if meta is None or not meta.is_file():
        return ()
    return tuple(str(s) for s in MergeRecord.read(meta).sources)
