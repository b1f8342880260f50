"""Benchmark of `stephctl extract`: throughput against the bare encoder, and peak memory.

Figures (one run, side by side, on the same synthetic slide and the same patches):

- ``extract_patches_per_s``: patches per second of a whole slide's extraction (open, tissue
  mask, grid, reading, encoding, HDF5 writing), per encoder;
- ``preloaded_patches_per_s``: the same encoder on the same patches already in memory;
- ``ratio`` = extract / preloaded (1.0 = reading is completely hidden behind the encoder),
  both the best of alternating rounds (``rounds`` lists every round);
- ``read_only_patches_per_s``: the reader threads alone (no encoder);
- ``read_cpu_ms_per_patch`` / ``encode_cpu_ms_per_patch``: CPU time (all threads) per patch of
  reading alone and of encoding alone. When both stages need the same cores, extraction cannot
  beat ``1 / (read + encode)`` CPU-ms per core, so ``ratio_ceiling`` = encode / (read + encode)
  is the highest ``ratio`` this machine allows, however well the two overlap;
- ``overlap_efficiency`` = extract / min(read-only, preloaded): how close extraction comes to
  its slower stage measured alone (1.0 = the faster stage is completely hidden);
- ``memory``: peak resident memory of an extraction subprocess (tiny-cnn, batch 16) for two
  slide sizes: growth over the process's footprint before the first slide. In-flight patch
  batches are bounded by ``(3 x workers + 1) x batch`` (the next slide's first batches included), so beyond a few hundred patches the
  peak must stay flat as slides grow.

- ``slides``: several small slides (so that the work between slides shows) with a slow
  encoder (ResNet-18, random weights) on ``stephctl extract``'s own loop, in alternating rounds:
  ``sequential`` (each slide prepared, then encoded, one after the other: the loop before the
  next slide was prepared in the background), ``pipeline`` (``extract_features``: the next
  slide's open, mask, grid, thumbnail and first batches prepared while the current one encodes)
  and ``encoder`` (the same encoder on the same patches in memory); also the encoder's idle
  time between two slides (median seconds, from one slide's last batch to the next one's
  first: the gap the background preparation removes, a figure less exposed to the machine's
  load than throughput). Figures are patches/s over
  the slides' extraction time (from each slide's turn to its file written; encoder loading not
  counted) and the ratios to the encoder alone measured in the same run, the only comparison a
  shared machine allows.

Encoders: ``tiny-cnn`` (the built-in CPU encoder, several times cheaper than decoding a patch
from the slide, so the reader is the bottleneck) and a randomly initialised ResNet-18
(``timm:resnet18``), a stand-in for an encoder that is the bottleneck, as a foundation model is.

``--encoder NAME --device DEVICE``: only that encoder, built with random weights (UNI2-h's
ViT-g/14 architecture for ``uni2-h``; bf16 on CUDA), extracting one slide with the reader threads
of the CPUs the process may use, against the same encoder on the same patches in memory; with
the encoder's FLOPs per patch (counted on one forward) and its achieved TFLOP/s in both.

Run: ``python -m benchmarks.bench_extract [--quick] [--slides-only]`` or
``python -m benchmarks.bench_extract --encoder uni2-h --device cuda [--batch-size 64]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

WORKERS = 2
BATCH = 64
OVERRIDES = {"extract.workers": WORKERS, "extract.batch_size": BATCH, "extract.device": "cpu"}
MEMORY_OVERRIDES = {**OVERRIDES, "extract.batch_size": 16}


def make_slide(path: Path, side: int, *, seed: int = 0) -> Path:
    """A square 0.5-um/px slide, ~70% tissue (a disc) with a nucleus-scale texture.

    Rendered in strips of 512 rows, so an 8192-px slide needs ~200 MB, not gigabytes.
    """
    from steph.synthetic.tiff import write_pyramidal_tiff

    rng = np.random.default_rng(seed)
    low = rng.normal(0, 1, (side // 16, side // 16, 3)).astype(np.float32)
    stain = np.array([200, 120, 170], np.float32)
    image = np.empty((side, side, 3), np.uint8)
    xx = np.arange(side, dtype=np.float32) / side - 0.5
    for top in range(0, side, 512):
        rows = slice(top, min(side, top + 512))
        yy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] / side - 0.5
        inside = (xx[None, :] / 0.48) ** 2 + (yy / 0.48) ** 2 <= 1.0
        field = np.repeat(np.repeat(low[rows.start // 16 : rows.stop // 16], 16, axis=0), 16, axis=1)
        noise = rng.normal(0, 8, field.shape).astype(np.float32)
        tissue = np.clip(stain + 25 * field + noise, 0, 255)
        image[rows] = np.where(inside[..., None], tissue, 243).astype(np.uint8)
    return write_pyramidal_tiff(path, image, mpp=0.5)


def make_project(
    root: Path, slide: Path, slide_id: str = "bench", overrides: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    from steph.config import load_project
    from steph.fileio import write_csv
    from steph.project import init_project

    init_project(root)
    write_csv(
        root / "slides" / "manifest.csv",
        ("slide_id", "patient_id", "cancer", "path", "mpp"),
        [(slide_id, "P", "BRCA", str(slide), "")],
    )
    return load_project(root, OVERRIDES if overrides is None else overrides)


def _resnet18() -> Any:
    import torch

    from steph.extractors import get_encoder_spec
    from steph.extractors.base import Encoder

    spec = get_encoder_spec("timm:resnet18")
    torch.manual_seed(0)
    return Encoder(
        spec, spec.architecture(), device=torch.device("cpu"), dtype=torch.float32, weights_identity="random"
    )  # type: ignore[misc]


def throughput(
    encoder: Any,
    layout: Any,
    config: Any,
    *,
    repeats: int,
    slide_id: str = "bench",
    workers: int = WORKERS,
    batch: int = BATCH,
) -> dict[str, Any]:
    """Extract one slide with ``encoder``, then time the same encoder on the same patches held in
    memory; ``repeats`` alternating rounds, best round of each kept (other processes on a shared
    machine only ever slow a round down)."""
    from steph.extraction.overlap import iter_batches, patch_reader
    from steph.extraction.slide_job import extract_slide
    from steph.slides import Slide, read_manifest

    entry = read_manifest(layout)[0]
    out = layout.own_features(encoder.spec.name, slide_id)
    encoder.encode(np.zeros((2, 256, 256, 3), np.uint8))  # warm-up
    extract_rates, preloaded_rates, read_rates, read_cpu, encode_cpu = [], [], [], [], []
    for _ in range(repeats):
        outcome = extract_slide(
            entry, encoder=encoder, config=config.extract, output=out, thumbnail=out.with_suffix(".png")
        )
        extract_rates.append(outcome.n_patches / outcome.seconds)
        with h5py.File(out, "r") as handle:
            coords = handle["coords"][:]
        with Slide(entry.path, slide_id=slide_id) as slide:
            grid = _full_grid(slide, slide_id)
            reader = patch_reader(slide, grid)
            start, cpu = time.perf_counter(), time.process_time()
            batches = [
                patches for patches, _ in iter_batches(reader, coords, batch_size=batch, workers=workers)
            ]
            read_rates.append(len(coords) / (time.perf_counter() - start))
            read_cpu.append((time.process_time() - cpu) / len(coords))
        start, cpu = time.perf_counter(), time.process_time()
        for patches in batches:
            encoder.encode(patches)
        preloaded_rates.append(len(coords) / (time.perf_counter() - start))
        encode_cpu.append((time.process_time() - cpu) / len(coords))
        del batches
    best_extract, best_preloaded, best_read = max(extract_rates), max(preloaded_rates), max(read_rates)
    read_ms, encode_ms = 1000 * min(read_cpu), 1000 * min(encode_cpu)
    return {
        "patches": len(coords),
        "extract_patches_per_s": round(best_extract, 1),
        "preloaded_patches_per_s": round(best_preloaded, 1),
        "read_only_patches_per_s": round(best_read, 1),
        "ratio": round(best_extract / best_preloaded, 3),
        "read_cpu_ms_per_patch": round(read_ms, 3),
        "encode_cpu_ms_per_patch": round(encode_ms, 3),
        "ratio_ceiling": round(encode_ms / (read_ms + encode_ms), 3),
        "overlap_efficiency": round(best_extract / min(best_read, best_preloaded), 3),
        "rounds": [[round(e, 1), round(p, 1)] for e, p in zip(extract_rates, preloaded_rates, strict=True)],
    }


def slides(tmp: Path, *, n_slides: int, side: int, repeats: int) -> dict[str, Any]:
    """``n_slides`` slides of ``side`` px through the sequential loop, the pipeline and the encoder
    alone (random ResNet-18 saved as a local weights file, so ``extract_features`` loads it like
    any encoder); best of ``repeats`` alternating rounds of each."""
    import torch

    from steph.config import load_project
    from steph.extraction.overlap import iter_batches, patch_reader, reader_threads
    from steph.extraction.slide_job import extract_slide
    from steph.fileio import write_csv
    from steph.pipeline.extract import extract_features
    from steph.project import init_project
    from steph.slides import Slide, read_manifest

    root = tmp / "slides_project"
    init_project(root)
    ids = [f"s{i}" for i in range(n_slides)]
    write_csv(
        root / "slides" / "manifest.csv",
        ("slide_id", "patient_id", "cancer", "path", "mpp"),
        [
            (i, f"P{i}", "BRCA", str(make_slide(tmp / f"{i}.tif", side, seed=100 + n)), "")
            for n, i in enumerate(ids)
        ],
    )
    encoder = _resnet18()
    weights = tmp / "resnet18_random.pt"
    torch.save(encoder.model.state_dict(), weights)
    overrides = {
        "encoder": "timm:resnet18",
        "extract.weights": {"timm:resnet18": str(weights)},
        "extract.batch_size": BATCH,
        "extract.device": "cpu",
        "extract.precision": "fp32",
    }
    layout, config = load_project(root, overrides)
    entries = read_manifest(layout)
    sequential_dir = tmp / "sequential"
    sequential_dir.mkdir()
    encoder.encode(np.zeros((2, 256, 256, 3), np.uint8))  # warm-up
    rates: dict[str, list[float]] = {"sequential": [], "pipeline": [], "encoder": []}
    gaps = {"sequential": _Gaps(), "pipeline": _Gaps()}
    patches = 0
    for _ in range(repeats):
        seconds = 0.0
        patches = 0
        gaps["sequential"].new_run()
        for entry in entries:
            outcome = extract_slide(
                entry,
                encoder=encoder,
                config=config.extract,
                output=sequential_dir / f"{entry.slide_id}.h5",
                thumbnail=sequential_dir / f"{entry.slide_id}.png",
                progress=gaps["sequential"],
            )
            seconds += outcome.seconds
            patches += outcome.n_patches
        rates["sequential"].append(patches / seconds)

        gaps["pipeline"].new_run()
        report = extract_features(layout, config, overwrite=True, progress=gaps["pipeline"])
        assert report.outputs["patches"] == patches, report.outputs
        rates["pipeline"].append(float(report.outputs["patches_per_s"]))

        batches = []
        for entry in entries:
            with h5py.File(layout.own_features("timm:resnet18", entry.slide_id), "r") as handle:
                coords = handle["coords"][:]
            with Slide(entry.path, slide_id=entry.slide_id) as slide:
                grid = _full_grid(slide, entry.slide_id)
                reader = patch_reader(slide, grid)
                batches += [b for b, _ in iter_batches(reader, coords, batch_size=BATCH, workers=WORKERS)]
        start = time.perf_counter()
        for batch in batches:
            encoder.encode(batch)
        rates["encoder"].append(patches / (time.perf_counter() - start))
        del batches
    best = {k: max(v) for k, v in rates.items()}
    return {
        "slides": n_slides,
        "slide_px": side,
        "patches": patches,
        "reader_threads": reader_threads(config.extract.workers),
        "sequential_patches_per_s": round(best["sequential"], 1),
        "pipeline_patches_per_s": round(best["pipeline"], 1),
        "encoder_patches_per_s": round(best["encoder"], 1),
        "sequential_ratio": round(best["sequential"] / best["encoder"], 3),
        "pipeline_ratio": round(best["pipeline"] / best["encoder"], 3),
        "speedup": round(best["pipeline"] / best["sequential"], 3),
        "encoder_idle_between_slides_s": {  # median over every pair of consecutive slides, all rounds
            k: round(float(np.median(g.gaps)), 3) for k, g in gaps.items()
        },
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }


class _Gaps:
    """A progress sink timing the encoder's idle time between slides: from one slide's last
    batch (``finish("patches")``) to the next slide's first (``start("patches")``, called once
    the slide is prepared)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._finished: float | None = None

    def new_run(self) -> None:
        """The first slide of a run follows no slide."""
        self._finished = None

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        if task == "patches" and self._finished is not None:
            self.gaps.append(time.perf_counter() - self._finished)

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        pass

    def finish(self, task: str) -> None:
        if task == "patches":
            self._finished = time.perf_counter()


