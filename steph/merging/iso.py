"""Isotropic merging: Iso-C and Iso-CTS (Marczak et al., No Task Left Behind, ICML 2025).

For one weight matrix and T task matrices ``Delta_1..Delta_T`` with sum ``M = sum_j Delta_j``
and SVD ``M = U diag(s) V^T`` (r = min(rows, cols)):

- **Iso-C** (isotropic merging in the common subspace): flatten the spectrum,

      iso_c(M) = mean(s) * U V^T = U diag(mean(s), ..., mean(s)) V^T

- **Iso-CTS** (common and task-specific subspaces): keep the top ``k`` singular directions of
  M as the common subspace, ``k = r - T * round((r - floor(f r)) / T)`` (f = common fraction,
  0.8), and for every task its own top ``n = (r - k) / T`` directions of the part outside it,
  ``Delta_j - U_k U_k^T Delta_j``; the ``T n + k = r`` left and right directions are stacked
  (task-specific blocks first, then the common one), orthogonalised by ``X -> P Q^T`` of their
  SVD, and every singular value is set to the mean of the kept ones:

      iso_cts = U* diag(mean(s*)) V*^T

Vectors and non-matrix tensors (biases) are averaged, ``(1/T) sum_j Delta_j``, as in both the
paper's code and the STEPH reference. The STEPH reference (``model/utils_merge.py``) applies
either one pairwise, T = 2, to ``(tau_t, tau_s)`` for every task vector of its AdaMerging pool;
its ``compute_task_vectors_with_iso_cts`` reuses the loop variable ``i`` of the pool in the
inner loop over the two tasks, so every weight-matrix result is written into pool entry 1:
Iso-CTS(tau_t, tau_0) first, then each later pair (whose tau_j at index 1 is that result read
back) overwrites it; every other entry keeps its raw weight matrices, and biases (which skip the
inner loop) are averaged into their own entry correctly. :func:`iso_pairwise` writes each
result into its own entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from ..task_vectors import StateDict

IsoKind = Literal["iso-c", "iso-cts"]


def is_matrix(key: str, tensor: Tensor) -> bool:
    """Tensors that are flattened spectrally: 2-D ``weight`` tensors (the reference's test)."""
    return tensor.ndim == 2 and "weight" in key


def _svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The thin SVD ``x = U diag(s) V^T`` as ``(U, s, V^T)``."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return u, s, vh


def iso_c(matrices: Sequence[Tensor]) -> Tensor:
    """``mean(s) U V^T`` of the SVD of the sum of ``matrices``."""
    total = torch.stack(list(matrices)).sum(dim=0).double()
    u, s, vh = _svd(total)
    return (s.mean() * (u @ vh)).to(matrices[0].dtype)


def common_size(r: int, tasks: int, fraction: float) -> int:
    """``k``: the common subspace's size, leaving a task-specific part divisible by ``tasks``."""
    k = int(r * fraction)
    return r - round((r - k) / tasks) * tasks


def iso_cts_copies(delta: Tensor, copies: int, fraction: float = 0.8) -> Tensor:
    """Iso-CTS of ``copies`` identical tasks ``delta`` (the target's own entry of the pairwise
    merges, Iso-CTS(tau_t, tau_t)), defined by the part that does not depend on an arbitrary
    choice.

    With ``T`` identical tasks the stacked task-specific blocks are ``T`` copies of the same ``n``
    directions, so the stack ``[A, ..., A, U_k]`` has ``(T - 1) n`` zero singular values and its
    orthogonalisation ``P Q^T`` is not unique: the SVD completes those null directions with any
    orthonormal vectors, which add an arbitrary rank-``(T - 1) n`` term to the result (it moved by
    ~50 % of the entry's size under a 1e-7 change of ``delta`` with trained task vectors, see
    docs/merge.md). Every completion shares the non-null part, which is kept: with
    ``delta = sum_i s_i u_i v_i^T``, the common directions are ``u_1..u_k`` and each copy's
    task-specific ones ``u_{k+1}..u_{k+n}``, so

        iso_cts_copies(delta) = s_bar sum_{i=1}^{k+n} u_i v_i^T,
        s_bar = T sum_{i <= k+n} s_i / (k + T n)

    (``s_bar`` is the mean of the stacked singular values, as in :func:`iso_cts`: ``T s_i`` for
    the common ``i <= k``, ``s_i`` of each copy's residual for ``k < i <= k+n``). It depends on
    ``delta``'s top-``(k+n)`` singular subspace only, so it is as stable as that subspace. For
    ``T = 1`` it is Iso-C of ``delta``.
    """
    x = delta.double()
    u, s, vh = _svd(x)
    r = s.shape[0]
    k = common_size(r, copies, fraction)
    n = (r - k) // copies
    kept = k + n
    s_bar = copies * s[:kept].sum() / (k + copies * n)
    return (s_bar * (u[:, :kept] @ vh[:kept])).to(delta.dtype)


def iso_cts(matrices: Sequence[Tensor], fraction: float = 0.8) -> Tensor:
    """Iso-CTS of ``matrices`` (module docstring); identical tasks: :func:`iso_cts_copies`."""
    if len(matrices) > 1 and all(torch.equal(m, matrices[0]) for m in matrices[1:]):
        return iso_cts_copies(matrices[0], len(matrices), fraction)
    return iso_cts_stacked(matrices, fraction)


def iso_cts_stacked(matrices: Sequence[Tensor], fraction: float = 0.8) -> Tensor:
    """Iso-CTS by its stack-and-orthogonalise steps (the paper's code, the module docstring);
    not unique when two tasks are identical (:func:`iso_cts_copies`)."""
    tasks = [m.double() for m in matrices]
    total = torch.stack(tasks).sum(dim=0)
    u, s, vh = _svd(total)
    r = s.shape[0]
    k = common_size(r, len(tasks), fraction)
    n = (r - k) // len(tasks)
    u_k, s_k, vh_k = u[:, :k], s[:k], vh[:k]
    us: list[Tensor] = []
    ss: list[Tensor] = []
    vs: list[Tensor] = []
    for delta in tasks:
        rest = delta - u_k @ (u_k.T @ delta)
        u_j, s_j, vh_j = _svd(rest)
        us.append(u_j[:, :n])
        ss.append(s_j[:n])
        vs.append(vh_j[:n])
    big_u = torch.cat([*us, u_k], dim=1)
    big_s = torch.cat([*ss, s_k])
    big_vh = torch.cat([*vs, vh_k], dim=0)
    pu, _, qu = _svd(big_u)
    pv, _, qv = _svd(big_vh)
    return (big_s.mean() * ((pu @ qu) @ (pv @ qv))).to(matrices[0].dtype)


def iso_merge(
    vectors: Sequence[Mapping[str, Tensor]], keys: Sequence[str], kind: IsoKind, fraction: float = 0.8
) -> StateDict:
    """Iso-C / Iso-CTS of every weight matrix of ``keys``, the mean for the other tensors."""
    out: StateDict = {}
    for key in keys:
        tensors = [v[key] for v in vectors]
        if not is_matrix(key, tensors[0]):
            out[key] = torch.stack(tensors).mean(dim=0)
        elif kind == "iso-c":
            out[key] = iso_c(tensors)
        else:
            out[key] = iso_cts(tensors, fraction)
    return out


def iso_pairwise(
    target: Mapping[str, Tensor],
    vectors: Sequence[Mapping[str, Tensor]],
    keys: Sequence[str],
    kind: IsoKind,
    fraction: float = 0.8,
) -> list[StateDict]:
    """``[iso(tau_t, tau_j) for tau_j in vectors]``, each written into its own entry (the
    reference's preprocessing, with its Iso-CTS write-back fixed). The target's own entry,
    Iso-CTS(tau_t, tau_t), is :func:`iso_cts_copies` (two identical tasks)."""
    return [iso_merge([target, v], keys, kind, fraction) for v in vectors]
