"""Trained task vectors of a synthetic cohort, in memory (for merge studies and tests).

Every cancer's ABMIL is trained from one shared theta0 on all of that cancer's patients, with
the project's trainer (:func:`steph.training.loop.fit`), and its task vector is
``tau_c = theta_c - theta0``: real trained vectors (low-rank updates, near-degenerate tails of
small singular values), at any model shape, without writing a project to disk.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig
from ..data import BagStore
from ..models.abmil import create_abmil
from ..survival import SurvivalTargets, time_to_bin
from ..training.loop import FitSettings, fit
from .cohort import CohortSpec, draw_cohort
from .features import patient_bags, prototypes, style_offset

StateDict = dict[str, torch.Tensor]


def train_task_vectors(
    spec: CohortSpec, model: ModelConfig, settings: FitSettings, *, seed: int = 0
) -> tuple[StateDict, dict[str, StateDict]]:
    """``(theta0, {cancer: tau_c})`` for every cancer of ``spec`` (theta0 drawn with ``seed``).

    The features are :func:`~steph.synthetic.features.patient_bags` of ``spec`` (a patient's
    slides concatenated); times, events and bins as ``stephctl train-source`` makes them.
    """
    torch.manual_seed(seed)
    theta0 = {k: v.detach().clone() for k, v in create_abmil(spec.features.dim, model).state_dict().items()}
    protos = prototypes(spec)
    vectors: dict[str, StateDict] = {}
    for name, cohort in draw_cohort(spec).items():
        offset = style_offset(spec, name)
        bags = {
            pid: torch.from_numpy(
                np.concatenate([b.features for b in patient_bags(spec, cohort, i, protos, offset)])
            )
            for i, pid in enumerate(cohort.patient_ids)
        }
        times = torch.tensor(cohort.time, dtype=torch.float64)
        targets = SurvivalTargets(
            ids=list(cohort.patient_ids),
            times=times,
            events=torch.tensor(cohort.event, dtype=torch.long),
            bins=time_to_bin(times, bin_width=model.bin_width_days, num_bins=model.time_bins),
        )
        net = create_abmil(spec.features.dim, model)
        net.load_state_dict(theta0)
        fit(
            net,
            targets,
            BagStore.in_memory(bags),
            settings,
            device=torch.device("cpu"),
            task=f"task vector {name}",
        )
        vectors[name] = {k: v.detach() - theta0[k] for k, v in net.state_dict().items()}
    return theta0, vectors
