"""The shared initialisation theta0 (the reference's "null model"), created once per project.

Every cancer-specific model starts from exactly these weights, so task vectors
``tau_c = theta_c - theta0`` of different cancers live in the same coordinate system
(docs/train-source.md, "theta0"). theta0 is an untrained ABMIL with PyTorch's default initialisation,
drawn from ``seed`` (``seed:`` in stephctl.yaml) in a forked RNG, written to
``layout.theta0`` (safetensors) with a record ``layout.theta0_meta`` holding its sha256,
architecture and origin. Loading re-hashes the file and refuses a mismatch, so an edited or
replaced theta0 cannot silently change every task vector.

The authors' own null checkpoint can be imported instead (:func:`import_theta0`), which is what
makes their released cancer checkpoints usable as task vectors here.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import __version__
from .checkpoints import load_reference_checkpoint, load_state_dict, save_state_dict, state_sha256
from .errors import ConsistencyError, DataError, LockedError, MissingArtifactError, StephError
from .fileio import sha256_file
from .locks import hold
from .models.abmil import ENCODER_KEYS, HEAD_KEYS, architecture_of, create_abmil
from .records import Theta0Record

if TYPE_CHECKING:
    from .config import ModelConfig, ProjectConfig
    from .layout import ProjectLayout

log = logging.getLogger(__name__)

ABMIL_KEYS = frozenset(ENCODER_KEYS + HEAD_KEYS)
WAIT_FOR_OTHER_S = 120.0
THETA0_METADATA = {"kind": "theta0"}
"""The safetensors metadata of theta0's file (part of its bytes, hence of its sha256)."""


@dataclass(frozen=True)
class Theta0:
    """theta0's tensors and its record (``sha256``, ``architecture``, ``seed`` or ``source``)."""

    state: dict[str, Tensor]
    sha256: str
    meta: dict[str, Any]

    @property
    def architecture(self) -> dict[str, int]:
        return architecture_of(self.state)


def versions() -> dict[str, str]:
    """Software versions recorded next to every model."""
    return {"stephctl": __version__, "torch": torch.__version__, "python": platform.python_version()}


def check_abmil_state(state: Mapping[str, Tensor], where: str) -> dict[str, int]:
    """Refuse a state dict that is not exactly an ABMIL's; returns its architecture."""
    missing = sorted(ABMIL_KEYS - set(state))
    extra = sorted(set(state) - ABMIL_KEYS)
    if missing or extra:
        raise DataError(
            f"{where} is not an ABMIL state dict"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra[:8])}" if extra else ""),
            hint="expected the reference gated-attention ABMIL (feat_proj.0, attention_net.attention_a/b/c, pred_head)",
        )
    arch = architecture_of(state)
    expected = _shapes(arch)
    wrong = [
        f"{k} {list(state[k].shape)} != {list(v)}" for k, v in expected.items() if tuple(state[k].shape) != v
    ]
    if wrong:
        raise DataError(f"{where}: inconsistent tensor shapes: {'; '.join(wrong)}")
    return arch


