"""Independent numpy versions of the reference's merge arithmetic (model/utils_merge.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from steph.models.abmil import ENCODER_KEYS


def flat(v: Mapping[str, torch.Tensor], keys: Sequence[str] = ENCODER_KEYS) -> np.ndarray:
    return np.concatenate([v[k].double().numpy().ravel() for k in keys])


def unflat(x: np.ndarray, like: Mapping[str, torch.Tensor], keys: Sequence[str] = ENCODER_KEYS) -> dict:
    out, i = {}, 0
    for k in keys:
        n = like[k].numel()
        out[k] = torch.from_numpy(x[i : i + n].reshape(like[k].shape).copy())
        i += n
    return out


def trim_kth(row: np.ndarray, density: float) -> np.ndarray:
    """The reference's topk_values_mask: keep |v| >= the k-th smallest |v|, k = P - int(P d)."""
    k = row.size - int(row.size * density)
    threshold = np.sort(np.abs(row))[k - 1]
    return np.where(np.abs(row) >= threshold, row, 0.0)


def ties(rows: Sequence[np.ndarray], density: float, reduce: str) -> np.ndarray:
    trimmed = np.stack([trim_kth(r, density) for r in rows])
    sign = np.sign(trimmed.sum(axis=0))
    sign[sign == 0] = np.sign(sign.sum())
    out = np.zeros(trimmed.shape[1])
    for p in range(trimmed.shape[1]):
        agree = [t for t in trimmed[:, p] if t != 0 and np.sign(t) == sign[p]]
        if agree:
            out[p] = sum(agree) if reduce == "sum" else sum(agree) / len(agree)
    return out
