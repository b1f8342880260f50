"""Rebuild a trained merged model from its folder, for inference on new patients.

:func:`load_merged_model` reads ``meta.json``, checks that theta0 and every task vector are
still the files the model was trained on (sha256), rebuilds the model through its method's
``build`` and loads the saved weights. The result predicts a patient in one forward pass.
Its two halves, :func:`read_merged_parts` and :func:`rebuild_merged_model`, are public:
``stephctl export`` packs the parts into a bundle and ``stephctl predict`` rebuilds from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..checkpoints import load_state_dict
from ..config import ModelConfig, ProjectConfig
from ..config.merge import MergeConfig, merge_config_of
from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..fileio import sha256_file
from ..layout import ProjectLayout
from ..progress import NULL_PROGRESS
from ..records import MergeRecord
from ..runtime import resolve_device, seed_everything
from ..theta0 import load_theta0
from ..training.loop import FitSettings, ModelOutput
from .base import MergeContext
from .inputs import load_inputs
from .registry import MERGE_METHODS


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
        out: Tensor | ModelOutput = self.model(x, mask)
        if isinstance(out, ModelOutput):
            self.last_extras = out.extras
            return out.logits
        return out


@dataclass(frozen=True, kw_only=True)
class MergedParts:
    """Everything a trained merged model is rebuilt from (a merge folder, or an exported bundle)."""

    method: str
    run: str
    target: str
    fold: int
    theta0: dict[str, Tensor]
    theta0_sha256: str
    target_vector: dict[str, Tensor]
    source_names: tuple[str, ...]
    source_vectors: tuple[dict[str, Tensor], ...]
    vector_hashes: dict[str, str]
    """``"<CANCER>/fold_<k>"`` -> sha256 of each task-vector file used."""
    merge_config: MergeConfig
    model_config: ModelConfig
    dim_in: int
    seed: int
    state: dict[str, Tensor]
    """The saved (trained) weights, every file of the method's ``files``."""
    record: MergeRecord | None = None
    """The merge record (``meta.json``); None for a model rebuilt from a bundle."""


def read_merged_parts(
    layout: ProjectLayout, config: ProjectConfig, target: str, run: str, fold: int
) -> MergedParts:
    """The parts of ``merged/<target>/<run>/fold_<fold>/``, every file checked against its sha256.

    Raises:
        MissingArtifactError: the run is not finished (no meta.json) or a file is missing.
        ConsistencyError: theta0, a task vector or a weights file changed since training.
        UnknownNameError: the method is no longer registered (plugin uninstalled).
    """
    meta_path = layout.merged_meta(target, run, fold)
    if not meta_path.is_file():
        raise MissingArtifactError(
            f"no finished merge at {meta_path.parent}",
            hint=f"run `stephctl -p {layout.root} merge --target {target} --fold {fold}` with the settings of {run!r}",
        )
    record = MergeRecord.read(meta_path)
    try:
        method = MERGE_METHODS.get(str(record.method))
        merge_config = merge_config_of(record.merge_config)
        model_config = ModelConfig(**record.model_config)
        sources, source_fold, dim_in = list(record.sources), int(record.source_fold), int(record.dim_in)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{meta_path} is not a valid merge record: {exc}", hint="rerun the merge with --overwrite"
        ) from exc
    theta0 = load_theta0(layout, model=model_config, dim_in=dim_in)
    if theta0.sha256 != record.theta0_sha256:
        raise ConsistencyError(
            f"theta0 changed since {run} fold {fold} was trained ({theta0.sha256[:12]}... vs {str(record.theta0_sha256)[:12]}...)",
            hint="rerun the merge with --overwrite",
        )
    inputs = load_inputs(layout, target, fold, sources, source_fold, theta0)
    if inputs.vector_hashes != record.vector_sha256:
        changed = sorted(k for k, v in inputs.vector_hashes.items() if record.vector_sha256.get(k) != v)
        raise ConsistencyError(
            f"task vectors changed since {run} fold {fold} was trained: {', '.join(changed)}",
            hint="rerun the merge with --overwrite",
        )
    state: dict[str, Tensor] = {}
    for file, sha in record.files.items():
        path = layout.merged_file(target, run, fold, file)
        if path.is_file() and sha256_file(path) != sha:
            raise ConsistencyError(
                f"{path} changed after training (sha256 mismatch)", hint="rerun the merge with --overwrite"
            )
        state.update(load_state_dict(path, what=f"{run} weights", hint="rerun the merge with --overwrite"))
    return MergedParts(
        method=method.name,
        run=run,
        target=target,
        fold=fold,
        theta0=theta0.state,
        theta0_sha256=theta0.sha256,
        target_vector=inputs.target_vector,
        source_names=inputs.source_names,
        source_vectors=inputs.source_vectors,
        vector_hashes=inputs.vector_hashes,
        merge_config=merge_config,
        model_config=model_config,
        dim_in=dim_in,
        seed=int(record.seed or 0),
        state=state,
        record=record,
    )


def rebuild_merged_model(parts: MergedParts, device: torch.device, *, where: str) -> MergedPredictor:
    """The trained model of ``parts`` in eval mode: the method's ``build`` on a context without
    training data, then the saved weights (``where`` names their origin in errors).

    Raises:
        UnknownNameError: the method is not registered.
        ConsistencyError: the saved weights do not fit the rebuilt model.
    """
    method = MERGE_METHODS.get(parts.method)
    ctx = MergeContext(
        target=parts.target,
        fold=parts.fold,
        theta0=parts.theta0,
        target_vector=parts.target_vector,
        source_names=parts.source_names,
        source_vectors=parts.source_vectors,
        config=parts.merge_config,
        model_config=parts.model_config,
        dim_in=parts.dim_in,
        device=device,
        seed=parts.seed,
        fit_settings=FitSettings(epochs=0),
        progress=NULL_PROGRESS,
    )
    seed_everything(ctx.seed)
    model = method.build(ctx)
    missing, unexpected = model.load_state_dict(parts.state, strict=False)
    if missing or unexpected:
        raise ConsistencyError(
            f"{where}: saved weights do not fit the rebuilt {method.name} model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})",
            hint="rerun the merge with --overwrite",
        )
    return MergedPredictor(model, method.name, parts.run).to(ctx.device).eval()


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
    parts = read_merged_parts(layout, config, target, run, fold)
    resolved = resolve_device(str(device) if device is not None else config.train.device)
    return rebuild_merged_model(parts, resolved, where=str(layout.merged_dir(target, run, fold)))
