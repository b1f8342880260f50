"""Method names as users type them -> the run folders a project has.

A merge writes its results under a *run* folder named after the method plus one suffix per
setting that differs from the method's defaults (``steph-top2``, ``steph-fixed-lambda0``,
``ties-gamma0.05``). Users type the method (``-m steph``); :func:`resolve_run` maps it to the
run: the folder of that name when there is one, else the one run whose record
(:class:`~steph.records.MergeRecord`) names that method. Of several such runs (an ablation
beside the main run) it is the one the project's settings make (what ``stephctl merge -m steph``
writes); when none is, they are listed. A method without any run is an error listing the runs
there are.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import StephError, UnknownNameError
from .layout import CANCER_SPECIFIC, ProjectLayout, normalize_cancer
from .records import MergeRecord

if TYPE_CHECKING:
    from .config import ProjectConfig

log = logging.getLogger(__name__)


def project_runs(layout: ProjectLayout, target: str) -> list[str]:
    """Every run of ``target`` with results or a merge folder (``cancer-specific`` included)."""
    target = normalize_cancer(target)
    return sorted(set(layout.result_methods(target)) | set(layout.merged_runs(target)))


def run_method(layout: ProjectLayout, target: str, run: str) -> str | None:
    """The method a run folder was made with (from the record of its first finished fold)."""
    if run == CANCER_SPECIFIC:
        return CANCER_SPECIFIC
    for fold in layout.merged_folds(target, run):
        path = layout.merged_meta(target, run, fold)
        if path.is_file():
            try:
                return MergeRecord.read(path).method
            except StephError:
                continue
    return None


def settings_run(config: ProjectConfig, method: str) -> str | None:
    """The run folder ``stephctl merge --method <method>`` makes with the project's settings
    (None when ``method`` is not a merge method or its settings are invalid)."""
    from .merging import MERGE_METHODS
    from .merging.inputs import for_method

    try:
        chosen = MERGE_METHODS.get(method)
        return chosen.run_name(for_method(config.merge, chosen))
    except StephError:
        return None


def resolve_run(
    layout: ProjectLayout,
    target: str,
    name: str,
    *,
    config: ProjectConfig | None = None,
    strict: bool = True,
) -> str:
    """The run folder ``name`` means for ``target``: itself when such a run exists (or nothing
    exists yet, so the caller's own "not trained" message applies), else the one run made with
    method ``name`` (``steph`` -> ``steph-top2``); of several, the one ``config``'s settings make.

    Raises:
        UnknownNameError: several runs of method ``name`` (lists them), or (when ``strict``;
            otherwise ``name`` is returned) none while other runs exist (lists those).
    """
    target = normalize_cancer(target)
    runs = project_runs(layout, target)
    if name in runs or name == CANCER_SPECIFIC or not runs:
        return name
    matches = [run for run in runs if run_method(layout, target, run) == name]
    if len(matches) == 1:
        log.info("%s: method %s is the run %s", target, name, matches[0])
        return matches[0]
    preferred = settings_run(config, name) if config is not None and matches else None
    if preferred in matches:
        log.info("%s: method %s is the run %s (the project's settings)", target, name, preferred)
        return str(preferred)
    if matches:
        raise UnknownNameError(
            f"{target}: method {name!r} has {len(matches)} runs: {', '.join(matches)}",
            hint=f"name the run, e.g. -m {matches[0]}",
        )
    if not strict:
        return name
    raise UnknownNameError(
        f"{target}: no run of method {name!r}; runs with results: {', '.join(runs)}",
        hint=f"pick one of those with -m, or make it: `stephctl merge --target {target} --method {name}`",
    )
