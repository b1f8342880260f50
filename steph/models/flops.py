"""Analytic FLOPs of the models, to set measured speed against the hardware.

Only matrix products count (2 FLOPs per multiply-add), as in :class:`torch.utils.flop_counter.FlopCounterMode`:
they are nearly all of the arithmetic, and the rest (activations, softmax, top-k) is memory-bound.
With ``D`` the feature width, ``E``/``A`` the ABMIL widths (512/384), ``T`` the time bins (32),
``m`` the source task vectors and ``P`` the encoder's parameter count, one bag of ``K`` patches costs:

    ABMIL forward          F(K) = 2K (DE + 2EA + A) + 2KE + 2ET
    ABMIL training step    3 F(K) - 2KDE       (backward: two products per product, but no
                                                gradient for the input features)
    STEPH forward          F(K) + 2KDE (hypernetwork embedding) + 4 (E^2 + Em) (its two heads)
                           + 2 (1 + m) P (the bag's merged encoder)
    AdaMerging forward     F(K) + 2 (1 + m) P / B   (one merged encoder for the B bags of a step)
    ROUPKT forward         (m + 2) (F(K) - 2ET) + 2Em(E + 1) + 2ET
                           (1 + m frozen encoders, the router's encoder, the experts and the gate)
    ROUPKT frozen experts  (m + 1) (F(K) - 2ET): in training once per patient, not per epoch
                           (:mod:`steph.training.memo`), so a training step after a bag's
                           first omits them (``experts=False``)

The training-step counts add each trainable product's backward (see each function). The tests
check every function against a counted forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Widths:
    """The ABMIL widths: features ``dim_in`` (D), ``dim_emb`` (E), ``dim_attn`` (A), ``time_bins`` (T)."""

    dim_in: int
    dim_emb: int = 512
    dim_attn: int = 384
    time_bins: int = 32

    @property
    def encoder_params(self) -> int:
        """P: the 8 encoder tensors (the task vectors' length)."""
        d, e, a = self.dim_in, self.dim_emb, self.dim_attn
        return d * e + e + 2 * (e * a + a) + a + 1


def _encoder_patch(w: Widths) -> int:
    """Products per patch of the encoder: projection, the two gates, the score."""
    return 2 * (w.dim_in * w.dim_emb + 2 * w.dim_emb * w.dim_attn + w.dim_attn)


def encoder_forward(patches: int, w: Widths) -> int:
    """One encoder pass (projection, gates, scores, attention pooling) over a bag of ``patches``."""
    return patches * _encoder_patch(w) + 2 * patches * w.dim_emb


def abmil_forward(patches: int, w: Widths) -> int:
    """F(K): the encoder and the prediction head."""
    return encoder_forward(patches, w) + 2 * w.dim_emb * w.time_bins


def abmil_step(patches: int, w: Widths) -> int:
    """Forward and backward of one bag when every weight trains: 3 F(K) - 2KDE."""
    return 3 * abmil_forward(patches, w) - 2 * patches * w.dim_in * w.dim_emb


def steph_forward(patches: int, w: Widths, sources: int, *, mix_embed: bool = False) -> int:
    """STEPH for one bag: hypernetwork (embedding, two heads), merged encoder, encoder and head."""
    e, m = w.dim_emb, sources
    embeddings = 2 if mix_embed else 1
    hyper = embeddings * 2 * patches * w.dim_in * e + 2 * 2 * (e * e + e * m)
    return hyper + 2 * (1 + m) * w.encoder_params + abmil_forward(patches, w)


def steph_step(patches: int, w: Widths, sources: int, *, mix_embed: bool = False) -> int:
    """STEPH forward and backward for one bag. Backward: the merged encoder like ABMIL's (its
    weights depend on the coefficients), the coefficients through the stacked vectors (one
    product), the hypernetwork's heads (two products each) and embedding (weights only)."""
    e, m = w.dim_emb, sources
    embeddings = 2 if mix_embed else 1
    backward = (
        2 * abmil_forward(patches, w)
        - 2 * patches * w.dim_in * e
        + 2 * (1 + m) * w.encoder_params
        + 2 * 2 * 2 * (e * e + e * m)
        + embeddings * 2 * patches * w.dim_in * e
    )
    return steph_forward(patches, w, sources, mix_embed=mix_embed) + backward


def adamerging_forward(patches: int, w: Widths, sources: int, bags: int = 1) -> int:
    """AdaMerging for one bag of a step of ``bags``: the merged encoder is built once per step."""
    return abmil_forward(patches, w) + 2 * (1 + sources) * w.encoder_params // bags


def adamerging_step(patches: int, w: Widths, sources: int, bags: int = 1) -> int:
    """Forward and backward: ABMIL's, plus the coefficients' gradient through the vectors."""
    merge = 2 * (1 + sources) * w.encoder_params // bags
    return abmil_step(patches, w) + 2 * merge


def roupkt_experts(patches: int, w: Widths, sources: int) -> int:
    """ROUPKT's 1 + m frozen encoders over one bag: in training once per patient (the bag's
    first forward), in prediction every forward."""
    return (sources + 1) * encoder_forward(patches, w)


def roupkt_forward(patches: int, w: Widths, sources: int, *, experts: bool = True) -> int:
    """ROUPKT for one bag: 1 + m frozen encoders (``experts=False``: their stored embeddings), the
    router (encoder and gate), m + 1 experts, head."""
    e, n = w.dim_emb, sources + 1
    frozen = roupkt_experts(patches, w, sources) if experts else 0
    return frozen + encoder_forward(patches, w) + 2 * e * n + n * 2 * e * e + 2 * e * w.time_bins


def roupkt_step(patches: int, w: Widths, sources: int, *, experts: bool = True) -> int:
    """Forward and backward: the frozen encoders have none (``experts=False``: not run, their
    embeddings stored); the router's encoder trains like ABMIL's; the experts train their weights
    (their input is frozen); gate and head both ways."""
    e, n = w.dim_emb, sources + 1
    router = encoder_forward(patches, w)
    backward = (
        2 * router - 2 * patches * w.dim_in * e + 2 * 2 * e * n + n * 2 * e * e + 2 * 2 * e * w.time_bins
    )
    return roupkt_forward(patches, w, sources, experts=experts) + backward
