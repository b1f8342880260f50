"""Plugins: entry-point discovery, broken and conflicting plugins, `stephctl plugins`, and the
example package of docs/extending.md used end to end (a command, an encoder, a merge method).

Packages are built in a temporary folder and installed there (``tests/_plugins.py``); stephctl
runs as a subprocess with that folder on PYTHONPATH, so discovery goes through
``importlib.metadata`` exactly as for an installed package.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from _cohorts import make_feature_project
from _plugins import (
    EXAMPLE_PACKAGE,
    LAB,
    RIVAL,
    doc_files,
    install,
    install_by_hand,
    package_from_docs,
    python,
    stephctl,
    write_package,
)
from _slides import TEST_EXTRACT_CONFIG, expected_coords, row, write_manifest, write_slide
from safetensors.torch import load_file

from steph.config import MergeConfig, ModelConfig, load_project
from steph.errors import ConfigError, EncoderUnavailableError, PluginError, UnknownNameError
from steph.models.abmil import ENCODER_KEYS
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.registry import Origin, Registry
from steph.training.loop import FitSettings

EXAMPLE = ("stephctl-plugin-example", "0.1.0")
CANCERS = ("BRCA", "BLCA", "LUNG")


def _rows(listing: dict[str, list[dict[str, str]]], kind: str) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in listing[kind]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Install folders: ``example`` (the package as docs/extending.md shows it), ``others`` (LAB, RIVAL)."""
    root = tmp_path_factory.mktemp("plugins")
    install([package_from_docs(root / "src")], root / "example")
    lab = write_package(root / "src", **LAB)  # type: ignore[arg-type]
    rival = write_package(root / "src", **RIVAL)  # type: ignore[arg-type]
    install([lab, rival], root / "others")
    return {"example": root / "example", "others": root / "others"}


# -- the registry mechanism, in process ------------------------------------------------------------
def test_registry_keeps_going_past_broken_and_conflicting_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "stephctl.test_things"
    first = """
        def register(registry):
            registry.add("shared", "from a")
            registry.add("only-a", "a")
    """
    second = """
        def register(registry):
            registry.add("shared", "from b")
            registry.add("only-b", "b")
    """
    entries_a = {group: {"a": "thing_a.things:register", "a-broken": "thing_a.missing:register"}}
    pkg_a = write_package(
        tmp_path,
        dist="thing-a",
        version="1.0",
        module="thing_a",
        sources={"things.py": first},
        entry_points=entries_a,
    )
    entries_b = {group: {"b": "thing_b.things:register"}}
    pkg_b = write_package(
        tmp_path,
        dist="thing-b",
        version="2.0",
        module="thing_b",
        sources={"things.py": second},
        entry_points=entries_b,
    )
    for package in (pkg_a, pkg_b):  # the no-uv path of install(): the wheel's files written directly
        install_by_hand(package, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    registry: Registry[str] = Registry("thing", group)
    assert registry.names() == ["only-a", "only-b", "shared"]
    assert registry.get("only-b") == "b"
    assert registry.origin("only-b") == Origin("thing-b", "2.0", "thing_b.things:register")
    for _ in range(2):  # the conflict stays an error on every use, not only the first
        with pytest.raises(PluginError, match=r"thing-a 1\.0 .* thing-b 2\.0"):
            registry.get("shared")
    assert list(registry.conflicts) == ["shared"]
    (broken,) = registry.broken
    assert (broken.name, broken.origin.package) == ("a-broken", "thing-a")
    assert "ModuleNotFoundError" in broken.reason
    with pytest.raises(UnknownNameError, match="from thing-a is broken: ModuleNotFoundError"):
        registry.get("a-broken")
    with pytest.raises(UnknownNameError, match="unknown thing 'only-c'") as unknown:
        registry.get("only-c")
    assert "failed to load: a-broken from thing-a" in str(unknown.value.hint)


def test_registry_direct_registration_of_a_taken_name_raises() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("x", 1)
    with pytest.raises(PluginError, match="two plugins register the thing 'x'"):
        registry.add("x", 2)


# -- the docs and the example package ------------------------------------------------------------
def test_docs_show_the_example_package_verbatim() -> None:
    shown = doc_files()
    on_disk = {
        str(p.relative_to(EXAMPLE_PACKAGE)): p.read_text(encoding="utf-8")
        for p in EXAMPLE_PACKAGE.rglob("*")
        if p.is_file() and p.suffix in (".py", ".toml")
    }
    assert shown == on_disk


@pytest.fixture
def example_module(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE_PACKAGE / "src"))
    import stephctl_plugin_example

    return stephctl_plugin_example


