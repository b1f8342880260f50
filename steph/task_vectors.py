"""State-dict algebra for task vectors: the arithmetic every merge method is built from.

A *task vector* is the difference between a trained model and the shared initialisation,
``tau_c = theta_c - theta0`` (Ilharco et al., "Editing models with task arithmetic", ICLR 2023),
stored as a state dict with the model's parameter names. The functions here are pure: they
never modify their inputs and return new state dicts.

TIES-merging (Yadav et al., "TIES-Merging: Resolving interference when merging models",
NeurIPS 2023) is split into its three steps, :func:`trim` (keep the largest magnitudes),
:func:`elect_sign` and :func:`disjoint_merge`, operating on a matrix of flattened vectors
``[N, P]`` (one row per task vector), and combined by :func:`ties_merge`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .checkpoints import load_state_dict, read_metadata
from .errors import ConsistencyError, MissingArtifactError
from .fileio import sha256_file
from .records import TaskVectorRecord

if TYPE_CHECKING:
    from .layout import ProjectLayout

StateDict = dict[str, Tensor]
FlatSpec = tuple[tuple[str, torch.Size], ...]
"""``(name, shape)`` of each tensor of a flattened state dict, in flattening order."""


def _check_same(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    if a.keys() != b.keys():
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        raise ConsistencyError(
            f"{what}: the state dicts have different parameter names (only in the first: {only_a[:5]}, "
            f"only in the second: {only_b[:5]})",
            hint="task arithmetic needs models of one architecture with the same parameter names",
        )
    for key in a:
        if a[key].shape != b[key].shape:
            raise ConsistencyError(
                f"{what}: parameter {key!r} has shape {tuple(a[key].shape)} in one state dict and "
                f"{tuple(b[key].shape)} in the other",
                hint="task arithmetic needs models of one architecture",
            )


def subtract(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> StateDict:
    """``a - b`` tensor by tensor (``tau = theta - theta0``).

    Raises:
        ConsistencyError: names or shapes differ.
    """
    _check_same(a, b, "subtract")
    return {k: a[k] - b[k] for k in a}


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> StateDict:
    """``a + b`` tensor by tensor (``theta = theta0 + tau``)."""
    _check_same(a, b, "add")
    return {k: a[k] + b[k] for k in a}


def scale(a: Mapping[str, Tensor], factor: float) -> StateDict:
    """``factor * a`` tensor by tensor."""
    return {k: v * factor for k, v in a.items()}


def weighted_sum(vectors: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | Tensor) -> StateDict:
    """``sum_j weights_j * vectors_j`` tensor by tensor.

    ``weights`` may be a tensor that requires grad (AdaMerging learns them this way).

    >>> a, b = {"w": torch.ones(2)}, {"w": torch.tensor([1.0, 3.0])}
    >>> weighted_sum([a, b], [0.5, 0.25])["w"].tolist()
    [0.75, 1.25]
    """
    if not vectors:
        raise ValueError("weighted_sum needs at least one state dict")
    if len(weights) != len(vectors):
        raise ValueError(f"weighted_sum: {len(vectors)} state dicts but {len(weights)} weights")
    for other in vectors[1:]:
        _check_same(vectors[0], other, "weighted_sum")
    out: StateDict = {}
    for key in vectors[0]:
        total = vectors[0][key] * weights[0]
        for vec, weight in zip(vectors[1:], weights[1:], strict=True):
            total = total + vec[key] * weight
        out[key] = total
    return out


def mean(vectors: Sequence[Mapping[str, Tensor]]) -> StateDict:
    """``(1/N) sum_j vectors_j`` (model averaging of task vectors)."""
    n = len(vectors)
    return weighted_sum(vectors, [1.0 / n] * n)


def select(state: Mapping[str, Tensor], keys: Sequence[str]) -> StateDict:
    """The tensors named ``keys`` (in that order).

    Raises:
        ConsistencyError: a key is missing.
    """
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConsistencyError(
            f"state dict lacks parameters {missing}", hint="is this an ABMIL model of stephctl?"
        )
    return {k: state[k] for k in keys}


def flat_spec(state: Mapping[str, Tensor], keys: Sequence[str] | None = None) -> FlatSpec:
    """Names and shapes of the tensors that :func:`flatten` concatenates (``keys`` order)."""
    names = list(keys) if keys is not None else list(state)
    return tuple((k, state[k].shape) for k in names)


def flatten(state: Mapping[str, Tensor], keys: Sequence[str] | None = None) -> Tensor:
    """Concatenate the tensors named ``keys`` (default: all, in dict order) into one vector ``[P]``."""
    names = list(keys) if keys is not None else list(state)
    return torch.cat([state[k].reshape(-1) for k in names])


def unflatten(flat: Tensor, spec: FlatSpec) -> StateDict:
    """Inverse of :func:`flatten`: split ``flat [..., P]`` into tensors of the shapes in ``spec``.

    Leading dimensions are kept, so ``[B, P]`` gives per-bag tensors ``[B, *shape]`` (views).
    The views come from one ``split_with_sizes``, whose backward writes the gradient of ``flat``
    once; a slice per tensor would give autograd one full-size, zero-filled gradient per tensor
    to add up (at D = 1536 about 1.2 M values per bag, 8 times, in every STEPH or AdaMerging step).
    """
    sizes = [shape.numel() for _, shape in spec]
    if sum(sizes) != flat.shape[-1]:
        raise ValueError(f"unflatten: spec covers {sum(sizes)} values, the tensor has {flat.shape[-1]}")
    lead = flat.shape[:-1]
    parts = flat.split_with_sizes(sizes, dim=-1)
    # a part already in its shape (a bias) is returned as it is: a reshape to the same shape
    # still costs a dispatch, and another in the backward
    return {
        name: part if part.shape == (*lead, *shape) else part.reshape(*lead, *shape)
        for (name, shape), part in zip(spec, parts, strict=True)
    }


def trim(matrix: Tensor, density: float) -> Tensor:
    """TIES step 1 as the STEPH reference computes it (``topk_values_mask``): in each row
    ``v [P]`` of ``matrix [N, P]`` keep the entries whose magnitude reaches the ``k``-th smallest
    one, ``k = P - floor(density P)``, and zero the rest:

        keep_p = |v_p| >= kthvalue(|v|, k)

    That is ``floor(density P) + 1`` entries when the magnitudes are distinct (one more than a
    plain top-``floor(density P)``), plus every entry tied with the threshold; at ``k = 0``
    (density 1) everything is kept.

    >>> trim(torch.tensor([[0.1, -3.0, 2.0, 0.5, 0.2]]), 0.2).tolist()
    [[0.0, -3.0, 2.0, 0.0, 0.0]]
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rows = matrix.reshape(matrix.shape[0], -1)
    k = rows.shape[1] - int(rows.shape[1] * density)
    if k < 1:
        return matrix.clone()
    threshold = rows.abs().kthvalue(k, dim=1, keepdim=True).values
    return torch.where(rows.abs() >= threshold, rows, torch.zeros_like(rows)).reshape(matrix.shape)


