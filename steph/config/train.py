"""Configuration of ``stephctl train-source`` (sections ``model:`` and ``train:``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """ABMIL with gated attention (docs/train-source.md, "Protocol"). The input dim follows the features."""

    dim_emb: int = 512
    """Width of the instance projection feat_proj (D -> dim_emb)."""
    dim_attn: int = 384
    """Hidden width of the gated attention branches."""
    dropout: float = 0.25
    """Dropout inside the attention branches."""
    time_bins: int = 32
    """Number of discrete time bins = outputs of the prediction head."""
    bin_width_days: float = 365.0
    """Width of each bin in days; the last bin is open-ended (defaults: cut points 0..11680)."""

    def __post_init__(self) -> None:
        if self.dim_emb < 1 or self.dim_attn < 1 or self.time_bins < 2:
            raise ConfigError("model.dim_emb, model.dim_attn must be >= 1 and model.time_bins >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.bin_width_days <= 0:
            raise ConfigError(f"model.bin_width_days must be > 0, got {self.bin_width_days}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training protocol of the cancer-specific models (docs/train-source.md, "Protocol")."""

    epochs: int = 20
    """Training epochs; the last checkpoint is kept (no early stopping)."""
    batch_size: int = 16
    """Bags per optimiser step; one loss over the batch; leftover bags of an epoch are dropped."""
    lr: float = 1e-4
    """AdamW learning rate (peak of the cosine schedule)."""
    weight_decay: float = 1e-5
    """AdamW weight decay, applied to >= 2-d weights only."""
    warmup_epochs: float = 1.0
    """Linear warm-up length of the cosine schedule, in epochs."""
    alpha: float = 0.5
    """SurvMLE weight of the uncensored term (loss = U + (1 - alpha) C)."""
    eps: float = 1e-7
    """Clamp of probabilities inside the log of SurvMLE."""
    seed: int = 42
    """Seed of the batch order and dropout (theta0 uses the project seed)."""
    folds: list[int] | None = None
    """Folds to train (None = every split file found)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    cache_gb: float = 4.0
    """Feature cache size; a cohort larger than this is streamed from HDF5 each epoch."""
    max_bag_batch_patches: int = 0
    """Patch budget of one forward: 0 = automatic (CPU 16384, CUDA from free memory), > 0 = this
    many padded patches, -1 = whole batch padded (old behaviour). Same loss and gradients."""
    eval_every: int = 0
    """Evaluate the test split every N epochs during training (logged only); 0 = only at the end."""
    precision: str = "auto"
    """auto, fp32, bf16 or fp16: autocast on CUDA (auto = bf16); CPU always runs fp32."""
    stack_units: bool = True
    """Train a merge method's target folds together, in one optimiser step, where each fold's
    result is its own run's (STEPH and its ablations, ROUPKT, the AdaMerging family but Surgery
    AM); false = one fold at a time."""

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError("train.epochs must be >= 0 and train.batch_size >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("train.lr must be > 0 and train.weight_decay >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"train.alpha must be in [0, 1], got {self.alpha}")
        if self.cache_gb < 0:
            raise ConfigError("train.cache_gb must be >= 0")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                hint="auto picks bf16 on CUDA and fp32 on CPU",
            )
