"""Running stephctl at cluster scale: task lists, Slurm job arrays, project status, multi-device extract.

- :mod:`.tasks`: every stage's units of work, enumerable up front and runnable by index
  (``--list-tasks``, ``--task-index``, ``$SLURM_ARRAY_TASK_ID``).
- :mod:`.slurm`: sbatch array scripts from a task list, chained with ``--dependency=afterok``.
- :mod:`.status`: what exists and what is missing per stage, recorded failures, live and stale locks.
- :mod:`.multi_device`: ``extract --devices 0,1,2,3``, one worker process per device.

Concurrency safety itself lives with the stages: per-unit lock files (:mod:`steph.locks`) and
atomic writes (:mod:`steph.fileio`).
"""

from __future__ import annotations

from .tasks import list_tasks, run_task, stage_names, task_index_from_env

__all__ = ["list_tasks", "run_task", "stage_names", "task_index_from_env"]
