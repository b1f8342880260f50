"""Is the encoder a feature file records the project's encoder?

Tools spell one encoder many ways: TRIDENT writes ``uni_v2``, STAMP ``uni2``, the hub id is
``hf-hub:MahmoodLab/UNI2-h``, stephctl says ``uni2-h``. :func:`canonical_encoder` maps every
spelling to one key; :func:`same_encoder` compares two names with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Spellings (after normalisation: lower case, hub prefix and owner dropped, separators removed)
# of one encoder -> its key.
_ALIASES = {
    "uni2h": "uni2-h",
    "uni2": "uni2-h",
    "univ2": "uni2-h",
    "uni": "uni",
    "uni1": "uni",
    "univ1": "uni",
    "conchv15": "conch-v1.5",
    "conch15": "conch-v1.5",
    "conchv1": "conch",
    "conch": "conch",
    "virchow2": "virchow2",
    "virchowv2": "virchow2",
    "virchow": "virchow",
    "provgigapath": "prov-gigapath",
    "gigapath": "prov-gigapath",
    "hoptimus0": "h-optimus-0",
    "hoptimus1": "h-optimus-1",
}

# Attributes that name the encoder: (dataset or "" for the file, attribute).
ENCODER_ATTRIBUTES = (("", "encoder"), ("features", "encoder"), ("", "extractor"), ("feats", "extractor"))


def canonical_encoder(name: str) -> str:
    """One key for every spelling of an encoder.

    >>> canonical_encoder("uni_v2"), canonical_encoder("hf-hub:MahmoodLab/UNI2-h")
    ('uni2-h', 'uni2-h')
    >>> canonical_encoder("timm:resnet50")
    'timm-resnet50'
    """
    raw = name.strip().lower()
    if raw.startswith("timm:"):
        return "timm-" + raw[len("timm:") :]
    raw = re.sub(r"^hf[-_]hub:", "", raw).rsplit("/", 1)[-1]
    squashed = re.sub(r"[-_. ]", "", raw)
    return _ALIASES.get(squashed, squashed)


def same_encoder(recorded: str, project: str, also: Iterable[str] = ()) -> bool:
    """True when ``recorded`` names ``project``'s encoder or one of the accepted names ``also``."""
    key = canonical_encoder(recorded)
    return key in {canonical_encoder(name) for name in (project, *also)}
