"""What a merge starts from: the target, its sources, theta0 and their task vectors, all checked.

Every check here runs before any training, so a bad invocation fails in a second with a message
that names what is missing or inconsistent and the command that fixes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config.merge import MergeConfig
from ..config.project import project_cancers
from ..errors import ConfigError, ConsistencyError, MissingArtifactError
from ..layout import normalize_cancer
from ..records import TaskVectorRecord
from .registry import MERGE_METHODS, method_spec
from .settings import check_block, fold_block, unknown_block
from .spec import MethodSpec

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from ..task_vectors import StateDict
    from ..theta0 import Theta0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeInputs:
    """theta0 and the task vectors of one target fold (sources in ``source_names`` order)."""

    theta0: Theta0
    target_vector: StateDict
    source_names: tuple[str, ...]
    source_vectors: tuple[StateDict, ...]
    vector_hashes: dict[str, str]
    """``"<CANCER>/fold_<k>"`` -> sha256 of each task-vector file used."""


def vector_key(cancer: str, fold: int) -> str:
    return f"{cancer}/fold_{fold}"


def resolve_target(layout: ProjectLayout, config: ProjectConfig, target: str) -> str:
    """The normalised target name.

    Raises:
        ConfigError: the target is not a cancer of the project.
    """
    name = normalize_cancer(target)
    known = project_cancers(layout, config)
    if not known:
        raise MissingArtifactError(
            f"cannot merge into {name}: the project at {layout.root} has no cancers yet "
            f"(no cancers: in stephctl.yaml, no labels like {layout.labels(name)})",
            hint="add labels and splits (or set paths: and cancers: in stephctl.yaml), then run "
            f"`stephctl -p {layout.root} train-source` and `stephctl -p {layout.root} task-vector` "
            "before merge; `stephctl check` lists what is missing",
        )
    if name not in known:
        raise ConfigError(
            f"target {name} is not a cancer of the project at {layout.root}",
            hint=f"cancers of the project: {', '.join(known) or '(none)'}; add it to `cancers:` in stephctl.yaml",
        )
    return name


def resolve_sources(layout: ProjectLayout, config: ProjectConfig, target: str) -> list[str]:
    """``merge.sources`` (default: every other cancer of the project, imported sources
    included), without the target. With ``[auto:K]`` every other cancer is a candidate; the
    merge plan picks K of them per fold (:mod:`steph.transfer.choose`).

    The reference removes the target from its source list (``task_ari_src_exlude_target``); a
    target named in ``--sources`` is dropped with a warning.

    Raises:
        ConfigError: a source is not a cancer of the project, or no source is left.
    """
    known = project_cancers(layout, config)
    known += [c for c in imported_cancers(layout) if c not in known]
    from ..transfer.choose import parse_auto

    listed = config.merge.sources if parse_auto(config.merge.sources) is None else None
    requested = [normalize_cancer(s) for s in listed] if listed else known
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise ConfigError(
            f"source(s) {', '.join(unknown)} are not cancers of the project",
            hint=f"cancers of the project: {', '.join(known)}",
        )
    if listed and target in requested:
        log.warning(
            "%s is the target: it is not used as a source (its same-fold task vector is the target's)", target
        )
    sources = list(dict.fromkeys(s for s in requested if s != target))
    if not sources:
        raise ConfigError(
            f"no source cancers for target {target}", hint="list at least one other cancer with --sources"
        )
    return sources


def imported_cancers(layout: ProjectLayout) -> list[str]:
    """Cancers whose task vectors were brought in by ``stephctl import-sources`` (a fold's record
    names its bundle: :attr:`~steph.records.TaskVectorRecord.imported_from`)."""
    found = []
    for cancer in layout.task_vector_cancers():
        if any(
            TaskVectorRecord.read(layout.task_vector_meta(cancer, k)).imported
            for k in layout.task_vector_folds(cancer)
        ):
            found.append(cancer)
    return found


def target_folds(layout: ProjectLayout, target: str, folds: Sequence[int] | None) -> list[int]:
    """``folds``, or every fold of the target with a task vector.

    Raises:
        MissingArtifactError: no folds given and the target has no task vector at all.
    """
    if folds:
        return sorted({int(k) for k in folds})
    found = [k for k in layout.split_folds(target) if layout.task_vector_meta(target, k).is_file()]
    if not found:
        raise MissingArtifactError(
            f"target {target} has no task vectors (looked for {layout.task_vector_meta(target, 0).name} and the other folds under {layout.task_vector(target, 0).parent})",
            hint=f"run `stephctl -p {layout.root} task-vector --cancer {target}`"
            f" (after `stephctl -p {layout.root} train-source --cancer {target}` if it has no models yet)",
        )
    return found


def require_task_vectors(layout: ProjectLayout, needed: Sequence[tuple[str, int]]) -> None:
    """Refuse if any needed task vector is missing, listing every one and the commands.

    Raises:
        MissingArtifactError: with one ``stephctl task-vector`` command per missing fold.
    """
    missing = [(c, k) for c, k in dict.fromkeys(needed) if not layout.task_vector_meta(c, k).is_file()]
    if not missing:
        return
    by_fold: dict[int, list[str]] = {}
    for cancer, fold in missing:
        by_fold.setdefault(fold, []).append(cancer)
    commands = [
        f"`stephctl -p {layout.root} task-vector "
        + " ".join(f"--cancer {c}" for c in cancers)
        + f" --fold {fold}`"
        for fold, cancers in sorted(by_fold.items())
    ]
    raise MissingArtifactError(
        f"{len(missing)} task vector(s) missing: " + ", ".join(f"{c} fold {k}" for c, k in missing),
        hint="run " + " and ".join(commands) + " (after `stephctl train-source` for models not trained yet)",
    )


def check_task_vectors(layout: ProjectLayout, needed: Sequence[tuple[str, int]], theta0: Theta0) -> None:
    """Refuse task vectors made from another theta0 or another architecture (lists all).

    Raises:
        ConsistencyError: naming every offending vector and why merging needs a shared start.
    """
    problems: list[str] = []
    for cancer, fold in dict.fromkeys(needed):
        record = TaskVectorRecord.read(layout.task_vector_meta(cancer, fold))
        if record.theta0_sha256 != theta0.sha256:
            problems.append(
                f"{cancer} fold {fold} was made from theta0 {str(record.theta0_sha256)[:12]}..."
                f" (project theta0 {theta0.sha256[:12]}...)"
            )
        elif record.architecture != theta0.architecture:
            problems.append(
                f"{cancer} fold {fold} has architecture {record.architecture} (theta0 {theta0.architecture})"
            )
    if problems:
        raise ConsistencyError(
            "task vectors can only be merged when every model started from the same theta0 with the same "
            "architecture: " + "; ".join(problems),
            hint="retrain those models from the project's theta0 (`stephctl train-source --overwrite`), then "
            "`stephctl task-vector --overwrite`",
        )


def requested_methods(config: ProjectConfig, methods: Sequence[str] | None) -> list[MethodSpec]:
    """The methods to run (``merge.method`` when none given), validated against the registry and
    against the settings in ``merge.options``.

    Raises:
        UnknownNameError: an unknown method (lists the registered ones).
        ConfigError: a setting in ``merge.options`` (``--top-k``, ``--option KEY=VALUE`` ...) that
            none of the requested methods reads (names the methods that do, if any).
    """
    names = list(dict.fromkeys(methods or [config.merge.method]))
    chosen = [method_spec(name) for name in names]
    check_blocks(config.merge)
    accepted = {key for m in chosen for key in m.setting_names()}
    unknown = [key for key in config.merge.options if key not in accepted]
    for key in unknown:
        users = [n for n in MERGE_METHODS.names() if key in method_spec(n).setting_names()]
        if users:
            raise ConfigError(
                f"merge.{key} is set to {config.merge.options[key]!r} but no requested method uses it "
                f"(methods: {', '.join(names)})",
                hint=f"it applies to: {', '.join(users)}; drop the flag or request one of those with --method",
            )
    if unknown:
        valid = "; ".join(f"{m.name}: {', '.join(m.setting_names()) or 'none'}" for m in chosen)
        raise ConfigError(
            f"unknown merge option(s) {', '.join(map(repr, sorted(unknown)))} for {', '.join(names)}",
            hint=f"options of the requested methods: {valid} (`stephctl merge --list-methods`)",
        )
    return chosen


def check_blocks(merge: MergeConfig) -> None:
    """Check every block ``merge.<method>: {...}`` against that method's settings dataclass,
    requested or not (a typo must not wait for the day that method runs).

    Raises:
        ConfigError: a block of an unknown method, an unknown key or a wrong type (did-you-mean).
    """
    for name, block in merge.per_method.items():
        if name not in MERGE_METHODS:
            raise unknown_block(name, MERGE_METHODS.names())
        check_block(name, method_spec(name).settings_class, block)


def for_method(merge: MergeConfig, method: MethodSpec) -> MergeConfig:
    """``merge`` as seen by one method: its own block ``merge.<name>`` folded in, options it does
    not declare dropped (several methods in one command share ``merge.options``)."""
    merge = fold_block(merge, method.name)
    if not merge.options:
        return merge
    names = method.setting_names()
    return replace(merge, options={k: v for k, v in merge.options.items() if k in names})


def load_inputs(
    layout: ProjectLayout, target: str, fold: int, sources: Sequence[str], source_fold: int, theta0: Theta0
) -> MergeInputs:
    """Load (and hash-check) the target's fold-``fold`` vector and each source's ``source_fold`` one."""
    from ..task_vectors import load_task_vector

    target_vector, target_record = load_task_vector(layout, target, fold)
    hashes = {vector_key(target, fold): str(target_record.sha256)}
    vectors: list[StateDict] = []
    for source in sources:
        vector, record = load_task_vector(layout, source, source_fold)
        hashes[vector_key(source, source_fold)] = str(record.sha256)
        vectors.append(vector)
    return MergeInputs(theta0, target_vector, tuple(sources), tuple(vectors), hashes)