def _shapes(arch: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    d, e, a, t = arch["dim_in"], arch["dim_emb"], arch["dim_attn"], arch["time_bins"]
    return {
        "feat_proj.0.weight": (e, d),
        "feat_proj.0.bias": (e,),
        "attention_net.attention_a.0.weight": (a, e),
        "attention_net.attention_a.0.bias": (a,),
        "attention_net.attention_b.0.weight": (a, e),
        "attention_net.attention_b.0.bias": (a,),
        "attention_net.attention_c.weight": (1, a),
        "attention_net.attention_c.bias": (1,),
        "pred_head.weight": (t, e),
        "pred_head.bias": (t,),
    }


def check_architecture(arch: Mapping[str, int], model: ModelConfig, dim_in: int | None, where: str) -> None:
    """Refuse weights whose shapes differ from ``model:`` in stephctl.yaml or the features' ``D``."""
    wanted = {"dim_emb": model.dim_emb, "dim_attn": model.dim_attn, "time_bins": model.time_bins}
    if dim_in is not None:
        wanted["dim_in"] = dim_in
    diff = [f"{k} {arch[k]} (expected {v})" for k, v in wanted.items() if arch[k] != v]
    if diff:
        raise ConsistencyError(
            f"{where} does not match the project: {', '.join(diff)}",
            hint="dim_in must equal the features' D and dim_emb/dim_attn/time_bins the model: section of stephctl.yaml",
        )


def _write(layout: ProjectLayout, state: Mapping[str, Tensor], record: dict[str, Any]) -> Theta0:
    layout.theta0_meta.unlink(missing_ok=True)  # the record is written last: no record = not done
    sha = save_state_dict(layout.theta0, state, THETA0_METADATA)
    meta = {"sha256": sha, "architecture": architecture_of(state), **record, "versions": versions()}
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Theta0Record.from_json(meta, str(layout.theta0_meta)).write(layout.theta0_meta)
    log.info("theta0 written to %s (sha256 %s)", layout.theta0, sha[:12])
    return Theta0(dict(state), sha, meta)


def adopt_theta0(
    layout: ProjectLayout, state: Mapping[str, Tensor], record: dict[str, Any], *, sha256: str
) -> Theta0 | None:
    """Install ``state`` (theta0 shipped in a sources bundle) unless the project has a theta0.

    ``state`` must hash to ``sha256`` (the bundle card's ``theta0_sha256``) *before* anything is
    written, and the decision "does the project have a theta0?" is taken under the theta0 lock
    (waiting for another holder), so two imports of different theta0 cannot both succeed.

    Returns:
        The installed theta0, or None when the project already has exactly this one.

    Raises:
        DataError: ``state`` is not an ABMIL state dict of finite floating values.
        ConsistencyError: ``state`` does not hash to ``sha256``, or the project has another theta0.
    """
    check_abmil_state(state, "theta0")
    check_finite(state, "theta0")
    actual = state_sha256(state, THETA0_METADATA)
    if actual != sha256:
        raise ConsistencyError(
            f"the shipped theta0 has sha256 {actual[:12]}..., but its card names {sha256[:12]}...",
            hint="the bundle was made inconsistently or altered; ask its author for an intact copy",
        )
    deadline = time.monotonic() + WAIT_FOR_OTHER_S
    while True:
        try:
            with hold(layout.theta0, what="theta0"):
                if not layout.theta0_meta.is_file():
                    return _write(layout, state, record)
                break
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    mine = load_theta0(layout)
    if mine.sha256 != sha256:
        raise ConsistencyError(
            f"this project has another theta0 ({mine.sha256[:12]}...) than the bundle ({sha256[:12]}...)",
            hint="task vectors add up only from the same theta0; ask the lab for vectors trained from "
            "your theta0 (share `models/null.safetensors` first)",
        )
    return None


def check_finite(state: Mapping[str, Tensor], where: str) -> None:
    """Refuse tensors that are not floating point or hold NaN/inf (names the first ones)."""
    wrong = [f"{k} ({v.dtype})" for k, v in sorted(state.items()) if not v.is_floating_point()]
    if wrong:
        raise DataError(
            f"{where}: tensors are not floating point: {', '.join(wrong[:4])}",
            hint="weights are float tensors; the file was not written by stephctl",
        )
    bad = [k for k, v in sorted(state.items()) if not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(
            f"{where}: values are not finite (NaN or inf) in {', '.join(bad[:4])}",
            hint="such weights give NaN risks; ask the author for a model trained without divergence",
        )


def check_like_theta0(state: Mapping[str, Tensor], theta0: Mapping[str, Tensor], where: str) -> None:
    """Refuse a task vector (or weights) whose keys, shapes or values cannot be added to theta0.

    Raises:
        DataError: missing or unexpected keys, another shape than theta0's, non-float or
            non-finite values.
    """
    missing, extra = sorted(set(theta0) - set(state)), sorted(set(state) - set(theta0))
    if missing or extra:
        raise DataError(
            f"{where} does not have theta0's parameters"
            + (f"; missing {', '.join(missing[:8])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:8])}" if extra else ""),
            hint="a task vector has exactly theta0's ABMIL parameters",
        )
    wrong = [
        f"{k} {list(state[k].shape)} (theta0: {list(v.shape)})"
        for k, v in sorted(theta0.items())
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise DataError(f"{where}: shapes differ from theta0's: {'; '.join(wrong[:4])}")
    check_finite(state, where)


def create_theta0(layout: ProjectLayout, config: ProjectConfig, dim_in: int) -> Theta0:
    """Draw a fresh theta0 for ``D = dim_in`` from ``config.seed`` and save it (overwrites)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_abmil(dim_in, config.model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _write(layout, state, {"seed": config.seed, "source": "random"})


def load_theta0(
    layout: ProjectLayout, *, model: ModelConfig | None = None, dim_in: int | None = None
) -> Theta0:
    """Load theta0, verifying its sha256 against its record (and its shapes, when given).

    Raises:
        MissingArtifactError: no theta0 (or no record) in the project.
        ConsistencyError: the file's hash differs from the record, or the shapes differ from
            ``model``/``dim_in``.
    """
    if not layout.theta0.is_file() or not layout.theta0_meta.is_file():
        raise MissingArtifactError(
            f"theta0 not found: {layout.theta0} (+ {layout.theta0_meta.name})",
            hint="`stephctl train-source` creates it, or import the authors' null model with "
            "`stephctl import-reference --theta0 PATH`",
        )
    try:
        record = Theta0Record.read(layout.theta0_meta)
    except DataError as exc:
        raise ConsistencyError(exc.message, hint=exc.hint) from exc
    recorded, meta = record.sha256, record.to_json()
    actual = sha256_file(layout.theta0)
    if actual != recorded:
        raise ConsistencyError(
            f"{layout.theta0} has sha256 {actual[:12]}..., but {layout.theta0_meta.name} records {recorded[:12]}...",
            hint="theta0 was modified after the models were trained from it; restore it, or retrain everything "
            "with `stephctl train-source --overwrite` after deleting both files",
        )
    state = load_state_dict(layout.theta0, what="theta0")
    arch = check_abmil_state(state, str(layout.theta0))
    if model is not None:
        check_architecture(arch, model, dim_in, f"theta0 {layout.theta0}")
    return Theta0(state, actual, meta)


def theta0_dim_in(layout: ProjectLayout) -> int | None:
    """The feature dimension ``D`` theta0 takes, from its record (None when the project has no
    theta0 yet, or its record does not say): what feature files are checked against before
    they are read."""
    if not layout.theta0_meta.is_file():
        return None
    try:
        return Theta0Record.read(layout.theta0_meta).architecture.get("dim_in")
    except (OSError, StephError):
        return None  # load_theta0 names the broken record


def ensure_theta0(layout: ProjectLayout, config: ProjectConfig, dim_in: int) -> Theta0:
    """theta0 of the project: loaded and verified if it exists, created (once) otherwise.

    Concurrent runs (a Slurm array) serialise on a lock; the losers wait for the winner's file.
    """
    if layout.theta0_meta.is_file():
        return load_theta0(layout, model=config.model, dim_in=dim_in)
    deadline = time.monotonic() + WAIT_FOR_OTHER_S
    while True:
        try:
            with hold(layout.theta0, what="theta0"):
                if layout.theta0_meta.is_file():  # created while we waited
                    break
                return create_theta0(layout, config, dim_in)
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return load_theta0(layout, model=config.model, dim_in=dim_in)


def import_theta0(
    layout: ProjectLayout, config: ProjectConfig, path: Path, *, overwrite: bool = False
) -> Theta0:
    """Bring a reference null checkpoint (``.pth``, key ``model``) into the project as theta0.

    The checkpoint is checked before anything is allocated or written
    (:func:`~steph.checkpoints.load_reference_checkpoint`: no tensor may declare more values
    than the file holds), then against ``model:`` in stephctl.yaml and, once the project has
    features, their dimension D; its values must be finite.

    Raises:
        ConsistencyError: a theta0 already exists (unless ``overwrite``), or the checkpoint's
            shapes differ from ``model:`` in stephctl.yaml or the features' D.
        DataError: the file is not an ABMIL checkpoint, declares more than it holds, or holds
            NaN/inf.
    """
    if layout.theta0.exists() and not overwrite:
        raise ConsistencyError(
            f"theta0 already exists: {layout.theta0}",
            hint="models trained from it would no longer match; pass --overwrite to replace it anyway",
        )
    state = load_reference_checkpoint(path)
    arch = check_abmil_state(state, str(path))
    check_architecture(arch, config.model, _features_dim(layout, config), f"checkpoint {path}")
    check_finite(state, f"checkpoint {path}")
    record = {"source": str(Path(path).resolve()), "source_sha256": sha256_file(path)}
    with hold(layout.theta0, what="theta0"):
        return _write(layout, {k: v.to(torch.float32) for k, v in state.items()}, record)


def _features_dim(layout: ProjectLayout, config: ProjectConfig) -> int | None:
    """D of the project's extracted features (None before extraction)."""
    from .data.features import feature_shape

    files = layout.own_feature_files(config.encoder)
    if not files:
        return None
    try:
        return int(feature_shape(files[0])[1])
    except (StephError, OSError, ValueError, IndexError):
        return None
