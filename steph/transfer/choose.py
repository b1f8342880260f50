"""``merge --sources auto:K``: the K sources that transfer best to the target, per target fold.

For merge fold k of target T, the candidates (every other cancer of the project) are ranked by
their zero-shot C-index on T's **training** split of fold k (``c_train`` of ``stephctl
transfer``'s record, :mod:`steph.transfer.zero_shot`), and the K best are the merge's sources.
T's test split of fold k is never looked at, so the choice does not leak into the merge's test
C-index. The choice (K, the ranking and the record it came from) is written into the merge
fold's ``meta.json`` (``source_choice``), and the run folder gets an ``-autoK`` suffix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingArtifactError
from ..records import TransferRecord

if TYPE_CHECKING:
    from ..layout import ProjectLayout

_AUTO = re.compile(r"auto:(\d+)")


def parse_auto(sources: Sequence[str] | None) -> int | None:
    """K of ``merge.sources: [auto:K]``, None for a list of cancers (or no list).

    >>> parse_auto(["auto:3"]), parse_auto(["BRCA", "BLCA"]), parse_auto(None)
    (3, None, None)

    Raises:
        ConfigError: ``auto:`` with no positive K, or ``auto:K`` next to cancer names.
    """
    if not sources or not any(str(s).lower().startswith("auto") for s in sources):
        return None
    match = _AUTO.fullmatch(str(sources[0]).strip().lower()) if len(sources) == 1 else None
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"merge.sources: {', '.join(map(str, sources))} is not auto:K",
            hint="give either cancers (--sources BRCA,BLCA) or auto:K alone with K >= 1 (--sources auto:3)",
        )
    return int(match.group(1))


@dataclass(frozen=True)
class SourceChoice:
    """The sources chosen for one target fold and why."""

    k: int
    fold: int
    sources: list[str]
    ranking: list[tuple[str, float]]
    """Every candidate with its zero-shot C-index on the target's training split, best first."""
    record: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": f"auto:{self.k}",
            "ranked_by": "zero-shot C-index on the target's training split of this fold (stephctl transfer)",
            "fold": self.fold,
            "chosen": self.sources,
            "ranking": [{"source": s, "c_train": c} for s, c in self.ranking],
            "record": self.record,
        }


def choose_sources(
    layout: ProjectLayout, target: str, fold: int, candidates: Sequence[str], k: int
) -> SourceChoice:
    """The ``k`` candidates with the highest zero-shot C-index on ``target``'s training split of
    ``fold`` (module docstring); ties keep the candidates' order.

    Raises:
        MissingArtifactError: ``stephctl transfer`` has not run for the target.
        ConfigError: fewer than ``k`` candidates have a C-index on that fold.
    """
    path = layout.transfer_target(target)
    if not path.is_file():
        raise MissingArtifactError(
            f"--sources auto:{k} ranks sources by measured transfer, but {target} has no transfer results ({path})",
            hint=f"run `stephctl -p {layout.root} transfer --target {target}` first",
        )
    record = TransferRecord.read(path)
    scores: dict[str, float] = {}
    for pair in record.pairs:
        value = pair.get("c_train")
        if (
            pair["fold"] == fold
            and pair["source"] in candidates
            and value is not None
            and not math.isnan(value)
        ):
            scores[pair["source"]] = float(value)
    order = {s: i for i, s in enumerate(candidates)}
    ranking = sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))
    if len(ranking) < k:
        raise ConfigError(
            f"--sources auto:{k}: only {len(ranking)} source(s) have a measured transfer to {target} fold {fold} ({path})",
            hint=f"lower K, or rerun `stephctl transfer --target {target} --overwrite` after training the missing sources",
        )
    return SourceChoice(k, fold, [s for s, _ in ranking[:k]], ranking, str(path))
