"""The merge-method contract: :class:`MergeContext` in, a trained ``nn.Module`` out.

See the package docstring (:mod:`steph.merging`) for how a plugin implements a method.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ..config.merge import MergeConfig
from ..progress import NULL_PROGRESS, Progress
from ..training.loop import FitSettings, fit
from .spec import MethodSpec

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..data import Cohort
    from ..survival import SurvivalTargets
    from ..training.loop import BagSource

StateDict = dict[str, Tensor]
Table = tuple[list[str], list[list[Any]]]
"""A CSV to write: header and rows."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MergeContext:
    """Everything a merge method may use for one target fold.

    ``train``, ``bags`` and ``cohort`` are None when a trained model is only rebuilt for
    inference (:func:`steph.merging.load_merged_model`): ``build`` must not need them. The
    tensors of ``theta0`` and the task vectors are shared by the units of a fold (read once per
    fold, :meth:`steph.pipeline.merge.MergeWorker.inputs`): a method must not change them in place.
    """

    target: str
    fold: int
    theta0: StateDict
    """Every tensor of the shared initialisation (ABMIL parameter names)."""
    target_vector: StateDict
    """tau_t = theta_t - theta0 of the target's model of this fold."""
    source_names: tuple[str, ...]
    source_vectors: tuple[StateDict, ...]
    """tau_s of each source (``merge.source_fold``), in ``source_names`` order."""
    config: MergeConfig
    model_config: ModelConfig
    dim_in: int
    device: torch.device
    seed: int
    fit_settings: FitSettings
    train: SurvivalTargets | None = None
    """The target's training split of this fold (ids, times, events, bins)."""
    bags: BagSource | None = None
    cohort: Cohort | None = None
    progress: Progress = NULL_PROGRESS
    vector_hashes: tuple[str, ...] = ()
    """sha256 of the target's and each source's task-vector file, in that order (empty when
    unknown): what was merged, for results computed once per process from the vectors alone."""

    @property
    def n_sources(self) -> int:
        return len(self.source_names)


class StackedModel(nn.Module):
    """A model holding several target folds' models of one method (:meth:`MergeMethod.stack`),
    trained by :func:`~steph.training.stacked.fit_stacked` (``units`` of them): built from models
    of exactly one class ``kind``, it holds their heads (``pred_head``) as one stacked weight and
    bias (:meth:`head`); a subclass (its constructor takes the models alone, and passes its
    ``kind``) stacks the rest of what they learn, and :meth:`unstack`
    writes what each fold learned back into its model (the heads here, the rest in the subclass).
    It takes packed bags, each unit's after the other's.

    Raises:
        ValueError: no models, or one of another class (the fold trains alone).
    """

    packs_bags = True
    units: int

    def __init__(self, models: Sequence[nn.Module], kind: type[nn.Module] | None = None) -> None:
        super().__init__()
        if not models:
            raise ValueError("no models to stack")
        for m in models:
            if kind is not None and type(m) is not kind:  # a subclass has parts of its own (Surgery AM's)
                raise ValueError(f"{type(m).__name__} does not stack as {kind.__name__}")
        heads = [m.get_submodule("pred_head") for m in models]
        if not all(isinstance(h, nn.Linear) for h in heads):
            raise ValueError("stacked models need a linear pred_head")
        linear = cast("list[nn.Linear]", heads)
        self.units = len(models)
        self.head_weight = nn.Parameter(torch.stack([h.weight.detach() for h in linear]))
        self.head_bias = nn.Parameter(torch.stack([h.bias.detach() for h in linear]))
        self.time_bins, self.dim_emb = linear[0].out_features, linear[0].in_features

    def head(self, z: Tensor) -> Tensor:
        """``[U n, T]``: each unit's head on its ``n`` bags' embeddings of ``z [U n, E]`` (unit
        after unit), one batched product."""
        per_unit = z.shape[0] // self.units
        weight, bias = self.head_weight.transpose(1, 2), self.head_bias.unsqueeze(1)
        return torch.baddbmm(bias, z.view(self.units, per_unit, -1), weight).view(z.shape[0], -1)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy each unit's trained head into its model (a subclass adds the rest)."""
        for u, m in enumerate(models):
            head = cast(nn.Linear, m.get_submodule("pred_head"))
            head.weight.copy_(self.head_weight[u])
            head.bias.copy_(self.head_bias[u])


class MergeMethod(MethodSpec, abc.ABC):
    """Base class of merge methods: a :class:`~steph.merging.spec.MethodSpec` (the class
    attributes ``name``, ``description``, ``reference``, ``settings_class``, ``files``, and
    ``check`` / ``run_name``) plus the work; subclasses set the class attributes and :meth:`build`.
    """

    # -- the work -----------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, ctx: MergeContext) -> nn.Module:
        """The untrained model; ``forward(x, mask)`` returns logits or a ``ModelOutput``."""

    def train(self, model: nn.Module, ctx: MergeContext) -> list[float]:
        """Train ``model`` on the target's training split; returns the loss of each epoch.

        The default runs the shared training loop over the parameters that require grad
        (none: nothing is trained, ``[]``).
        """
        if ctx.train is None or ctx.bags is None:
            raise ValueError("train() needs the target's training data in the context")
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not params:
            log.info("merge %s %s fold %d: nothing to train", ctx.target, self.name, ctx.fold)
            return []
        task = f"merge {ctx.target} {self.name} fold {ctx.fold}"
        return fit(
            model,
            ctx.train,
            ctx.bags,
            ctx.fit_settings,
            device=ctx.device,
            named_params=params,
            progress=ctx.progress,
            task=task,
        )

    stacked_model: ClassVar[type[StackedModel] | None] = None
    """The class that stacks this method's models of several target folds (see :meth:`stack`);
    None (the default): each fold trains alone."""

    def stack(self, models: Sequence[nn.Module]) -> StackedModel | None:
        """One model that trains ``models`` (this method's, one per target fold, from
        :meth:`build`) together in one optimiser step, each fold's result its own run's
        (:func:`steph.training.stacked.fit_stacked`: parameters along a leading unit dimension):
        :attr:`stacked_model` of ``models``, or None where they do not stack (its constructor
        raises ``ValueError``: a hypernetwork, other settings) or the method has none."""
        if self.stacked_model is None:
            return None
        try:
            return self.stacked_model(models)
        except ValueError as exc:
            log.info("merge %s: the folds' models do not stack: %s", self.name, exc)
            return None

    def state_files(self, model: nn.Module) -> dict[str, StateDict]:
        """Split ``model.state_dict()`` into the files of :attr:`files`."""
        state = model.state_dict()
        out: dict[str, StateDict] = {}
        for file_name, prefixes in self.files.items():
            out[file_name] = {k: v for k, v in state.items() if _under(k, prefixes)}
        left = sorted(set(state) - {k for part in out.values() for k in part})
        if left:
            raise TypeError(
                f"merge method {self.name!r}: state {left[:5]} is in none of its files {list(self.files)}"
            )
        return {name: part for name, part in out.items() if part}

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        """Extra CSVs written next to the weights, from the test-set ``extras`` (default none)."""
        return {}


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)
