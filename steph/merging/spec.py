"""What a merge method is without its model: name, settings, checks and run folder.

:class:`MethodSpec` is the part of the merge-method contract that planning, listing and the
docs need; :class:`~steph.merging.base.MergeMethod` adds the work (``build``, ``train``,
``state_files``, ``tables``). This module imports no torch, so that ``stephctl status``,
``stephctl slurm`` and ``stephctl merge --list-methods`` plan and list the methods without
loading a model (the built-ins' specs: :mod:`steph.merging.catalog`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config.merge import MergeConfig
from ..errors import ConfigError
from .settings import fold_block, read_settings, settings_suffixes

__all__ = ["MethodSpec", "NoSettings"]


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none."""


class MethodSpec:
    """Name, settings, checks and run folder of a merge method (no model).

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
        from .registry import method_specs  # the registry imports this module

        config = fold_block(config, self.name)
        shared = {  # settings with a flag of their own (--top-k ...) are for whichever method reads them
            f.name
            for method in method_specs()
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