def elect_sign(matrix: Tensor) -> Tensor:
    """TIES step 2: the elected sign of every column of ``matrix [N, P]``.

    ``gamma_p = sign(sum_j matrix_jp)``; columns whose sum is exactly 0 take the majority sign
    ``sign(sum_p gamma_p)`` (the reference's "majority" rule). Returns ``[P]`` in {-1, 0, 1}
    (0 only when every column sums to 0).

    >>> elect_sign(torch.tensor([[1.0, -2.0, 0.0, -1.0], [1.0, 1.0, 0.0, -1.0]])).tolist()
    [1.0, -1.0, -1.0, -1.0]
    """
    sign = torch.sign(matrix.sum(dim=0))
    majority = torch.sign(sign.sum())
    return torch.where(sign == 0, majority, sign)


def disjoint_merge(matrix: Tensor, sign: Tensor, *, reduce: Literal["mean", "sum"] = "mean") -> Tensor:
    """TIES step 3: combine, per column, only the entries that agree with the elected sign.

    ``A_p = {j : sign(matrix_jp) = gamma_p}``; ``mean``: ``merged_p = sum_{j in A_p} matrix_jp /
    max(1, |A_p|)`` (TIES paper); ``sum``: ``merged_p = sum_{j in A_p} matrix_jp`` (the STEPH
    reference's pairwise TIES, docs/merge.md, "ties"). Zeros never agree.

    >>> m = torch.tensor([[2.0, -1.0], [4.0, 3.0]])
    >>> disjoint_merge(m, elect_sign(m)).tolist(), disjoint_merge(m, elect_sign(m), reduce="sum").tolist()
    ([3.0, 3.0], [6.0, 3.0])
    """
    agree = (torch.sign(matrix) == sign.unsqueeze(0)) & (matrix != 0)
    kept = torch.where(agree, matrix, torch.zeros_like(matrix))
    total = kept.sum(dim=0)
    if reduce == "sum":
        return total
    if reduce == "mean":
        return total / agree.sum(dim=0).clamp(min=1).to(matrix.dtype)
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def ties_merge(
    vectors: Sequence[Mapping[str, Tensor]],
    *,
    density: float = 0.2,
    reduce: Literal["mean", "sum"] = "mean",
    keys: Sequence[str] | None = None,
) -> StateDict:
    """TIES-merge task vectors into one: :func:`trim` each to ``density``, :func:`elect_sign`,
    :func:`disjoint_merge` (Yadav et al., TIES-Merging, NeurIPS 2023; the one TIES of stephctl,
    used by the ``ties`` and ``ties-adamerging`` methods).

    The vectors are flattened over ``keys`` (default: all tensors) jointly, so trimming keeps
    the top ``density`` fraction of the whole vector, as in the TIES paper and the STEPH
    reference. Returns a state dict with the ``keys`` tensors only.
    """
    if not vectors:
        raise ValueError("ties_merge needs at least one task vector")
    for other in vectors[1:]:
        _check_same(vectors[0], other, "ties_merge")
    names = list(keys) if keys is not None else list(vectors[0])
    spec = flat_spec(vectors[0], names)
    matrix = torch.stack([flatten(v, names) for v in vectors])
    trimmed = trim(matrix, density)
    merged = disjoint_merge(trimmed, elect_sign(trimmed), reduce=reduce)
    return {k: v.clone() for k, v in unflatten(merged, spec).items()}


