"""Running stephctl at cluster scale: Slurm job arrays and project status.

- :mod:`.slurm`: sbatch array scripts from a stage's task list (:mod:`steph.stages`), chained
  with ``--dependency=afterok``.
- :mod:`.status`: what exists and what is missing per stage, recorded failures, live and stale locks.

Extract on several devices (``extract --devices 0,1,2,3``) and its shard counts are extract's own
work: :mod:`steph.pipeline.extract_devices` and :mod:`steph.pipeline.shards`.

Task lists themselves (``--list-tasks``, ``--task-index``, ``$SLURM_ARRAY_TASK_ID``) are the
stages' own plans (:mod:`steph.stages`). Concurrency safety lives with the stages: per-unit lock
files (:mod:`steph.locks`) and atomic writes (:mod:`steph.fileio`).
"""

from __future__ import annotations
