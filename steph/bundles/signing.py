"""Signed bundles: ``ssh-keygen -Y sign`` / ``-Y verify`` with an allowed-signers file.

Hashes in a bundle detect edits, not a forger who rewrites the card too. A signature says *who*
wrote the file. stephctl uses the SSH signatures labs already have keys and tools for
(OpenSSH >= 8.2):

- ``stephctl export --sign KEY`` / ``export-sources --sign KEY`` write ``<bundle>.sig`` next to
  the bundle: ``ssh-keygen -Y sign -f KEY -n stephctl-bundle <bundle>``, a signature over the
  whole file in the namespace :data:`NAMESPACE` (so it cannot be replayed as, e.g., a git
  commit signature);
- with a trust list (``allowed_signers:`` in stephctl.yaml or ``--allowed-signers FILE``, the
  format of ssh-keygen's ALLOWED SIGNERS: ``principal [options] key-type base64-key`` per line),
  ``predict --model`` and ``import-sources`` accept a bundle only when ``<bundle>.sig`` verifies
  for a principal of that file (:func:`verify_bundle`), and ``merge`` uses an imported source
  only when it was imported from a bundle signed by a key still in that file
  (:func:`check_trusted_sources`). Without a trust list nothing changes: bundles are
  hash-checked only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ConsistencyError, MissingArtifactError
from ..fileio import sha256_bytes

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

NAMESPACE = "stephctl-bundle"
"""The ``-n`` namespace of every bundle signature."""
SIGNATURE_SUFFIX = ".sig"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle: the principal of the allowed-signers file and the key's fingerprint."""

    principal: str
    key: str
    """``SHA256:<base64>``, as ``ssh-keygen -l`` prints it."""
    bundle_sha256: str
    """sha256 of the bytes that were verified (the reader compares it with the bytes it read)."""

    def to_dict(self) -> dict[str, str]:
        return {"principal": self.principal, "key": self.key}

    def check_read(self, bundle: Path, sha256: str) -> None:
        """Refuse a bundle whose bytes changed between verification and reading."""
        if sha256 != self.bundle_sha256:
            raise ConsistencyError(
                f"{bundle} changed between the signature check and reading it", hint="run the command again"
            )


def signature_path(bundle: Path | str) -> Path:
    """``<bundle>.sig``, where ``ssh-keygen -Y sign`` writes the signature."""
    path = Path(bundle)
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise ConfigError(
            "ssh-keygen is not installed; bundle signatures need it",
            hint="install OpenSSH (`apt-get install openssh-client`, `brew install openssh`)",
        )
    return found


def _run(args: Sequence[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_ssh_keygen(), *args], input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False
    )


