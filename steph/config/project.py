"""One project, resolved once per run: its layout, its configuration and the derived defaults.

Every command, array task and notebook reaches a project through :func:`open_project` (or the
CLI's ``get_project``, then :class:`Project`), and every stage reads its defaults from here:

- **cancers**: ``cancers:`` of stephctl.yaml, else every ``labels/<CANCER>.csv`` found
  (:func:`project_cancers`);
- **targets**: ``targets:`` of stephctl.yaml, else every cancer (:meth:`Project.targets`);
- **folds** of a cancer: ``train.folds``, else every split file found; a source-only cancer (not
  among ``targets:`` when it is set) only ``merge.source_fold`` (:func:`project_folds`);
  the folds a merge targets by default: ``merge.folds``, else those (:meth:`Project.merge_folds`);
- **epochs**: ``train.epochs``; a merge trains ``merge.epochs`` when set, else ``train.epochs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..layout import ProjectLayout, normalize_cancer
from . import ProjectConfig, load_project

__all__ = ["Project", "merge_epochs", "open_project", "project_cancers", "project_folds"]


def project_cancers(layout: ProjectLayout, config: ProjectConfig) -> list[str]:
    """The project's cancers: ``cancers:`` of stephctl.yaml, else every labels/<CANCER>.csv
    (without the ``evaluation_only`` ones, which are never trained)."""
    return list(config.cancers) or [c for c in layout.label_cancers() if c not in config.evaluation_only]


def project_folds(layout: ProjectLayout, config: ProjectConfig, cancer: str) -> list[int]:
    """The folds the project trains for ``cancer``: ``train.folds``, else every split file found;
    for a source-only cancer (``targets:`` is set and does not name it) ``[merge.source_fold]``,
    the one fold a merge takes sources from.

    Later stages expect a model, task vector or merge of exactly these folds by default.
    """
    if config.targets and normalize_cancer(cancer) not in config.targets:
        return [config.merge.source_fold]
    return list(config.train.folds or layout.split_folds(cancer))


def merge_epochs(config: ProjectConfig) -> int:
    """The epochs a merge trains: ``merge.epochs`` when set, else ``train.epochs``."""
    return config.merge.epochs if config.merge.epochs is not None else config.train.epochs


@dataclass(frozen=True)
class Project:
    """A project's layout and resolved configuration, with the defaults every stage derives."""

    layout: ProjectLayout
    config: ProjectConfig

    @property
    def root(self) -> Path:
        return self.layout.root

    @cached_property
    def cancers(self) -> list[str]:
        """:func:`project_cancers`, read once."""
        return project_cancers(self.layout, self.config)

    @property
    def targets(self) -> list[str]:
        """The cancers the project transfers to: ``targets:``, else every cancer."""
        return list(self.config.targets) or list(self.cancers)

    def select_cancers(self, requested: Sequence[str] | None) -> list[str]:
        """``requested`` (normalised, in order, once each), else :attr:`cancers`."""
        if requested:
            return list(dict.fromkeys(normalize_cancer(c) for c in requested))
        return list(self.cancers)

    def folds(self, cancer: str) -> list[int]:
        """:func:`project_folds` of ``cancer``."""
        return project_folds(self.layout, self.config, normalize_cancer(cancer))

    def merge_folds(self, target: str) -> list[int]:
        """The target folds a merge runs by default: ``merge.folds``, else :meth:`folds`."""
        return list(self.config.merge.folds or self.folds(target))

    @property
    def train_epochs(self) -> int:
        return self.config.train.epochs

    @property
    def merge_epochs(self) -> int:
        """``merge.epochs`` when set, else ``train.epochs``."""
        return merge_epochs(self.config)


def open_project(
    root: Path | str = ".",
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | str | None = None,
) -> Project:
    """Load ``<root>/stephctl.yaml`` once, apply dotted ``overrides`` (``{"train.epochs": 2}``;
    None values are ignored) and return the resolved :class:`Project`. ``config_file`` is what
    the CLI's global ``--config FILE`` gives: its settings are used instead of stephctl.yaml's
    (``overrides`` still win).

    Raises:
        MissingArtifactError: not a stephctl project, or no ``config_file``.
        ConfigError: unknown key, bad type or out-of-range value.
    """
    layout, config = load_project(root, overrides, config_file=config_file)
    return Project(layout, config)
