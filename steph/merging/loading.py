"""Rebuild a trained merged model from its folder, for inference on new patients.

:func:`load_merged_model` reads ``meta.json``, checks that theta0 and every task vector are
still the files the model was trained on (sha256), rebuilds the model through its method's
``build`` and loads the saved weights. The result predicts a patient in one forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..checkpoints import load_state_dict
from ..config import ModelConfig, ProjectConfig
from ..config.merge import MergeConfig
from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..fileio import read_json, sha256_file
from ..layout import ProjectLayout
from ..progress import NULL_PROGRESS
from ..runtime import resolve_device, seed_everything
from ..theta0 import load_theta0
from ..training.loop import FitSettings, ModelOutput
from .base import MergeContext
from .inputs import load_inputs

META = "meta.json"


class MergedPredictor(nn.Module):
    """A trained merged model whose ``forward(x, mask)`` returns logits ``[B, T]`` only.

    ``extras`` of the last forward (STEPH: ``w``, ``lambda``, ``selected``) stay readable in
    :attr:`last_extras`.
    """

    def __init__(self, model: nn.Module, method: str, run: str) -> None:
        super().__init__()
        self.model, self.method, self.run = model, method, run
        self.last_extras: dict[str, Tensor] = {}

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out = self.model(x, mask)
        if isinstance(out, ModelOutput):
            self.last_extras = out.extras
            return out.logits
        return out


def load_merged_model(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    run: str,
    fold: int,
    *,
    device: str | torch.device | None = None,
) -> MergedPredictor:
    """The trained model of ``merged/<target>/<run>/fold_<fold>/`` in eval mode.

    Args:
        run: the run's folder name (``steph``, ``steph-dense``, ``ties`` ...).
        device: where to put it (default ``train.device`` of ``config``).

    Raises:
        MissingArtifactError: the run is not finished (no meta.json) or a file is missing.
        ConsistencyError: theta0, a task vector or a weights file changed since training.
        UnknownNameError: the method is no longer registered (plugin uninstalled).
    """
    from . import MERGE_METHODS

    meta_path = layout.merged_file(target, run, fold, META)
    if not meta_path.is_file():
        raise MissingArtifactError(
            f"no finished merge at {meta_path.parent}",
            hint=f"run `stephctl -p {layout.root} merge --target {target} --fold {fold}` with the settings of {run!r}",
        )
    meta = read_json(meta_path)
    try:
        method = MERGE_METHODS.get(str(meta["method"]))
        merge_config = MergeConfig(**meta["merge_config"])
        model_config = ModelConfig(**meta["model_config"])
        sources, source_fold, dim_in = list(meta["sources"]), int(meta["source_fold"]), int(meta["dim_in"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{meta_path} is not a valid merge record: {exc}", hint="rerun the merge with --overwrite"
        ) from exc
    theta0 = load_theta0(layout, model=model_config, dim_in=dim_in)
    if theta0.sha256 != meta["theta0_sha256"]:
        raise ConsistencyError(
            f"theta0 changed since {run} fold {fold} was trained ({theta0.sha256[:12]}... vs {meta['theta0_sha256'][:12]}...)",
            hint="rerun the merge with --overwrite",
        )
    inputs = load_inputs(layout, target, fold, sources, source_fold, theta0)
    if inputs.vector_hashes != meta["vector_sha256"]:
        changed = sorted(k for k, v in inputs.vector_hashes.items() if meta["vector_sha256"].get(k) != v)
        raise ConsistencyError(
            f"task vectors changed since {run} fold {fold} was trained: {', '.join(changed)}",
            hint="rerun the merge with --overwrite",
        )
    ctx = MergeContext(
        target=target,
        fold=fold,
        theta0=theta0.state,
        target_vector=inputs.target_vector,
        source_names=inputs.source_names,
        source_vectors=inputs.source_vectors,
        config=merge_config,
        model_config=model_config,
        dim_in=dim_in,
        device=resolve_device(str(device) if device is not None else config.train.device),
        seed=int(meta["seed"]),
        fit_settings=FitSettings(epochs=0),
        progress=NULL_PROGRESS,
    )
    seed_everything(ctx.seed)
    model = method.build(ctx)
    state: dict[str, Tensor] = {}
    for file, sha in meta["files"].items():
        path = layout.merged_file(target, run, fold, file)
        if path.is_file() and sha256_file(path) != sha:
            raise ConsistencyError(
                f"{path} changed after training (sha256 mismatch)", hint="rerun the merge with --overwrite"
            )
        state.update(load_state_dict(path, what=f"{run} weights", hint="rerun the merge with --overwrite"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConsistencyError(
            f"{meta_path.parent}: saved weights do not fit the rebuilt {method.name} model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})",
            hint="rerun the merge with --overwrite",
        )
    return MergedPredictor(model, method.name, run).to(ctx.device).eval()