def _full_grid(slide: Any, slide_id: str) -> Any:
    """The extraction's geometry (level 0, 256-px reads at 0.5 um/px) over the whole slide."""
    from steph.slides import make_grid

    return make_grid(
        slide_id=slide_id,
        dimensions=slide.dimensions,
        level_downsamples=slide.level_downsamples,
        slide_mpp=0.5,
        target_mpp=0.5,
        patch_size=256,
        tissue=np.ones((8, 8), bool),
        min_tissue_fraction=0.0,
    )


def memory_child(project: str) -> None:
    """Run in a subprocess: extract the project's slides, print resident-memory figures as JSON."""
    from steph.config import load_project
    from steph.extractors import create_encoder
    from steph.pipeline.extract import extract_features

    layout, config = load_project(project, MEMORY_OVERRIDES)
    create_encoder("tiny-cnn").encode(np.zeros((16, 256, 256, 3), np.uint8))  # imports and kernels warm
    before = _status_mb("VmRSS")
    report = extract_features(layout, config)
    print(
        json.dumps(
            {
                "rss_before_mb": before,
                "peak_rss_mb": _status_mb("VmHWM"),
                "patches": report.outputs["patches"],
            }
        )
    )


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def memory(tmp: Path, sides: tuple[int, int]) -> list[dict[str, float]]:
    rows = []
    for side in sides:
        root = tmp / f"mem{side}"
        make_project(root, make_slide(tmp / f"mem{side}.tif", side, seed=side))
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(root)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        figures.update(side_px=side, slide_mb=round(side * side * 3 / 2**20, 1))
        figures["growth_mb"] = round(figures["peak_rss_mb"] - figures["rss_before_mb"], 1)
        rows.append(figures)
    return rows


