"""Fixtures in the formats the paper's data are published in, written outside a project.

A download directory ``<root>/download`` holds, for one multi-project cancer (KIPAN: TCGA-KIRC
and TCGA-KIRP slides):

- UNI2-h-DSS labels ``{dataset}/{dataset}_survival.csv`` (``patient_id, pathology_id, project,
  dataset, t, e``; one row per slide) or TCGA-CDR-style columns (``bcr_patient_barcode,
  slide_barcode, DSS.time, DSS``, times in months);
- split files ``{dataset}/splits_{fold}.csv`` as pandas writes them: an unnamed index column,
  train/test columns padded with ``NA`` (or empty) cells;
- the features in one published layout (:data:`FORMATS`): the STEPH reference's LMDB
  (``{dataset}.lmdb``, ``__keys__`` + pickled ``[1, K, D]`` tensors), MahmoodLab's per-project
  h5 folders (``{project}/{slide}.h5``, ``features [1, K, D]``), TRIDENT ``--saveas pt``
  (NumPy arrays saved with ``torch.save``) and STAMP h5 (``feats``, coords in µm).

:func:`make_published_project` writes a project whose stephctl.yaml points at them through
``paths:`` and ``labels:`` only.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from _cohorts import SMALL_SETTINGS

from steph.project import init_project

CANCER = "KIPAN"
DATASET = "tcga_kipan"
PROJECTS = ("TCGA-KIRC", "TCGA-KIRP")
FORMATS = ("lmdb", "per-project-h5", "trident-pt", "stamp-h5")
FEATURE_TEMPLATES = {
    "lmdb": "{dataset}.lmdb",
    "per-project-h5": "{project}/{slide_id}.h5",
    "trident-pt": "trident/features_uni_v2/{slide_id}.pt",
    "stamp-h5": "stamp/{slide_id}.h5",
}


def cohort(n_patients: int = 12, dim: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """One row per slide: patient, slide, project, t (days), e and the features ``[K, D]``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        pid = f"TCGA-{i:02d}-{1000 + i}"
        t = float(np.round(rng.uniform(30, 3000), 1))
        e = int(i % 3 != 0)
        for j in range(2 if i % 4 == 0 else 1):
            rows.append(
                {
                    "patient_id": pid,
                    "slide_id": f"{pid}-01Z-00-DX{j + 1}",
                    "project": PROJECTS[i % 2],
                    "t": t,
                    "e": e,
                    "features": rng.normal(size=(int(rng.integers(5, 12)), dim)).astype(np.float32),
                }
            )
    return rows


def write_labels(path: Path, rows: list[dict[str, Any]], *, style: str = "uni2-h-dss") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        if style == "tcga-cdr":
            writer.writerow(["bcr_patient_barcode", "type", "slide_barcode", "DSS", "DSS.time"])
            for r in rows:
                writer.writerow([r["patient_id"], "KIRC", r["slide_id"], r["e"], f"{r['t'] / 30.4375:.6f}"])
        else:
            writer.writerow(["patient_id", "pathology_id", "project", "dataset", "t", "e"])
            for r in rows:
                writer.writerow([r["patient_id"], r["slide_id"], r["project"], DATASET, r["t"], r["e"]])


def write_splits(directory: Path, rows: list[dict[str, Any]], *, folds: int = 2, pad: str = "NA") -> None:
    """pandas-style split files: index column, train/test columns padded with ``pad``."""
    patients = list(dict.fromkeys(r["patient_id"] for r in rows))
    for k in range(folds):
        test = patients[k::folds]
        train = [p for p in patients if p not in test]
        with (directory / f"splits_{k}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", "train", "test"])
            for i in range(max(len(train), len(test))):
                writer.writerow([i, train[i] if i < len(train) else pad, test[i] if i < len(test) else pad])


def write_lmdb(path: Path, rows: list[dict[str, Any]], values: dict[str, bytes] | None = None) -> None:
    """The reference's layout: ``__keys__`` = pickled ['<slide>.pt', ...], slide -> pickled [1, K, D]."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"__keys__", pickle.dumps([r["slide_id"] + ".pt" for r in rows]))
        for r in rows:
            value = pickle.dumps(torch.from_numpy(r["features"])[None])
            txn.put(r["slide_id"].encode("utf-8"), (values or {}).get(r["slide_id"], value))
    env.close()


def write_features(download: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "lmdb":
        write_lmdb(download / f"{DATASET}.lmdb", rows)
        return
    for r in rows:
        feats = r["features"]
        if fmt == "per-project-h5":
            path = download / r["project"] / f"{r['slide_id']}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as fh:
                fh.create_dataset("features", data=feats[None])
                fh.create_dataset("coords", data=np.zeros((1, len(feats), 2), dtype=np.int64))
        elif fmt == "trident-pt":
            path = download / "trident" / "features_uni_v2" / f"{r['slide_id']}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(feats, path)
        elif fmt == "stamp-h5":
            path = download / "stamp" / f"{r['slide_id']}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as fh:
                fh.create_dataset("feats", data=feats.astype(np.float16))
                fh.create_dataset(
                    "coords", data=np.arange(len(feats) * 2, dtype=np.float64).reshape(-1, 2) * 112.0
                )
                fh.attrs["extractor"] = "uni2"
                fh.attrs["unit"] = "um"
        else:  # pragma: no cover - programming error
            raise ValueError(fmt)


def make_published_project(
    root: Path,
    fmt: str,
    *,
    labels_style: str = "uni2-h-dss",
    pad: str = "NA",
    n_patients: int = 12,
    dim: int = 8,
) -> tuple[Path, list[dict[str, Any]]]:
    """A project reading a published download through ``paths:`` (and ``labels:``) only."""
    download = root / "download"
    (download / DATASET).mkdir(parents=True, exist_ok=True)
    rows = cohort(n_patients, dim)
    write_labels(download / DATASET / f"{DATASET}_survival.csv", rows, style=labels_style)
    write_splits(download / DATASET, rows, pad=pad)
    write_features(download, rows, fmt)
    layout = init_project(root / "project", cancers=[CANCER], encoder="uni2-h")
    data = yaml.safe_load(layout.config_file.read_text(encoding="utf-8")) or {}
    for section, values in SMALL_SETTINGS.items():
        data.setdefault(section, {}).update(values)
    data["train"].update({"epochs": 1})
    data["paths"] = {
        "labels": str(download / "{dataset}" / "{dataset}_survival.csv"),
        "splits": str(download / "{dataset}" / "splits_{fold}.csv"),
        "features": str(download / FEATURE_TEMPLATES[fmt]),
    }
    if labels_style == "tcga-cdr":
        data["labels"] = {
            "patient": "bcr_patient_barcode",
            "slide": "slide_barcode",
            "time": "DSS.time",
            "event": "DSS",
            "time_unit": "months",
        }
    layout.config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return layout.root, rows
