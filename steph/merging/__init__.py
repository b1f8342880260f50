"""Merge methods: STEPH and the baselines, behind one small contract that plugins implement too.

The contract
------------
A merge method is an instance of a :class:`MergeMethod` subclass registered in
:data:`MERGE_METHODS` under its ``name``. For each target fold ``stephctl merge`` builds a
:class:`MergeContext` (theta0, the target's task vector, the ordered source names and task
vectors, the target's training split and its bags, the resolved ``merge:`` config with
``options``, the model config, the device and the seed), seeds every RNG, and calls:

0. Settings: a frozen dataclass in ``settings_class``, one field per setting with a default and
   ``metadata=doc("help")`` (:mod:`steph.merging.settings`; the built-in ones in
   :mod:`steph.merging.method_settings`). Each is a key of ``merge.options`` (``--option
   KEY=VALUE``, or a flag of its own with ``doc(..., flag=HELP)``); the method's own block
   ``merge.<name>: {...}`` wins over it. ``self.settings(config)`` returns the typed, checked
   instance; the run-folder suffixes, ``--list-methods``, the flags and the docs tables
   (:mod:`steph.merging.reference`) come from the same declaration.
1. ``check(config, n_sources)`` before any work: raise :class:`~steph.errors.ConfigError` for
   settings the method cannot run with (the base class validates the settings).
2. ``build(ctx) -> nn.Module``: the untrained model. ``forward(x [B, K, D], mask [B, K])`` returns
   logits ``[B, T]`` or a :class:`~steph.training.loop.ModelOutput` (logits, ``aux_loss`` added
   to SurvMLE, ``extras`` collected at prediction time). Frozen inputs go in non-persistent
   buffers, so ``state_dict()`` is exactly what is learned. ``build`` must not need the
   training data: :func:`load_merged_model` calls it to rebuild a trained model.
3. ``train(model, ctx)``: by default the shared training loop over the parameters that
   require grad (the train-source protocol); nothing when none does.
4. ``state_files(model)``: the state dict split into the safetensors files named in ``files``;
   ``tables(model, test_ids, extras, ctx)``: extra CSVs (STEPH's ``coefficients.csv``).
5. Optional, ``stacked_model``: a :class:`~steph.merging.base.StackedModel` subclass built
   from several folds' models (``stack(models)``), which trains them in the same optimiser
   steps, each fold's result its own run's, and writes what they learned back
   (``unstack(models)``; :mod:`steph.training.stacked`, ``train.stack_units``); None, the
   default: each fold trains alone through ``train``.

The settings, ``check`` and ``run_name`` make up :class:`~steph.merging.spec.MethodSpec`, which
:class:`MergeMethod` extends with the work; a spec imports no torch, so planning (``stephctl
status``, ``slurm``) and ``--list-methods`` read the built-ins' specs (:mod:`steph.merging.catalog`)
and import a method's model only when it is needed (``MERGE_METHODS.get``).

``run_name(config)`` names the output folder (the method name plus a suffix per non-default
setting) so that variants sit side by side. A plugin package registers its methods through
the ``stephctl.merge_methods`` entry-point group with a ``register(registry)`` function; the
registry is :data:`steph.merging.registry.MERGE_METHODS` (re-exported here).

Fixed-weight merges (``model-avg``, ``task-arithmetic``, ``ties``, ``iso-c``, ``iso-cts``)
keep the target model's own trained head and are not trained, as the reference's
``MergedModel`` with fixed weights; learned merges train a new head
(``task_ari_module_to_retrain: pred_head``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import MergeContext, MergeMethod, StateDict, Table
    from .loading import MergedPredictor, load_merged_model
    from .registry import MERGE_METHODS, list_methods

_HOME = {
    "MergeContext": "base",
    "MergeMethod": "base",
    "StateDict": "base",
    "Table": "base",
    "MergedPredictor": "loading",
    "load_merged_model": "loading",
    "MERGE_METHODS": "registry",
    "list_methods": "registry",
}
"""Where each public name lives: imported on first use, so that the torch-free modules
(:mod:`~steph.merging.settings`, :mod:`~steph.merging.method_settings`) load without torch."""


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MERGE_METHODS",
    "MergeContext",
    "MergeMethod",
    "MergedPredictor",
    "StateDict",
    "Table",
    "list_methods",
    "load_merged_model",
]
