"""The transfer study on a cohort whose sharing is known: `stephctl transfer` must find it.

Four synthetic cancers share their prognostic rule by design (``CancerSpec.sharing``): ALPHA and
BETA fully (s = 1), GAMMA partly (s = 0.4), DELTA not at all (s = 0), so the expected correlation
of two cancers' coefficients is sqrt(s_a s_b): 1 for ALPHA-BETA, 0.63 with GAMMA, 0 with DELTA.

Each cancer's "trained model" is its true rule (an oracle): the generator's coefficients
beta_c applied to the phenotype mix read off a bag (every patch assigned to its nearest
phenotype prototype), and its "task vector" is beta_c (centred, as only differences of the
proportions' coefficients matter). Everything else is the real study, on the real features:
``run_transfer`` reads the features, applies every source's model to every target fold, scores
with the one C-index, bootstraps the gains, computes the factors and writes the outputs. The
study must (1) rank the 12 ordered pairs by their true sharing (Spearman >= 0.8), (2) give
C-indices around 0.5 where nothing is shared and (3) show the task-vector similarity rising with
the gain. A model trained by `train-source` replaces the oracle in real use; this test checks the
study's arithmetic and bookkeeping against a known answer, not how well ABMIL learns.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from steph.checkpoints import save_state_dict
from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.fileio import read_json
from steph.metrics import harrell_c
from steph.records import ModelRecord, TaskVectorRecord
from steph.synthetic import CancerSpec, CohortSpec, FeatureSpec, draw_cohort, generate_cohort
from steph.synthetic.features import prototypes
from steph.synthetic.project import init_configured_project
from steph.transfer import run_transfer
from steph.transfer.factors import spearman

SHARING = {"ALPHA": 1.0, "BETA": 1.0, "GAMMA": 0.4, "DELTA": 0.0}
PAIRS = list(itertools.permutations(SHARING, 2))
SPEC = CohortSpec(
    cancers=tuple(CancerSpec(name=n, n_patients=150, censoring=0.5, sharing=s) for n, s in SHARING.items()),
    phenotypes=8,
    sharing=0.0,
    effect_sd=1.5,
    folds=3,
    seed=8,
    second_slide_rate=0.0,
    features=FeatureSpec(dim=16, patches=(24, 40), noise=0.5),
)


def _design(source: str, target: str) -> float:
    return float(np.sqrt(SHARING[source] * SHARING[target]))


class OracleModel:
    """A source cancer's true rule on a bag: beta_c . (share of patches nearest each prototype)."""

    def __init__(self, beta: np.ndarray, protos: np.ndarray) -> None:
        self.beta, self.protos = beta, protos

    def predict(self, ids, bags, *, device, max_batch_patches=0, precision="fp32"):
        risks = []
        for pid in ids:
            x = bags.get(pid).double().numpy()
            nearest = ((x[:, None, :] - self.protos[None]) ** 2).sum(-1).argmin(1)
            mix = np.bincount(nearest, minlength=len(self.protos)) / len(nearest)
            risks.append(float(mix @ self.beta))
        risk = torch.tensor(risks, dtype=torch.float64)[:, None]
        return torch.zeros_like(risk), -risk  # risk = -sum_j S_j, as every stephctl model


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("known")
    layout = init_configured_project(
        root,
        cancers=list(SHARING),
        encoder="synthetic",
        overrides={"transfer.bootstrap": 100, "transfer.permutations": 1000},
        note="known-answer test",
    )
    assert generate_cohort(root, SPEC, level="features").ok
    layout, config = load_project(root)
    betas = {name: c.coefficients for name, c in draw_cohort(SPEC).items()}
    for cancer, beta in betas.items():
        cohort = load_cohort(layout, config, cancer)
        for fold in range(SPEC.folds):
            split = load_split(layout, cohort, fold)
            ModelRecord(cancer=cancer, fold=fold, n_train=len(split.train), model_sha256="oracle").write(
                layout.model_meta(cancer, fold)
            )
            centred = torch.tensor(beta - beta.mean())
            sha = save_state_dict(layout.task_vector(cancer, fold), {"beta": centred})
            TaskVectorRecord(cancer=cancer, fold=fold, sha256=sha).write(
                layout.task_vector_meta(cancer, fold)
            )
    protos = prototypes(SPEC)
    mp = pytest.MonkeyPatch()
    mp.setattr(
        "steph.evaluation.predictors.project_model",
        lambda layout, config, source, method, fold, *, device: OracleModel(betas[source], protos),
    )
    try:
        assert run_transfer(layout, config).ok
    finally:
        mp.undo()
    return root


def test_the_drawn_cohort_realises_the_design() -> None:
    """The true rules, applied across cancers, rank the pairs as the design does: a failure
    below is the study's, not the draw's."""
    cohorts = draw_cohort(SPEC)
    truth = [
        harrell_c(cohorts[t].time, cohorts[t].event, cohorts[t].proportions @ cohorts[s].coefficients).value
        for s, t in PAIRS
    ]
    assert spearman(truth, [_design(s, t) for s, t in PAIRS]) >= 0.9
    unshared = [c for (s, t), c in zip(PAIRS, truth, strict=True) if _design(s, t) == 0.0]
    assert abs(np.mean(unshared) - 0.5) < 0.06


def _measured(root: Path) -> tuple[dict, list[float]]:
    layout, _ = load_project(root)
    matrix = read_json(layout.transfer_file("matrix.json"))
    values = [matrix["c_mean"][matrix["sources"].index(s)][matrix["targets"].index(t)] for s, t in PAIRS]
    return matrix, values


def test_the_matrix_ranks_pairs_by_their_true_sharing(known: Path) -> None:
    _, measured = _measured(known)
    rho = spearman(measured, [_design(s, t) for s, t in PAIRS])
    assert rho >= 0.8, (rho, measured)


def test_zero_sharing_gives_c_around_one_half(known: Path) -> None:
    matrix, measured = _measured(known)
    unshared = [c for (s, t), c in zip(PAIRS, measured, strict=True) if _design(s, t) == 0.0]
    assert abs(np.mean(unshared) - 0.5) < 0.06, unshared
    assert all(abs(c - 0.5) < 0.15 for c in unshared), unshared
    shared = [c for (s, t), c in zip(PAIRS, measured, strict=True) if _design(s, t) == 1.0]
    assert min(shared) > 0.7, shared  # ALPHA <-> BETA: the same rule transfers fully
    transfer = {
        (s, t): matrix["transfer"][matrix["sources"].index(s)][matrix["targets"].index(t)] for s, t in PAIRS
    }
    assert transfer[("DELTA", "ALPHA")] == "negative" and transfer[("ALPHA", "DELTA")] == "negative"


def test_task_vector_similarity_correlates_with_the_gain(known: Path) -> None:
    layout, _ = load_project(known)
    factors = read_json(layout.transfer_file("factors.json"))["factors"]
    cosine = factors["cosine"]
    assert cosine["pairs"] == 12
    assert cosine["rho"] >= 0.6 and cosine["p"] < 0.05, cosine
