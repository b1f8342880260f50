"""The merge-method contract: :class:`MergeContext` in, a trained ``nn.Module`` out.

See the package docstring (:mod:`steph.merging`) for how a plugin implements a method.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..config.merge import MergeConfig
from ..errors import ConfigError
from ..progress import NULL_PROGRESS, Progress
from ..training.loop import FitSettings, fit
from .settings import fold_block, read_settings, settings_suffixes

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..data import Cohort
    from ..survival import SurvivalTargets
    from ..training.loop import BagSource

StateDict = dict[str, Tensor]
Table = tuple[list[str], list[list[Any]]]
"""A CSV to write: header and rows."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none."""


@dataclass(frozen=True, kw_only=True)
class MergeContext:
    """Everything a merge method may use for one target fold.

    ``train``, ``bags`` and ``cohort`` are None when a trained model is only rebuilt for
    inference (:func:`steph.merging.load_merged_model`): ``build`` must not need them.
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

    @property
    def n_sources(self) -> int:
        return len(self.source_names)


class MergeMethod(abc.ABC):
    """Base class of merge methods; subclasses set the class attributes and :meth:`build`.

    Class attributes:
        name: registry name (``stephctl merge --method NAME``).
        description: one line for ``--list-methods``.
        reference: paper or URL the method reproduces.
        settings_class: a frozen dataclass of the method's typed settings, each field with a
            default and ``metadata=doc("help")`` (:func:`steph.merging.settings.doc`); read from
            ``merge.options`` and the method's block ``merge.<name>``. None: no settings.
        files: safetensors file name -> state-dict key prefixes it holds; together they must
            cover the model's whole ``state_dict()`` (frozen inputs are non-persistent buffers).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    settings_class: ClassVar[type] = NoSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {"head.safetensors": ("pred_head",)}

    # -- settings -----------------------------------------------------------------------------
    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The keys of ``merge.options`` / ``merge.<name>`` this method reads."""
        return tuple(f.name for f in dataclasses.fields(cls.settings_class))

    def settings(self, config: MergeConfig) -> Any:
        """This method's typed settings from ``config``: ``merge.options``, then the method's own
        block ``merge.<name>`` (:func:`~steph.merging.settings.fold_block`). A setting with a
        flag of its own (``--top-k``) that this method does not read is left to the methods
        that do (:func:`steph.merging.inputs.requested_methods` refuses one that no requested
        method reads); any other unknown key is refused.

        Raises:
            ConfigError: an unknown option key or a value of the wrong type (lists valid keys).
        """
        from .registry import MERGE_METHODS  # the registry imports this module

        config = fold_block(config, self.name)
        shared = {  # settings with a flag of their own (--top-k ...) are for whichever method reads them
            f.name
            for _, method in MERGE_METHODS.items()
            for f in dataclasses.fields(method.settings_class)
            if "flag" in f.metadata
        }
        unknown = sorted(set(config.options) - set(self.setting_names()) - shared)
        if unknown:
            defaults = {f.name: f.default for f in dataclasses.fields(self.settings_class)}
            valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
            raise ConfigError(
                f"merge.options: unknown option(s) {', '.join(map(repr, unknown))} for method {self.name!r}",
                hint=f"options of {self.name}: {valid}",
            )
        return read_settings(self.settings_class, config, self.name)

    def options(self, config: MergeConfig) -> dict[str, Any]:
        """The resolved settings as a plain dict (recorded in ``meta.json``)."""
        return dataclasses.asdict(self.settings(config))

    def same_options(self, recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
        """Whether a run's recorded options (its ``meta.json``) are the ``wanted`` ones. A
        setting the record lacks (added to the method after the run was made) matches when it
        is wanted at its default, so earlier runs stay done; one the record has that the method
        no longer has is ignored."""
        defaults = self.options(MergeConfig())
        for key, value in wanted.items():
            if key in recorded:
                if recorded[key] != value:
                    return False
            elif key not in defaults or defaults[key] != value:
                return False
        return True

    def check(self, config: MergeConfig, n_sources: int) -> None:
        """Refuse settings this method cannot run with, before any training (override to extend)."""
        self.settings(config)
        if n_sources < 1:
            raise ConfigError(f"{self.name} needs at least one source cancer", hint="pass --sources C ...")

    def run_name(self, config: MergeConfig) -> str:
        """Folder name of a run (``merged/<T>/<run_name>``): the method name plus one suffix per
        setting that differs from its default, so variants sit side by side in the results."""
        return "-".join([self.name, *settings_suffixes(self.settings(config))])

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
