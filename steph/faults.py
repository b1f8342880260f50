"""Fault injection at named points, for the kill and disk-full tests (inert unless asked for).

``STEPH_FAULT="ACTION@POINT"`` (several separated by ``,``) makes the process, when it reaches
``POINT``:

- ``kill``: send itself SIGKILL (no cleanup runs, as when a node dies or Slurm kills a task);
- ``enospc``: raise ``OSError(ENOSPC)``, as a full disk does.

``POINT[#N]`` fires at the N-th time the point is reached (default the first). Points:

- ``write:<name>``: :func:`steph.fileio.atomic_path` has written the temporary file of the final
  file ``<name>`` (``meta.json``, ``predictions.csv``, ``model.safetensors`` ...) and is about to
  rename it into place;
- ``<stage>:locked``: a stage (``train-source``, ``task-vector``, ``merge``) holds the lock of a
  unit and is about to work on it (task-vector and merge have removed its old record).

Example: ``STEPH_FAULT=kill@write:meta.json stephctl merge --target BRCA`` dies after the first
unit's predictions are written and before its record.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "STEPH_FAULT"
_hits: Counter[str] = Counter()
_spec: list[str] = [""]  # the spec the counts belong to (a new spec starts counting afresh)


def point(name: str) -> None:
    """Reached the named point: act if ``$STEPH_FAULT`` asks for it, else do nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if spec != _spec[0]:
        _spec[0] = spec
        _hits.clear()
    _hits[name] += 1
    for entry in spec.split(","):
        action, _, where = entry.strip().partition("@")
        target, _, nth = where.partition("#")
        if target != name or _hits[name] != (int(nth) if nth.isdigit() else 1):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name.partition(":")[2] or name)
