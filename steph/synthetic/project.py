"""Projects for synthetic cohorts: ``stephctl init``'s commented stephctl.yaml with a few settings changed.

The demo and the transfer benchmark need smaller models and shorter protocols than the
reference defaults. Rather than dumping a bare YAML, :func:`init_configured_project` keeps the
commented template of ``stephctl init`` and edits the value of each overridden key in place,
marking it (``# demo (default 20)``), so the project's config still documents every key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import ConfigError
from ..fileio import write_text
from ..layout import ProjectLayout
from ..project import init_project

_KEY_LINE = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#]*?)(?P<pad> *)(?P<comment>#.*)?$"
)


def set_yaml_value(text: str, dotted: str, value: Any, *, note: str) -> str:
    """Replace the value of ``dotted`` (``train.epochs``) in block-style YAML ``text``, keeping comments.

    The new value is written as JSON (a subset of YAML) followed by ``# <note> (default <old>)``.

    >>> print(set_yaml_value("train:\\n  epochs: 20  # full\\n", "train.epochs", 3, note="demo"))
    train:
      epochs: 3  # demo (default 20)
    <BLANKLINE>

    Raises:
        ConfigError: the key is not in the text.
    """
    parts = dotted.split(".")
    lines = text.splitlines(keepends=True)
    depth, parent_indent, child_indent = 0, -1, None
    for i, line in enumerate(lines):
        match = _KEY_LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        indent = len(match["indent"])
        if indent <= parent_indent:
            break  # left the parent's block without finding the key
        child_indent = indent if child_indent is None else child_indent
        if indent != child_indent or match["key"] != parts[depth]:
            continue
        if depth < len(parts) - 1:
            depth, parent_indent, child_indent = depth + 1, indent, None
            continue
        old = match["value"].strip()
        lines[i] = f"{match['indent']}{match['key']}: {json.dumps(value)}  # {note} (default {old})\n"
        return "".join(lines)
    raise ConfigError(f"cannot set {dotted!r}: the key is not in the config template")


def init_configured_project(
    root: Path | str, *, cancers: list[str], encoder: str, overrides: Mapping[str, Any], note: str
) -> ProjectLayout:
    """Initialise ``root`` like ``stephctl init`` and set ``overrides`` (dotted keys) in its stephctl.yaml.

    An existing project is left as it is (its config may have been edited since).

    Raises:
        ConfigError: an override names an unknown key or an invalid value.
    """
    layout = ProjectLayout(Path(root))
    if layout.config_file.is_file():
        return layout
    init_project(layout.root, encoder=encoder, cancers=cancers)
    text = layout.config_file.read_text(encoding="utf-8")
    for key, value in overrides.items():
        text = set_yaml_value(text, key, value, note=note)
    write_text(layout.config_file, text)
    load_config(layout.root)  # fail here, not in a later stage, if an override is invalid
    return layout
