"""Creating a project: the layout's folders, a commented stephctl.yaml and an empty manifest."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import DEFAULT_ENCODER, load_config
from .config.template import render
from .errors import ConfigError
from .fileio import write_csv, write_text
from .layout import ProjectLayout, check_encoder_name, normalize_cancer

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("slide_id", "patient_id", "cancer", "path", "mpp")


def init_project(
    root: Path | str, *, encoder: str = DEFAULT_ENCODER, cancers: list[str] | None = None, force: bool = False
) -> ProjectLayout:
    """Create the standard layout under ``root``.

    An existing stephctl.yaml is kept unless ``force``; existing data is never touched.

    Raises:
        ConfigError: ``root`` is a file, or the config exists and ``force`` is false.
    """
    layout = ProjectLayout(Path(root))
    if layout.root.exists() and not layout.root.is_dir():
        raise ConfigError(f"{layout.root} exists and is not a directory", hint="choose another DIR")
    check_encoder_name(encoder)
    names = [normalize_cancer(c) for c in cancers or []]
    if layout.config_file.exists() and not force:
        raise ConfigError(
            f"{layout.config_file} already exists",
            hint="the project is already initialised; use --force to rewrite stephctl.yaml with defaults",
        )
    for directory in layout.directories():
        directory.mkdir(parents=True, exist_ok=True)
    write_text(layout.config_file, render(encoder=encoder, cancers=names))
    if not layout.manifest.exists():
        write_csv(layout.manifest, MANIFEST_COLUMNS, [])
    load_config(layout.root)  # the template must load: fail loudly here rather than later
    log.info("initialised project at %s", layout.root)
    return layout