def _first_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def sign_bundle(bundle: Path, key: Path) -> Path:
    """Sign ``bundle`` with the SSH private ``key``; returns ``<bundle>.sig`` (replaced if present).

    Raises:
        MissingArtifactError: no bundle or no key file.
        ConfigError: ssh-keygen missing, or it cannot sign with ``key`` (e.g. a passphrase
            prompt without a terminal: load the key into ssh-agent first).
    """
    bundle, key = Path(bundle), Path(key).expanduser()
    for path, what in ((bundle, "bundle"), (key, "signing key")):
        if not path.is_file():
            raise MissingArtifactError(f"{what} not found: {path}", hint="give an SSH private key file (-f)")
    signature = signature_path(bundle)
    signature.unlink(missing_ok=True)
    done = _run(["-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(bundle)], stdin=b"")
    if done.returncode != 0 or not signature.is_file():
        raise ConfigError(
            f"ssh-keygen could not sign {bundle} with {key}: {_first_line(done.stderr)}",
            hint="use an SSH private key (ssh-keygen -t ed25519); a key with a passphrase must be in ssh-agent",
        )
    log.info("signed %s (%s)", bundle, signature)
    return signature


def verify_bundle(bundle: Path, allowed_signers: Path) -> Signer:
    """The signer of ``bundle`` among ``allowed_signers``, from ``<bundle>.sig``.

    Raises:
        MissingArtifactError: the allowed-signers file does not exist.
        ConsistencyError: the bundle has no signature, its signature is made by no key of the
            file, or it does not verify (the bundle changed after signing).
        ConfigError: ssh-keygen is not installed.
    """
    bundle, allowed = Path(bundle), Path(allowed_signers).expanduser()
    if not allowed.is_file():
        raise MissingArtifactError(
            f"allowed-signers file not found: {allowed}",
            hint="one line per trusted signer: `principal key-type base64-key` (the author's .pub file content)",
        )
    signature = signature_path(bundle)
    if not signature.is_file():
        raise ConsistencyError(
            f"{bundle} is not signed (no {signature.name}) and a trust list is set ({allowed})",
            hint=f"ask its author for the signature `{signature.name}` (stephctl export --sign KEY), "
            "or remove the trust list to accept unsigned bundles",
        )
    found = _run(["-Y", "find-principals", "-s", str(signature), "-f", str(allowed)])
    principals = found.stdout.decode("utf-8", "replace").split() if found.returncode == 0 else []
    if not principals:
        raise ConsistencyError(
            f"{bundle} is signed by a key that is not in {allowed}",
            hint="add the author's public key to the allowed-signers file if you trust them",
        )
    data = bundle.read_bytes()
    for principal in principals:
        done = _run(
            ["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE, "-s", str(signature)],
            stdin=data,
        )
        if done.returncode == 0:
            text = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
            key = next((w for w in text.split() if w.startswith("SHA256:")), "")
            log.info("%s: good signature of %s (%s)", bundle, principal, key)
            return Signer(principal, key, sha256_bytes(data))
    raise ConsistencyError(
        f"{bundle}: the signature {signature.name} does not verify (the bundle changed after it was signed, "
        f"or the signature is not for a stephctl bundle): {_first_line(done.stderr)}",
        hint="get an intact copy of the bundle and its signature from its author",
    )


def allowed_keys(allowed_signers: Path) -> dict[str, str]:
    """Fingerprints (``SHA256:...``) of the keys of an allowed-signers file -> their principals.

    The fingerprint is OpenSSH's: the unpadded base64 of the sha256 of the key blob.
    """
    keys: dict[str, str] = {}
    for line in Path(allowed_signers).read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for blob in words[1:]:
            try:
                raw = base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(raw) > 16:  # a key blob, not an option or a key type
                digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
                keys[f"SHA256:{digest}"] = words[0]
    return keys


def trust_list(layout: ProjectLayout, config: ProjectConfig) -> Path | None:
    """The project's allowed-signers file (``allowed_signers:``, relative to the project), or None."""
    if not config.allowed_signers:
        return None
    path = Path(config.allowed_signers).expanduser()
    return path if path.is_absolute() else layout.root / path


def check_trusted_sources(
    layout: ProjectLayout, config: ProjectConfig, cancers: Sequence[str], fold: int
) -> None:
    """With a trust list, refuse imported source vectors not signed by a key it lists.

    A project's own vectors are trusted; an imported one must record the key that signed its
    bundle (``imported_from.signer``), and that key must still be in the file.

    Raises:
        ConsistencyError: an imported source without a signature or signed by a key not listed.
    """
    from ..records import TaskVectorRecord

    allowed = trust_list(layout, config)
    if allowed is None:
        return
    if not allowed.is_file():
        raise MissingArtifactError(f"allowed-signers file not found: {allowed}", hint="fix allowed_signers:")
    keys = allowed_keys(allowed)
    for cancer in cancers:
        meta = layout.task_vector_meta(cancer, fold)
        if not meta.is_file():
            continue
        origin = TaskVectorRecord.read(meta).imported_from
        if not isinstance(origin, dict):
            continue
        signer = origin.get("signer")
        key = signer.get("key") if isinstance(signer, dict) else None
        if key not in keys:
            who = f"signed by {signer.get('principal')} ({key})" if isinstance(signer, dict) else "unsigned"
            raise ConsistencyError(
                f"source {cancer} fold {fold} was imported from {origin.get('bundle')}, {who}, and a trust list "
                f"is set ({allowed}) that does not list that key",
                hint="import the signed bundle again (`stephctl import-sources BUNDLE --overwrite`) or leave "
                f"{cancer} out with --sources",
            )
