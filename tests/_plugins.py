"""Build, install and use throwaway stephctl plugin packages in tests.

A package is installed the way a user installs one, ``uv pip install --target DIR --no-deps PKG``
(hatchling builds the wheel), and made visible to a ``python -m stephctl`` subprocess through
``PYTHONPATH=DIR``: :mod:`importlib.metadata` then finds its ``.dist-info`` and entry points, the
same discovery as for a package in site-packages. Without ``uv`` on PATH the wheel contents are
written directly (package files plus ``METADATA``, ``entry_points.txt`` and ``RECORD``), which is
what installing a pure-Python wheel amounts to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PACKAGE = REPO / "examples" / "stephctl-plugin-example"
EXTENDING_DOC = REPO / "docs" / "extending.md"


def write_package(
    root: Path,
    *,
    dist: str,
    version: str,
    module: str,
    sources: Mapping[str, str],
    entry_points: Mapping[str, Mapping[str, str]],
) -> Path:
    """Write a hatchling-built package ``dist`` with ``module/<file>`` sources under ``root/dist``.

    Args:
        root: parent folder.
        dist: distribution name (what ``stephctl plugins`` shows as the package).
        version: its version.
        module: import name of the package.
        sources: file name inside the package -> Python source (dedented).
        entry_points: group -> {entry name: "module:attr"}.

    Returns:
        The package folder (the argument of ``pip install``).
    """
    package_dir = root / dist
    code_dir = package_dir / "src" / module
    code_dir.mkdir(parents=True)
    for name, text in {"__init__.py": "", **sources}.items():
        (code_dir / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    lines = [
        "[project]",
        f'name = "{dist}"',
        f'version = "{version}"',
        'requires-python = ">=3.10"',
        "",
    ]
    for group, entries in entry_points.items():
        lines.append(f'[project.entry-points."{group}"]')
        lines.extend(f'"{name}" = "{value}"' for name, value in entries.items())
        lines.append("")
    lines += [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[tool.hatch.build.targets.wheel]",
        f'packages = ["src/{module}"]',
    ]
    (package_dir / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return package_dir


def install(packages: Sequence[Path], target: Path) -> None:
    """Install the package folders ``packages`` into the folder ``target`` (without dependencies)."""
    target.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    if uv is not None:
        pip = [uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable]
        subprocess.run(
            [*pip, "--target", str(target), *map(str, packages)], check=True, capture_output=True, timeout=300
        )
        return
    for package in packages:
        install_by_hand(package, target)


def install_by_hand(package_dir: Path, target: Path) -> None:
    """What installing the pure-Python wheel of ``package_dir`` writes into ``target``."""
    import tomllib

    target.mkdir(parents=True, exist_ok=True)
    project = tomllib.loads((package_dir / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        source = package_dir / package
        shutil.copytree(source, target / source.name)
    dist = meta["name"].replace("-", "_")
    info = target / f"{dist}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n", encoding="utf-8"
    )
    groups = meta.get("entry-points", {})
    text = "".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items()) + "\n"
        for group, entries in groups.items()
    )
    (info / "entry_points.txt").write_text(text, encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")


def python(
    *args: object, path: Sequence[Path] = (), timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (this interpreter) with the plugin folders ``path`` on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "STEPHCTL_NO_HUB": "1"})
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def stephctl(
    *args: object, path: Sequence[Path] = (), timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stephctl ARGS`` with the plugin folders ``path`` on PYTHONPATH."""
    return python("-m", "stephctl", *args, path=path, timeout=timeout)


# -- the example package as docs/extending.md shows it -----------------------------------------
_BLOCK = re.compile(r"^```[a-z]*\n# (examples/stephctl-plugin-example/[^\n]+)\n(.*?)^```$", re.S | re.M)


def doc_files(doc: Path = EXTENDING_DOC) -> dict[str, str]:
    """Files shown in ``doc``: code blocks whose first line is ``# examples/stephctl-plugin-example/<path>``.

    Returns:
        path relative to the example package -> the block's text without that first line.
    """
    prefix = "examples/stephctl-plugin-example/"
    files: dict[str, str] = {}
    for path, body in _BLOCK.findall(doc.read_text(encoding="utf-8")):
        files[path[len(prefix) :]] = body
    return files


def package_from_docs(root: Path) -> Path:
    """Write the plugin package exactly as docs/extending.md shows it under ``root``; its folder."""
    package_dir = root / EXAMPLE_PACKAGE.name
    for relative, text in doc_files().items():
        path = package_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package_dir


# -- throwaway packages: a broken plugin of each kind (and a working feature store), and a rival claiming built-in names
LAB = {
    "dist": "lab-plugin",
    "version": "1.2.3",
    "module": "lab_plugin",
    "sources": {
        "tools.py": """
            import typer

            tools = typer.Typer(help="Lab tools (a command group).")


            @tools.command("whoami")
            def whoami() -> None:
                '''Print the plugin's name.'''
                typer.echo("lab-plugin here")
        """,
        "broken.py": """
            import lab_plugin_missing_dependency  # noqa: F401  (not installed: the plugin is broken)

            def command() -> None: ...
            def register(registry) -> None: ...
        """,
        "stores.py": """
            import numpy as np
            import torch

            from steph.data.stores import FeatureStore, to_matrix


            class NpzStore(FeatureStore):
                name = "lab-npz"
                suffixes = (".npz",)
                description = "NumPy .npz per slide, array 'features'"

                def read(self, ref):
                    with np.load(ref.path) as data:
                        return to_matrix(torch.from_numpy(data["features"]), ref)


            def register(registry) -> None:
                registry.add("lab-npz", NpzStore())
        """,
    },
    "entry_points": {
        "stephctl.commands": {
            "lab-tools": "lab_plugin.tools:tools",
            "lab-broken": "lab_plugin.broken:command",
        },
        "stephctl.encoders": {"lab-broken": "lab_plugin.broken:register"},
        "stephctl.merge_methods": {"lab-broken": "lab_plugin.broken:register"},
        "stephctl.feature_stores": {
            "lab-stores": "lab_plugin.stores:register",
            "lab-broken": "lab_plugin.broken:register",
        },
    },
}
"""A command group that works and one broken entry point per extension point."""

RIVAL = {
    "dist": "rival-plugin",
    "version": "9.9.9",
    "module": "rival_plugin",
    "sources": {
        "clash.py": """
            from dataclasses import replace

            from steph.extractors.tiny_cnn import SPEC
            from steph.merging.baselines import Ties


            def init() -> None:
                '''Never mounted: the name is taken.'''


            def register_encoder(registry) -> None:
                registry.add("tiny-cnn", replace(SPEC, description="a rival tiny-cnn"))


            def register_method(registry) -> None:
                registry.add("ties", Ties())


            def register_store(registry) -> None:
                from steph.data.stores import NumpyStore

                registry.add("npy", NumpyStore())
        """,
    },
    "entry_points": {
        "stephctl.commands": {"init": "rival_plugin.clash:init"},
        "stephctl.encoders": {"rival": "rival_plugin.clash:register_encoder"},
        "stephctl.merge_methods": {"rival": "rival_plugin.clash:register_method"},
        "stephctl.feature_stores": {"rival": "rival_plugin.clash:register_store"},
    },
}
"""Claims names that stephctl itself provides: the command ``init``, encoder ``tiny-cnn``, method
``ties``, feature store ``npy``."""
