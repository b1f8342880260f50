"""Encoders: registry contract, tiny-cnn, preprocessing, weights loading, offline hub, UNI2-h."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from steph.errors import EncoderUnavailableError, UnknownNameError
from steph.extractors import ENCODERS, EncoderSpec, create_encoder, get_encoder_spec, list_encoders
from steph.extractors.base import Encoder
from steph.extractors.tiny_cnn import TinyCNN
from steph.extractors.weights import hub_reachable

BUILTINS = {"tiny-cnn", "uni2-h", "uni", "h-optimus-0", "virchow2", "prov-gigapath"}


def test_builtins_are_registered_with_declared_dims() -> None:
    assert set(ENCODERS.names()) >= BUILTINS
    dims = {name: ENCODERS.get(name).embed_dim for name in BUILTINS}
    assert dims == {
        "tiny-cnn": 128,
        "uni2-h": 1536,
        "uni": 1024,
        "h-optimus-0": 1536,
        "virchow2": 2560,
        "prov-gigapath": 1536,
    }


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_spec_contract(name: str) -> None:
    spec = get_encoder_spec(name)
    assert isinstance(spec, EncoderSpec) and spec.name == name
    assert len(spec.mean) == len(spec.std) == 3 and all(s > 0 for s in spec.std)
    assert spec.precision in ("fp32", "fp16", "bf16") and spec.default_weights
    assert callable(spec.build) and spec.architecture is not None


def test_unknown_encoder_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'uni2-h'") as info:
        get_encoder_spec("uni2h")
    assert "tiny-cnn" in (info.value.hint or "") and "timm:<any timm model>" in (info.value.hint or "")
    with pytest.raises(UnknownNameError, match="unknown timm model"):
        get_encoder_spec("timm:not_a_model_at_all")


def test_list_encoders_rows() -> None:
    rows = {row["name"]: row for row in list_encoders()}
    assert BUILTINS | {"timm:<model>"} <= set(rows)
    assert rows["uni2-h"]["weights"] == "hf-hub:MahmoodLab/UNI2-h" and rows["uni2-h"]["gated"] is True


def test_tiny_cnn_is_deterministic_and_128d() -> None:
    patches = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    a = create_encoder("tiny-cnn").encode(patches)
    b = create_encoder("tiny-cnn").encode(patches)
    assert a.shape == (3, 128) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert create_encoder("tiny-cnn").weights_identity == "random-init seed 0"


def test_tiny_cnn_separates_colour_and_texture() -> None:
    """Patches of one phenotype are closer to each other than to another phenotype's."""
    rng = np.random.default_rng(0)

    def phenotype(colour: tuple[int, int, int], grain: float, n: int = 6) -> np.ndarray:
        """Blobs of ~8 px (4 um at 0.5 um/px, nucleus-sized) on a stain colour."""
        base = np.array(colour, float)
        blobs = np.repeat(np.repeat(rng.normal(0, grain, (n, 32, 32, 1)), 8, axis=1), 8, axis=2)
        return np.clip(base + blobs + rng.normal(0, 4, (n, 256, 256, 3)), 0, 255).astype(np.uint8)

    enc = create_encoder("tiny-cnn")
    groups = [
        enc.encode(phenotype((200, 110, 170), 5)),  # pink, smooth
        enc.encode(phenotype((200, 110, 170), 40)),  # pink, grainy: texture only differs
        enc.encode(phenotype((120, 80, 170), 5)),  # purple, smooth: colour only differs
    ]
    for i, group in enumerate(groups):
        within = np.linalg.norm(group - group.mean(0), axis=1).mean()
        for j, other in enumerate(groups):
            if i != j:
                assert np.linalg.norm(group.mean(0) - other.mean(0)) > 3 * within


def test_preprocess_matches_manual_normalisation() -> None:
    spec = get_encoder_spec("tiny-cnn")
    encoder = Encoder(
        spec, torch.nn.Identity(), device=torch.device("cpu"), dtype=torch.float32, weights_identity="x"
    )
    patches = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    got = encoder.preprocess(patches).numpy()
    expected = (patches.transpose(0, 3, 1, 2) / 255.0 - np.array(spec.mean)[:, None, None]) / np.array(
        spec.std
    )[:, None, None]
    assert np.allclose(got, expected, atol=1e-5)


