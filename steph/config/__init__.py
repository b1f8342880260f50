"""Typed, frozen configuration: defaults < stephctl.yaml < CLI flags.

One dataclass per stage (``extract``, ``model``/``train``, ``merge``, ``evaluate``, ``slurm``)
under one :class:`ProjectConfig`. Unknown keys are errors with a did-you-mean; every stage saves
the resolved config next to its outputs (:func:`dump_yaml`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, MissingArtifactError
from ..layout import CONFIG_FILE, PathTemplates, ProjectLayout, check_encoder_name, normalize_cancer
from ._loader import build, load_yaml, set_dotted, to_plain
from .evaluate import EvaluateConfig
from .extract import ExtractConfig, TissueConfig
from .labels import LabelsConfig
from .merge import MergeConfig, command_line_wins, move_legacy_keys
from .slurm import SlurmConfig
from .train import ModelConfig, TrainConfig
from .transfer import TransferConfig

__all__ = [
    "DEFAULT_ENCODER",
    "ConfigSource",
    "EvaluateConfig",
    "ExtractConfig",
    "LabelsConfig",
    "MergeConfig",
    "ModelConfig",
    "ProjectConfig",
    "SlurmConfig",
    "TissueConfig",
    "TrainConfig",
    "TransferConfig",
    "dump_yaml",
    "load_config",
    "load_project",
    "read_config",
    "replace",
    "to_plain",
]

DEFAULT_ENCODER = "tiny-cnn"


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    """The whole of ``stephctl.yaml``."""

    cancers: list[str] = field(default_factory=list)
    """Cancers of the project (empty = every labels/<CANCER>.csv found)."""
    evaluation_only: list[str] = field(default_factory=list)
    """Cancers too small to train (rare tumours): never trained or merged, only evaluated zero-shot by `stephctl transfer` (each source and the mean of the sources' risks; every labelled patient is a test patient)."""
    targets: list[str] = field(default_factory=list)
    """The cancers the project transfers to (empty = every cancer). The others are sources only:
    train-source and task-vector make them on `merge.source_fold` alone (the fold merge takes
    sources from), and `stephctl status` expects merges for the targets only."""
    encoder: str = DEFAULT_ENCODER
    """Feature encoder; features live under features/<encoder>/."""
    seed: int = 42
    """Project seed (theta0 initialisation, synthetic data)."""
    encoder_aliases: list[str] = field(default_factory=list)
    """Other names feature files may record for `encoder` (accepted as the same encoder); files
    naming any other encoder are refused. Spellings such as uni_v2 / uni2-h match without this."""
    allowed_signers: str | None = None
    """Trust list for shared bundles: an ssh-keygen allowed-signers file (relative to the project).
    When set, predict --model, import-sources and merge accept only bundles signed (<bundle>.sig)
    by a key it lists (docs/sharing.md)."""
    max_patches: int = 1_000_000
    """Most patches one slide's features may hold. A feature file declaring more is refused
    before it is read by check, the stages and predict (which also takes --max-patches; files
    from elsewhere, docs/security.md); a whole 40x slide at 256 px has a few hundred thousand."""
    paths: PathTemplates = field(default_factory=PathTemplates)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cancers", [normalize_cancer(c) for c in self.cancers])
        if len(set(self.cancers)) != len(self.cancers):
            raise ConfigError(f"cancers: duplicate entries in {self.cancers}")
        object.__setattr__(self, "evaluation_only", [normalize_cancer(c) for c in self.evaluation_only])
        both = sorted(set(self.cancers) & set(self.evaluation_only))
        if both:
            raise ConfigError(
                f"evaluation_only: {', '.join(both)} also listed in cancers",
                hint="an evaluation-only cancer is never trained: list it in one of the two only",
            )
        object.__setattr__(self, "targets", [normalize_cancer(c) for c in self.targets])
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets: duplicate entries in {self.targets}")
        outside = [t for t in self.targets if self.cancers and t not in self.cancers]
        if outside:
            raise ConfigError(
                f"targets: {', '.join(outside)} not among cancers: {self.cancers}",
                hint="add them to cancers: or remove them from targets:",
            )
        check_encoder_name(self.encoder)
        if self.max_patches < 1:
            raise ConfigError(f"max_patches: must be >= 1, got {self.max_patches}")


def load_config(
    root: Path | str,
    overrides: Mapping[str, Any] | None = None,
    *,
    require: bool = True,
    config_file: Path | str | None = None,
) -> ProjectConfig:
    """Load ``<root>/stephctl.yaml`` (or ``config_file``, stephctl's ``--config``) and apply
    ``overrides`` (dotted keys; ``None`` values are ignored, so unset CLI flags do not override
    the file): :func:`read_config` then :meth:`ConfigSource.resolve`.

    Raises:
        MissingArtifactError: no stephctl.yaml and ``require`` is true; ``config_file`` missing.
        ConfigError: unknown key, bad type or out-of-range value.
    """
    return read_config(root, config_file=config_file).resolve(overrides, require=require)


@dataclass(frozen=True)
class ConfigSource:
    """A project's settings as read from its file, once per command: every configuration the
    command needs (``stephctl slurm``: one per stage, each with its stage's flags) is resolved
    from it with :meth:`resolve`, without reading the file again.

    Attributes:
        root: The project folder.
        path: The settings file (``<root>/stephctl.yaml`` or ``--config FILE``).
        data: Its sections as parsed (legacy keys moved); empty when the file does not exist.
        exists: Whether the file exists.
    """

    root: Path
    path: Path
    data: Mapping[str, Any]
    exists: bool

    def resolve(self, overrides: Mapping[str, Any] | None = None, *, require: bool = True) -> ProjectConfig:
        """The configuration with ``overrides`` applied (``None`` values ignored).

        Raises:
            MissingArtifactError: the file does not exist and ``require`` is true.
            ConfigError: unknown key, bad type or out-of-range value (the file is checked on
                its own first, so a flag cannot hide its errors).
        """
        if not self.exists and require:
            raise MissingArtifactError(
                f"not a stephctl project: {self.path} does not exist",
                hint=f"run `stephctl init {self.root}` or pass -p/--project DIR",
            )
        data = copy.deepcopy(dict(self.data))
        if self.exists and overrides:  # the file must be valid on its own: a flag must not hide its errors
            _build_checked(data, self.path)
        moved = move_legacy_keys(data, overrides or {})
        command_line_wins(data, moved)
        for key, value in moved.items():
            if value is not None:
                set_dotted(data, key, value)
        return _build_checked(data, self.path)


def read_config(root: Path | str, *, config_file: Path | str | None = None) -> ConfigSource:
    """Read and parse ``<root>/stephctl.yaml`` (or ``config_file``) once; see :class:`ConfigSource`.

    Raises:
        MissingArtifactError: ``config_file`` is given and missing.
        ConfigError: the file is not YAML, or its top level is not a mapping.
    """
    path = Path(root) / CONFIG_FILE if config_file is None else Path(config_file).expanduser()
    data: dict[str, Any] = {}
    if config_file is not None and not path.is_file():
        raise MissingArtifactError(
            f"config file not found: {path}", hint="check --config FILE (or $STEPHCTL_CONFIG)"
        )
    exists = path.is_file()
    if exists:
        loaded = load_yaml(path.read_text(encoding="utf-8"), str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
        move_legacy_keys(data, {})  # merge.top_k ... -> merge.options (with a warning)
    return ConfigSource(Path(root), path, data, exists)


def _build_checked(data: dict[str, Any], path: Path) -> ProjectConfig:
    try:
        return build(ProjectConfig, copy.deepcopy(data))
    except ConfigError as exc:
        if path.is_file() and str(path) not in exc.message:
            exc.message = f"{path}: {exc.message}"
        raise


def load_project(
    root: Path | str, overrides: Mapping[str, Any] | None = None, *, config_file: Path | str | None = None
) -> tuple[ProjectLayout, ProjectConfig]:
    """Config and layout of the project at ``root`` (templates from ``paths:`` applied); the
    settings come from ``config_file`` when given, else ``<root>/stephctl.yaml``."""
    config = load_config(root, overrides, config_file=config_file)
    return ProjectLayout(Path(root), config.paths), config


def dump_yaml(obj: Any) -> str:
    """A config (or any dataclass tree) as YAML, for saving next to outputs."""
    return yaml.safe_dump(to_plain(obj), sort_keys=False, default_flow_style=None)