def test_example_encoder_is_a_per_channel_histogram(example_module) -> None:
    from stephctl_plugin_example.encoders import BINS, SPEC

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 3, 16, 16)).astype(np.float32) / 255.0
    images[0, 0, 0, 0] = 1.0  # the right edge belongs to the last bin, as in np.histogram
    model = SPEC.build(None, torch.device("cpu"))
    out = model(torch.from_numpy(images)).numpy()
    assert out.shape == (3, SPEC.embed_dim)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    for b in range(3):
        expected = [np.histogram(images[b, c], bins=edges)[0] / images[b, c].size for c in range(3)]
        np.testing.assert_allclose(out[b], np.concatenate(expected), atol=1e-7)
    with pytest.raises(EncoderUnavailableError, match="has no weights"):
        SPEC.build(Path("weights.pt"), torch.device("cpu"))


def test_example_merge_method_averages_the_most_similar_sources(example_module) -> None:
    from stephctl_plugin_example.merging import CosineTopK

    from steph.merging import MergeContext
    from steph.models.abmil import create_abmil

    model_config = ModelConfig(dim_emb=8, dim_attn=4, time_bins=4)
    theta0 = create_abmil(6, model_config).state_dict()
    gen = torch.Generator().manual_seed(0)
    target = {k: torch.randn(v.shape, generator=gen) for k, v in theta0.items()}
    noise = [{k: torch.randn(v.shape, generator=gen) for k, v in theta0.items()} for _ in range(4)]
    sources = [{k: target[k] * w + noise[i][k] for k in target} for i, w in enumerate((0.1, 3.0, -1.0, 1.0))]
    method = CosineTopK()
    ctx = MergeContext(
        target="BRCA",
        fold=0,
        theta0=theta0,
        target_vector=target,
        source_names=("A", "B", "C", "D"),
        source_vectors=tuple(sources),
        config=MergeConfig(method="cosine-topk", options={"k": 2}),
        model_config=model_config,
        dim_in=6,
        device=torch.device("cpu"),
        seed=0,
        fit_settings=FitSettings(epochs=1),
    )
    flat_t = np.concatenate([target[k].numpy().ravel() for k in ENCODER_KEYS])
    cos = [
        float(flat_s @ flat_t / np.linalg.norm(flat_s) / np.linalg.norm(flat_t))
        for flat_s in (np.concatenate([s[k].numpy().ravel() for k in ENCODER_KEYS]) for s in sources)
    ]
    assert method.selected(ctx) == list(np.argsort(cos)[::-1][:2]) == [1, 3]
    merged = method.build(ctx).encoder.as_dict()
    for key in ENCODER_KEYS:
        expected = theta0[key] + (target[key] + sources[1][key] + sources[3][key]) / 3
        torch.testing.assert_close(merged[key], expected)
    header, rows = method.tables(ctx=ctx, model=None, ids=[], extras={})["similarity.csv"]  # type: ignore[arg-type]
    assert header == ["source", "cosine", "selected"]
    assert [r[2] for r in rows] == [0, 1, 0, 1]
    np.testing.assert_allclose([r[1] for r in rows], cos, atol=1e-5)
    with pytest.raises(ConfigError, match="between 1 and the 4 sources"):
        method.check(MergeConfig(options={"k": 5}), 4)