def foundation(name: str, device: str, *, side: int, batch: int, repeats: int) -> dict[str, Any]:
    """Extraction with the encoder ``name`` built with random weights (its architecture, as for
    UNI2-h: ViT-g/14) on ``device`` (bf16 on CUDA, fp32 on CPU), against the same encoder on the
    same patches in memory; with the encoder's FLOPs per patch (counted on one forward by
    PyTorch's ``FlopCounterMode``) and its achieved rate in both."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from steph.extractors import get_encoder_spec
    from steph.extractors.base import Encoder
    from steph.threads import usable_cpus

    spec = get_encoder_spec(name)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    encoder = Encoder(
        spec, spec.architecture(), device=torch.device(device), dtype=dtype, weights_identity="random"
    )  # type: ignore[misc]
    workers = max(2, min(16, usable_cpus() - 1))
    with FlopCounterMode(display=False) as counter:
        encoder.encode(np.zeros((1, 256, 256, 3), np.uint8))
    per_patch = counter.get_total_flops()
    overrides = {"extract.device": device, "extract.batch_size": batch, "extract.workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        slide = make_slide(Path(tmp) / "slide.tif", side)
        layout, config = make_project(Path(tmp) / "project", slide, overrides=overrides)
        figures = throughput(encoder, layout, config, repeats=repeats, workers=workers, batch=batch)
    for key in ("extract", "preloaded"):
        figures[f"{key}_tflops"] = round(figures[f"{key}_patches_per_s"] * per_patch / 1e12, 2)
    return {
        "encoder": name,
        "device": device,
        "dtype": str(dtype),
        "workers": workers,
        "batch_size": batch,
        "gflop_per_patch": round(per_patch / 1e9, 1),
        **figures,
    }


def run(quick: bool = False, slides_only: bool = False) -> dict[str, Any]:
    """All figures of this benchmark (``quick``: smaller slides; ``slides_only``: the between-slides
    comparison alone)."""
    import torch

    from steph.extractors import create_encoder

    side = 2048 if quick else 8192  # 8192 px: ~770 patches, so per-slide set-up (mask, thumbnail) is small
    sides = (4096, 8192)
    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        n_slides, slides_side = (3, 1536) if quick else (6, 2048)
        slides_figures = slides(tmp, n_slides=n_slides, side=slides_side, repeats=repeats)
        if slides_only:
            return {
                "slides": slides_figures,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            }
        slide = make_slide(tmp / "slide.tif", side)
        layout, config = make_project(tmp / "project", slide)
        results: dict[str, Any] = {
            "slide_px": side,
            "workers": WORKERS,
            "batch_size": BATCH,
            "torch_threads": torch.get_num_threads(),
        }
        results["tiny-cnn"] = throughput(create_encoder("tiny-cnn"), layout, config, repeats=repeats)
        small_layout, small_config = make_project(
            tmp / "small", make_slide(tmp / "small.tif", 1536 if quick else 3072, seed=1)
        )
        results["resnet18"] = throughput(_resnet18(), small_layout, small_config, repeats=repeats)
        results["slides"] = slides_figures
        results["memory"] = memory(tmp, sides)
    results["cpu_count"] = os.cpu_count()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller slides")
    parser.add_argument("--slides-only", action="store_true", help="only the between-slides comparison")
    parser.add_argument(
        "--encoder",
        help="only this encoder, random weights, through extraction and alone (e.g. uni2-h; "
        "timm:resnet18 for a CPU dry run)",
    )
    parser.add_argument("--device", default="cpu", help="device of --encoder (cpu or cuda)")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="patches per batch of --encoder")
    parser.add_argument("--slide-px", type=int, help="side of --encoder's slide (8192; quick 2048)")
    parser.add_argument("--memory-child", metavar="PROJECT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.encoder:
        side = args.slide_px or (2048 if args.quick else 8192)
        result = foundation(args.encoder, args.device, side=side, batch=args.batch_size, repeats=2)
        print(json.dumps(result, indent=2))
        return
    print(json.dumps(run(quick=args.quick, slides_only=args.slides_only), indent=2))


if __name__ == "__main__":
    main()