# -- files --------------------------------------------------------------------------------------
def load_task_vector(layout: ProjectLayout, cancer: str, fold: int) -> tuple[StateDict, TaskVectorRecord]:
    """A task vector (written by ``stephctl task-vector`` or ``import-sources``) and its record,
    after checking the file against the record's sha256.

    Raises:
        MissingArtifactError: not computed yet (names the command).
        ConsistencyError: the file changed after it was written.
    """
    path, meta_path = layout.task_vector(cancer, fold), layout.task_vector_meta(cancer, fold)
    hint = f"`stephctl -p {layout.root} task-vector --cancer {cancer} --fold {fold}`"
    if not meta_path.is_file():
        raise MissingArtifactError(
            f"task vector {cancer} fold {fold} not found: {meta_path}", hint=f"run {hint}"
        )
    record = TaskVectorRecord.read(meta_path)
    actual = sha256_file(path) if path.is_file() else None
    if actual != record.sha256:
        raise ConsistencyError(
            f"{path} does not match its record {meta_path.name} (sha256 {str(actual)[:12]} vs {str(record.sha256)[:12]})",
            hint=f"recompute it: {hint[:-1]} --overwrite`",
        )
    state = load_state_dict(path, what=f"task vector {cancer} fold {fold}", hint=f"run {hint}")
    stored = read_metadata(path).get("theta0_sha256")
    if stored is not None and stored != record.theta0_sha256:
        raise ConsistencyError(
            f"{path}: metadata and {meta_path.name} disagree on theta0", hint=f"recompute: {hint}"
        )
    return state, record
