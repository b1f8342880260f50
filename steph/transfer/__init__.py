"""The CROPKT transferability study: zero-shot transfer across cancers and what drives it.

:mod:`.zero_shot` applies every source's cancer-specific model to one target's patients (one
unit per target, features read once); :mod:`.study` builds the source x target matrix, the gains
and the factors (:mod:`.factors`) from every target's record and :mod:`.report` draws them;
:mod:`.choose` turns the matrix into ``merge --sources auto:K``. :func:`run_transfer` is the stage.
"""

from __future__ import annotations

from .run import plan_transfer, run_transfer

__all__ = ["plan_transfer", "run_transfer"]