def test_resize_then_centre_crop_for_crop_pct() -> None:
    spec = EncoderSpec(
        name="crop",
        embed_dim=3,
        build=lambda w, d: torch.nn.Identity(),
        input_size=224,
        crop_pct=224 / 256,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    encoder = Encoder(
        spec, torch.nn.Identity(), device=torch.device("cpu"), dtype=torch.float32, weights_identity="x"
    )
    patch = np.zeros((1, 256, 256, 3), np.uint8)
    patch[:, 16:240, 16:240] = 255  # the centre crop of a 256 patch is all white
    out = encoder.preprocess(patch)
    assert out.shape == (1, 3, 224, 224) and torch.allclose(out, torch.ones_like(out))


def test_local_weights_are_loaded_strictly_and_identified(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = TinyCNN(seed=7)
    path = tmp_path / "tiny.safetensors"
    save_file(other.state_dict(), str(path))
    patches = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    loaded = create_encoder("tiny-cnn", weights=path)
    assert loaded.weights_identity.startswith("sha256:") and loaded.weights_identity.endswith(
        "(tiny.safetensors)"
    )
    assert not np.allclose(loaded.encode(patches), create_encoder("tiny-cnn").encode(patches))
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(EncoderUnavailableError, match="does not fit the 'tiny-cnn' architecture"):
        create_encoder("tiny-cnn", weights=bad)
    with pytest.raises(EncoderUnavailableError, match="not found"):
        create_encoder("tiny-cnn", weights=tmp_path / "missing.bin")


def test_local_weights_are_bounded_by_their_file(tmp_path: Path) -> None:
    """``--weights`` .pt/.pth/.bin files get the reference checkpoints' checks (issue #32):
    a tensor expanded from a few bytes (stride 0) and a zip whose records declare more than the
    file are refused before anything is allocated, with one error naming the file."""
    state = TinyCNN(seed=7).state_dict()
    name, weight = next(iter(state.items()))
    expanded = tmp_path / "expanded.pt"
    torch.save({**state, name: torch.zeros(1).expand(weight.shape)}, expanded)
    with pytest.raises(EncoderUnavailableError, match=r"expanded\.pt.*expanded or overlapping view"):
        create_encoder("tiny-cnn", weights=expanded)
    bomb = tmp_path / "bomb.pth"
    torch.save({"model": {"big": torch.zeros(1).expand(4_000_000, 128)}}, bomb)
    assert bomb.stat().st_size < 4096
    with pytest.raises(EncoderUnavailableError, match=r"bomb\.pth: tensor 'big' of shape \[4000000, 128\]"):
        create_encoder("tiny-cnn", weights=bomb)
    packed = tmp_path / "packed.bin"
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 100_000)
    with pytest.raises(EncoderUnavailableError, match="compressed records"):
        create_encoder("tiny-cnn", weights=packed)


def test_timm_model_with_local_weights(tmp_path: Path) -> None:
    spec = get_encoder_spec("timm:resnet18")
    assert spec.embed_dim == 512 and spec.input_size == 224
    path = tmp_path / "resnet18.bin"
    torch.save(spec.architecture().state_dict(), path)  # type: ignore[misc]
    encoder = create_encoder("timm:resnet18", weights=path)
    assert encoder.encode(np.zeros((2, 256, 256, 3), np.uint8)).shape == (2, 512)


@pytest.mark.parametrize(
    "name", ["uni2-h", "uni", "h-optimus-0", "virchow2", "prov-gigapath", "timm:resnet18"]
)
def test_hub_model_offline_fails_fast_naming_the_file(name: str) -> None:
    start = time.monotonic()
    with pytest.raises(EncoderUnavailableError) as info:
        create_encoder(name)
    assert time.monotonic() - start < 10
    assert "HF_HUB_OFFLINE" in info.value.message or "STEPHCTL_NO_HUB" in info.value.message
    assert f"--encoder {name} --weights FILE" in (info.value.hint or "")
    assert f"weights: {{{name}:" in (info.value.hint or "")


def test_unreachable_hub_is_detected_without_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("STEPHCTL_NO_HUB", raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    ok, why = hub_reachable()
    assert not ok and "unreachable" in why
    with pytest.raises(EncoderUnavailableError, match=r"huggingface\.co unreachable"):
        create_encoder("uni2-h")


@pytest.mark.slow
def test_uni2h_architecture_builds_and_returns_1536d() -> None:
    """UNI2-h's timm architecture (~680 M parameters) with random weights on one 224-px image.

    Built on the meta device and materialised with seeded uniform weights: the same modules
    as ``build()`` creates, without timm's (slow) per-layer initialisation.
    """
    spec = get_encoder_spec("uni2-h")
    with torch.device("meta"):
        model = spec.architecture()  # type: ignore[misc]
    model = model.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.uniform_(-0.02, 0.02, generator=generator)
    assert sum(p.numel() for p in model.parameters()) > 600e6
    encoder = Encoder(spec, model, device=torch.device("cpu"), dtype=torch.float32, weights_identity="random")
    feats = encoder.encode(np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8))
    assert feats.shape == (1, 1536) and np.isfinite(feats).all()
