"""Signed sharing: ``ssh-keygen -Y sign`` / ``-Y verify`` with an allowed-signers file.

With a trust list, ``import-sources``, ``predict --model`` and ``merge`` accept only bundles
signed by a listed key; an unsigned bundle, one signed by another key and one changed after
signing are refused. Without a trust list nothing changes. Needs OpenSSH's ssh-keygen (.ci/run
installs it); without it these tests are skipped with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from _crafted_bundles import OWN, abmil_state, lab_b, model_bundle_parts, write_sources

from steph.bundles.container import write_bundle
from steph.bundles.signing import allowed_keys, check_trusted_sources, sign_bundle, verify_bundle
from steph.bundles.sources import import_sources
from steph.config import load_project
from steph.errors import ConsistencyError
from steph.pipeline.merge import merge_models
from steph.records import TaskVectorRecord

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed (apt-get install openssh-client)"
)


def _key(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    alice, mallory = _key(folder, "alice"), _key(folder, "mallory")
    allowed = folder / "allowed_signers"
    public = alice.with_suffix(".pub").read_text().split()
    allowed.write_text(f"# lab A\nalice@lab-a {public[0]} {public[1]}\n")
    return {"alice": alice, "mallory": mallory, "allowed": allowed}


def test_a_signed_bundle_verifies_and_others_are_refused(tmp_path: Path, keys) -> None:
    bundle = write_sources(tmp_path / "s.safetensors")
    with pytest.raises(ConsistencyError, match="is not signed"):
        verify_bundle(bundle, keys["allowed"])
    sign_bundle(bundle, keys["mallory"])
    with pytest.raises(ConsistencyError, match="not in"):
        verify_bundle(bundle, keys["allowed"])
    sign_bundle(bundle, keys["alice"])
    signer = verify_bundle(bundle, keys["allowed"])
    assert signer.principal == "alice@lab-a" and signer.key in allowed_keys(keys["allowed"])
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(keys["alice"].with_suffix(".pub"))], capture_output=True, text=True
    ).stdout.split()[1]
    assert signer.key == fingerprint
    write_sources(bundle, theta0=abmil_state(seed=9))  # re-written (valid hashes) after signing
    with pytest.raises(ConsistencyError, match="does not verify"):
        verify_bundle(bundle, keys["allowed"])


def test_import_sources_with_a_trust_list(tmp_path: Path, keys, cli) -> None:
    root = lab_b(tmp_path / "B")
    bundle = write_sources(tmp_path / "s.safetensors")
    trusted = ["--allowed-signers", keys["allowed"]]
    unsigned = cli("-p", root, "import-sources", bundle, *trusted)
    assert unsigned.exit_code == 1 and "is not signed" in unsigned.stderr
    sign_bundle(bundle, keys["mallory"])
    assert cli("-p", root, "import-sources", bundle, *trusted).exit_code == 1
    sign_bundle(bundle, keys["alice"])
    result = cli("-p", root, "import-sources", bundle, *trusted)
    assert result.exit_code == 0, result.output
    layout, config = load_project(root, {"allowed_signers": str(keys["allowed"])})
    record = TaskVectorRecord.read(layout.task_vector_meta("BLCA", 0))
    assert record.imported_from is not None
    assert record.imported_from["signer"]["principal"] == "alice@lab-a"
    check_trusted_sources(layout, config, ["BLCA"], 0)  # merge's check: accepted


def test_merge_refuses_imported_sources_no_listed_key_signed(tmp_path: Path, keys) -> None:
    root = lab_b(tmp_path / "B")
    layout, config = load_project(root)
    assert import_sources(layout, config, write_sources(tmp_path / "s.safetensors")).ok  # no trust list
    layout, config = load_project(root, {"allowed_signers": str(keys["allowed"])})
    with pytest.raises(ConsistencyError, match=r"BLCA fold 0 was imported from s\.safetensors, unsigned"):
        merge_models(layout, config, target=OWN, methods=["steph"], folds=[0])


def test_merge_allowed_signers_flag(tmp_path: Path, keys, cli) -> None:
    """``merge --allowed-signers FILE`` is the trust list, as in predict and import-sources."""
    root = lab_b(tmp_path / "B")
    layout, config = load_project(root)
    bundle = write_sources(tmp_path / "s.safetensors")
    assert import_sources(layout, config, bundle).ok  # no trust list: imported unsigned
    merge = ("-p", root, "merge", "-t", OWN, "-m", "steph", "-k", 0, "--epochs", 1)
    refused = cli(*merge, "--allowed-signers", keys["allowed"])
    assert refused.exit_code == 1, refused.output
    assert "BLCA fold 0 was imported from s.safetensors, unsigned" in refused.stderr
    missing = cli(*merge, "--allowed-signers", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "allowed-signers file not found" in missing.stderr


def test_predict_with_a_trust_list_in_stephctl_yaml(tmp_path: Path, keys, cli) -> None:
    root = lab_b(tmp_path / "B")
    config = root / "stephctl.yaml"
    config.write_text(config.read_text() + f"\nallowed_signers: {keys['allowed']}\n")
    parts, card = model_bundle_parts()
    bundle = tmp_path / "m.safetensors"
    write_bundle(bundle, "model", parts, card)
    missing = tmp_path / "none.tiff"
    unsigned = cli("-p", root, "predict", missing, "--model", bundle)
    assert unsigned.exit_code == 1 and "is not signed" in unsigned.stderr
    sign_bundle(bundle, keys["alice"])
    signed = cli("-p", root, "predict", missing, "--model", bundle)
    assert signed.exit_code == 1 and "slide file not found" in signed.stderr  # past the signature check


def test_export_sources_sign_writes_a_signature_that_verifies(tmp_path: Path, keys, cli) -> None:
    """Lab B passes on what it imported, signed with its own key."""
    root = lab_b(tmp_path / "B")
    layout, config = load_project(root)
    assert import_sources(layout, config, write_sources(tmp_path / "s.safetensors")).ok
    out = tmp_path / "again.safetensors"
    result = cli("-p", root, "export-sources", "--cancer", "BLCA", "--out", out, "--sign", keys["alice"])
    assert result.exit_code == 0, result.output
    assert verify_bundle(out, keys["allowed"]).principal == "alice@lab-a"


def test_export_sign_writes_a_signature_that_verifies(tmp_path: Path, keys, cli) -> None:
    import torch

    root = lab_b(tmp_path / "B")
    torch.save({"model": abmil_state(seed=1)}, tmp_path / "null.pth")
    torch.save({"model": abmil_state(seed=2)}, tmp_path / "coad.pth")
    assert cli("-p", root, "import-reference", "--theta0", tmp_path / "null.pth").exit_code == 0
    imported = cli(
        "-p", root, "import-reference", "--checkpoint", tmp_path / "coad.pth", "--cancer", OWN, "--fold", 0
    )
    assert imported.exit_code == 0, imported.output
    out = tmp_path / "model.safetensors"
    result = cli(
        "-p",
        root,
        "export",
        "-t",
        OWN,
        "-m",
        "cancer-specific",
        "-k",
        0,
        "--out",
        out,
        "--sign",
        keys["alice"],
    )
    assert result.exit_code == 0, result.output
    assert verify_bundle(out, keys["allowed"]).principal == "alice@lab-a"
    out.write_bytes(out.read_bytes() + b" ")  # any change after signing
    with pytest.raises(ConsistencyError, match="does not verify"):
        verify_bundle(out, keys["allowed"])