# -- the CLI with installed plugins (subprocesses) -----------------------------------------------
def test_help_lists_plugin_commands_without_importing_torch(sites: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stephctl.main import app\n"
        "result = CliRunner().invoke(app, ['--help'], env={'COLUMNS': '200'})\n"
        "print(result.exit_code)\n"
        "print(result.output)\n"
        "print('HEAVY:', [m for m in ('torch', 'timm', 'h5py', 'openslide') if m in sys.modules])\n"
    )
    proc = python("-c", code, path=list(sites.values()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0\n")
    assert proc.stdout.rstrip().endswith("HEAVY: []")
    rows = [line.split(maxsplit=2) for line in proc.stdout.splitlines() if line.startswith("│ ")]
    help_of = {row[1]: row[2] for row in rows if len(row) == 3}
    assert "Report the patch count" in help_of["count-patches"]
    assert "Lab tools" in help_of["lab-tools"]
    assert "BROKEN" in help_of["lab-broken"]
    assert "BROKEN: the command name 'init' is claimed by several packages" in help_of["init"]
    assert "BROKEN" not in help_of["extract"]


def test_plugin_commands_run_and_broken_ones_fail_with_the_reason(sites: dict[str, Path]) -> None:
    path = list(sites.values())
    group = stephctl("lab-tools", "whoami", path=path)
    assert (group.returncode, group.stdout.strip()) == (0, "lab-plugin here")
    broken = stephctl("lab-broken", path=path)
    assert broken.returncode == 1
    assert "ModuleNotFoundError" in broken.stderr and "lab_plugin_missing_dependency" in broken.stderr
    clash = stephctl("init", "elsewhere", path=path)
    assert clash.returncode == 1
    assert "claimed by several packages: rival-plugin, stephctl" in clash.stderr


def test_plugins_lists_every_item_with_its_origin(sites: dict[str, Path]) -> None:
    proc = stephctl("plugins", "--json", path=list(sites.values()))
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    expected = {
        "commands": ("count-patches", "stephctl_plugin_example.commands:count_patches", "extract", "init"),
        "encoders": ("color-histogram", "stephctl_plugin_example.encoders:register", "uni2-h", "tiny-cnn"),
        "merge_methods": ("cosine-topk", "stephctl_plugin_example.merging:register", "steph", "ties"),
    }
    for kind, (name, entry_point, builtin, claimed) in expected.items():
        rows = _rows(listing, kind)
        assert (rows[name]["package"], rows[name]["version"]) == EXAMPLE
        assert (rows[name]["entry_point"], rows[name]["status"]) == (entry_point, "ok")
        assert rows[name]["description"]
        assert (rows[builtin]["package"], rows[builtin]["status"]) == ("stephctl", "ok")
        assert rows[builtin]["version"]
        broken = rows["lab-broken"]
        assert (broken["package"], broken["version"], broken["status"]) == ("lab-plugin", "1.2.3", "broken")
        assert "No module named 'lab_plugin_missing_dependency'" in broken["reason"]
        conflict = rows[claimed]
        assert conflict["status"] == "conflict"
        assert "stephctl" in conflict["package"]
        assert "rival-plugin" in conflict["reason"] or "rival-plugin" in conflict["package"]
    assert _rows(listing, "commands")["init"]["package"] == "rival-plugin + stephctl"
    assert "rival-plugin 9.9.9" in _rows(listing, "encoders")["tiny-cnn"]["reason"]
    assert _rows(listing, "commands")["lab-tools"]["status"] == "ok"


def test_plugins_lists_feature_stores_with_their_origin(sites: dict[str, Path]) -> None:
    proc = stephctl("plugins", "--json", path=list(sites.values()))
    assert proc.returncode == 0, proc.stderr
    stores = _rows(json.loads(proc.stdout), "feature_stores")
    for name, suffixes in {"h5": ".h5 .hdf5", "pt": ".pt .pth", "lmdb": ".lmdb"}.items():
        assert (stores[name]["package"], stores[name]["status"], stores[name]["suffixes"]) == (
            "stephctl",
            "ok",
            suffixes,
        )
        assert stores[name]["version"] and stores[name]["description"].startswith(suffixes + ": ")
    lab = stores["lab-npz"]
    assert (lab["package"], lab["version"], lab["entry_point"]) == (
        "lab-plugin",
        "1.2.3",
        "lab_plugin.stores:register",
    )
    assert (lab["status"], lab["suffixes"], lab["kind"]) == ("ok", ".npz", "feature store")
    assert "NumPy .npz per slide" in lab["description"]
    broken = stores["lab-broken"]
    assert (broken["package"], broken["status"]) == ("lab-plugin", "broken")
    assert "No module named 'lab_plugin_missing_dependency'" in broken["reason"]
    assert stores["npy"]["status"] == "conflict" and "rival-plugin 9.9.9" in stores["npy"]["reason"]
    table = stephctl("plugins", path=list(sites.values()))
    assert table.returncode == 0, table.stderr
    assert "feature stores" in table.stdout and "lab-npz" in table.stdout
    assert "stephctl[lmdb]" in table.stdout  # rich markup is escaped in the table


def test_count_patches_reports_every_slide(sites: dict[str, Path], tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "project", cancers=("BRCA",), n_patients=6, dim=4, folds=2)
    features = sorted((root / "features" / "tiny-cnn").glob("*.h5"))
    counts = {}
    for path in features:
        with h5py.File(path) as fh:
            counts[path.stem] = int(fh["features"].shape[0])
    features[0].unlink()
    proc = stephctl("-q", "-p", root, "count-patches", "-c", "brca", "--json", path=[sites["example"]])
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    status = {item["key"]: (item["status"], item["details"].get("patches")) for item in report["items"]}
    missing = features[0].stem
    assert status.pop(missing) == ("failed", None)
    assert status == {sid: ("done", n) for sid, n in counts.items() if sid != missing}
    assert report["outputs"]["missing"] == 1
    assert report["outputs"]["patches"] == sum(counts.values()) - counts[missing]


@pytest.mark.slow
def test_extract_with_the_plugin_encoder(sites: dict[str, Path], empty_project: Path) -> None:
    write_slide(empty_project / "slides" / "S1.tif", 0.5)
    write_manifest(empty_project, [row("S1", "slides/S1.tif")])
    config_file = empty_project / "stephctl.yaml"
    data = yaml.safe_load(config_file.read_text())
    for dotted, value in TEST_EXTRACT_CONFIG.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    config_file.write_text(yaml.safe_dump(data))

    proc = stephctl(
        "-q",
        "-p",
        empty_project,
        "extract",
        "--encoder",
        "color-histogram",
        "--json",
        path=[sites["example"]],
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with h5py.File(empty_project / "features" / "color-histogram" / "S1.h5") as fh:
        feats, coords = fh["features"][:], fh["coords"][:]
        attrs = dict(fh.attrs)
    assert {tuple(c) for c in coords} == expected_coords(((64, 64, 256, 192), (320, 224, 448, 352)), 0.5)
    assert feats.shape == (len(coords), 24)
    np.testing.assert_allclose(feats.reshape(-1, 3, 8).sum(axis=2), 1.0, atol=1e-5)
    assert attrs["encoder"] == "color-histogram"
    assert attrs["encoder_weights"] == "none (hand-crafted colour histogram, 8 bins per channel)"
    assert int(attrs["embed_dim"]) == 24


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cancers with fold-0 models and task vectors (one epoch each)."""
    root = make_feature_project(
        tmp_path_factory.mktemp("merge") / "project", cancers=CANCERS, n_patients=12, dim=8, folds=2
    )
    config_file = root / "stephctl.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["train"].update({"epochs": 1, "warmup_epochs": 0, "folds": [0], "device": "cpu"})
    config_file.write_text(yaml.safe_dump(data))
    layout, config = load_project(root)
    assert train_source_models(layout, config).ok
    assert compute_task_vectors(layout, config).ok
    return root


@pytest.mark.slow
def test_merge_with_the_plugin_method(sites: dict[str, Path], trained_project: Path) -> None:
    root = trained_project
    args = ("-q", "-p", root, "merge", "--target", "BRCA", "--method", "cosine-topk", "--option", "k=1")
    proc = stephctl(*args, "--fold", "0", "--json", path=[sites["example"]])
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (item,) = json.loads(proc.stdout)["items"]
    assert (item["key"], item["status"]) == ("BRCA/cosine-topk-k1/fold_0", "done")
    run = root / "merged" / "BRCA" / "cosine-topk-k1" / "fold_0"
    assert {p.name for p in run.iterdir()} >= {
        "head.safetensors",
        "similarity.csv",
        "meta.json",
        "config.yaml",
    }
    header, *rows = [line.split(",") for line in (run / "similarity.csv").read_text().splitlines()]
    assert header == ["source", "cosine", "selected"]
    tau = {c: load_file(str(root / "task_vectors" / c / "fold_0.safetensors")) for c in CANCERS}
    flat = {c: torch.cat([tau[c][k].flatten() for k in ENCODER_KEYS]) for c in CANCERS}
    for source, cosine, _ in rows:
        expected = torch.nn.functional.cosine_similarity(flat[source], flat["BRCA"], dim=0)
        assert float(cosine) == pytest.approx(float(expected), abs=1e-5)
    best = max(rows, key=lambda r: float(r[1]))[0]
    assert {r[0]: r[2] for r in rows} == {c: str(int(c == best)) for c in CANCERS[1:]}
    assert json.loads((run / "meta.json").read_text())["method"] == "cosine-topk"
    metrics = json.loads(
        (root / "results" / "BRCA" / "cosine-topk-k1" / "fold_0" / "metrics.json").read_text()
    )
    assert metrics["n"] > 0


def test_plugins_table_without_plugins(cli) -> None:
    # Last in the module: the in-process CLI leaves a log handler on its (closed) captured stderr.
    result = cli("plugins")
    assert result.exit_code == 0, result.output
    for word in (
        "commands",
        "encoders",
        "merge methods",
        "tiny-cnn",
        "steph",
        "train-source",
        "feature stores",
        "lmdb",
    ):
        assert word in result.output
