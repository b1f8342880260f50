"""The standard project directory layout: the ONLY module that knows directory and file names.

Every other module asks a :class:`ProjectLayout` for a path; nothing else joins these names.
Paths are computed, never created here. ``describe()`` returns the tree documented in
``docs/layout.md`` (a test keeps the two equal).

Path templates (``paths:`` in ``stephctl.yaml``) may point labels, splits and features at an
existing UNI2-h-DSS or TRIDENT download; they are Python format strings over ``{cancer}``
(``BRCA``), ``{cancer_lower}`` (``brca``), ``{dataset}`` (``tcga_brca``), ``{fold}``,
``{slide_id}``, ``{encoder}``, and per slide ``{project}`` (the labels' ``project`` column, e.g.
``TCGA-KIRC``, for cancers that span several TCGA projects) and ``{patient_id}``; a relative
result is taken relative to the project root. A features template ending in ``.lmdb`` names one
store per cancer (``{dataset}``), looked up by slide id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, LayoutError

CONFIG_FILE = "stephctl.yaml"
NULL_MODEL = "null.safetensors"
CANCER_SPECIFIC = "cancer-specific"
TIMM_PREFIX = "timm:"
BUNDLE_SUFFIX = ".safetensors"
RECORD_FILE = "meta.json"
"""Name of a run's record (:mod:`steph.records`), written last: its presence marks a model, a
merge fold or a prediction run as finished. A task vector's record is ``fold_<k>.json`` next to
its weights (:meth:`ProjectLayout.task_vector_meta`)."""
MERGE_CONFIG_FILE = "config.yaml"
MERGE_LOG_FILE = "merge.log"
COEFFICIENTS_FILE = "coefficients.csv"
"""STEPH's per-patient mixing coefficients of a merge fold (patient_id, source, w, lambda, selected)."""
PREDICTION_FILES = ("predictions.csv", "survival.csv", "failures.csv", RECORD_FILE)
"""Files of a prediction run; ``meta.json`` (written last) marks it complete."""

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CANCER = re.compile(r"[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*")
_TEMPLATE_FIELDS = (
    "cancer",
    "cancer_lower",
    "dataset",
    "fold",
    "slide_id",
    "encoder",
    "project",
    "patient_id",
)
SLIDE_FIELDS = ("slide_id", "project", "patient_id")
"""Template fields that vary per slide (only ``paths.features`` may use them)."""

LAYOUT_TREE = """\
DIR/stephctl.yaml                       project config: cancers, encoder, model and training settings, path templates
DIR/slides/manifest.csv                 slide_id,patient_id,cancer,path[,mpp]   (path relative to DIR or absolute)
DIR/synthetic/                          cohort.json (spec, oracle C-index), truth.csv (true risk): generated cohorts only
DIR/labels/<CANCER>.csv                 patient_id,slide_id,t,e   (t in days, e 1 = event; `pathology_id` accepted for slide_id; one row per slide)
DIR/splits/<CANCER>/splits_<k>.csv      UNI2-h-DSS format: columns train,test[,val], one patient_id per cell
DIR/splits/<CANCER>/<CANCER>_splits.json   `stephctl splits`: how they were made (folds, seed, strata, labels sha256)
DIR/features/<encoder>/<slide_id>.h5    dataset `features` [N,D] float32, `coords` [N,2] int64 level-0 x,y; provenance attrs
DIR/features/<encoder>/thumbnails/      <slide_id>.png: thumbnail with the kept patch grid drawn on it
DIR/features/<encoder>/failures.csv     slides that failed in the last extract run, with the reason
DIR/features/<encoder>/extract_config.yaml, logs/   resolved config and per-run logs of extract (timm:<m> -> timm-<m>)
DIR/models/null.safetensors (+ .json)   the shared random initialisation theta0 and its sha256
DIR/models/<CANCER>/fold_<k>/           model.safetensors, meta.json (config, theta0 sha256, seed, versions), metrics.json, train.log
DIR/task_vectors/<CANCER>/fold_<k>.safetensors   tau = theta - theta0 (+ .json metadata)
DIR/merged/<TARGET>/<method>/fold_<k>/  what merge learned (weights, meta.json, coefficients.csv), merge.log
DIR/results/<TARGET>/<method>/fold_<k>/ predictions.csv, metrics.json
DIR/results/summary.csv, DIR/reports/   cross-fold tables and plots; reports/<TARGET>/report.html
DIR/reports/<TARGET>/patients/          `stephctl explain`: index.html, <patient_id>/<method>_fold_<k>/ (heatmaps, patches, transfer, GeoJSON, index.html)
DIR/task_vectors/<CANCER>/fold_<k>.json  of an imported source: `imported_from` (bundle, lab's card); merge uses it like a local one
DIR/transfer/targets/<TARGET>.json      `stephctl transfer` per target: zero-shot C-index of every source model and fold (+ <TARGET>.means.npy)
DIR/transfer/                           matrix.csv/.json, pairs.csv, factors.csv/.json, table.md, rare.csv, heatmap.png, factor_<name>.png, report.html
DIR/exports/<name>.safetensors          `stephctl export` / `export-sources` bundles: tensors + JSON model card (docs/sharing.md)
DIR/predictions/<name>/                 `stephctl predict` output: predictions.csv, survival.csv, failures.csv, meta.json
DIR/predictions/<name>/features/<encoder>/   features of new slides extracted with the bundle's encoder, patch size and MPP
DIR/predictions/<name>/patients/<patient_id>/   `predict --explain`: heatmaps, patches, transfer, GeoJSON, index.html
DIR/logs/                               per-run logs of every stage, Slurm job logs
"""


def normalize_cancer(name: str) -> str:
    """``tcga_brca``, ``brca``, ``TCGA-BRCA`` and ``BRCA`` all become ``BRCA``.

    >>> normalize_cancer("tcga_coadread"), normalize_cancer(" brca ")
    ('COADREAD', 'BRCA')
    """
    raw = name.strip()
    upper = raw.upper().replace("_", "-")
    if upper.startswith("TCGA-"):
        upper = upper[len("TCGA-") :]
    if not _CANCER.fullmatch(upper):
        raise LayoutError(
            f"invalid cancer name {name!r}",
            hint="use an upper-case TCGA abbreviation such as BRCA or BLCA (tcga_brca and brca are accepted)",
        )
    return upper


def check_encoder_name(name: str) -> str:
    """Encoder names are safe identifiers, or ``timm:<model>`` with a safe model name."""
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        check_safe_id(name[len(TIMM_PREFIX) :], "timm model name")
        return name
    return check_safe_id(name, "encoder name")


def encoder_dir_name(name: str) -> str:
    """Folder of an encoder under ``features/``: its name, with ``timm:<model>`` as ``timm-<model>``."""
    check_encoder_name(name)
    return "timm-" + name[len(TIMM_PREFIX) :] if name.startswith(TIMM_PREFIX) else name


def check_safe_id(value: str, what: str = "slide_id") -> str:
    """Refuse identifiers that are not safe file names (``/``, ``..``, leading dots, spaces)."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise LayoutError(
            f"{what} {value!r} is not a safe file name",
            hint="use letters, digits, '.', '_' and '-' only, not starting with '.' and without '..' or '/'",
        )
    return value


@dataclass(frozen=True)
class PathTemplates:
    """Optional templates that redirect inputs to an existing download (see module docstring)."""

    labels: str | None = None
    """Template of a cancer's labels CSV (None = labels/<CANCER>.csv)."""
    splits: str | None = None
    """Template of a split file; must contain {fold} (None = splits/<CANCER>/splits_<k>.csv)."""
    features: str | None = None
    """Template of a slide's feature file, or of a cancer's store; the suffix picks the reader:
    .h5/.hdf5, .pt/.pth, .npy, or .lmdb (one store per cancer, keyed by slide id; see
    docs/reproduce.md). None = features/<encoder>/<slide_id>.h5."""

    def __post_init__(self) -> None:
        if self.splits is not None and "{fold}" not in self.splits:
            raise ConfigError(f"paths.splits must contain {{fold}}: {self.splits!r}")
        for name in ("labels", "splits", "features"):
            template = getattr(self, name)
            if template is None:
                continue
            for found in re.findall(r"{([^}]*)}", template):
                if found in SLIDE_FIELDS and name != "features":
                    raise ConfigError(
                        f"paths.{name}: {{{found}}} varies per slide and is only known for paths.features",
                        hint="labels and splits are per cancer: use {cancer}, {cancer_lower}, {dataset}"
                        + (", {fold}" if name == "splits" else ""),
                    )
                if found not in _TEMPLATE_FIELDS:
                    raise ConfigError(
                        f"paths.{name}: unknown template field {{{found}}} in {template!r}",
                        hint="available fields: " + ", ".join("{" + f + "}" for f in _TEMPLATE_FIELDS),
                    )


@dataclass(frozen=True)
class ProjectLayout:
    """Locations of every artifact of a project rooted at ``root``."""

    root: Path
    templates: PathTemplates = field(default_factory=PathTemplates)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    # -- templates ----------------------------------------------------------------------------
    def _fill(self, template: str, **values: object) -> Path:
        cancer = values.get("cancer")
        fields: dict[str, object] = dict.fromkeys(_TEMPLATE_FIELDS, "")
        if isinstance(cancer, str):
            fields.update(cancer_lower=cancer.lower(), dataset=f"tcga_{cancer.lower()}")
        fields.update({k: v for k, v in values.items() if v is not None})
        path = Path(template.format_map(fields)).expanduser()
        return path if path.is_absolute() else self.root / path

    # -- project ------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def slides_dir(self) -> Path:
        return self.root / "slides"

    @property
    def manifest(self) -> Path:
        return self.slides_dir / "manifest.csv"

    def synthetic_slide(self, cancer: str, slide_id: str) -> Path:
        """Where the cohort generator writes a synthetic slide (``slides/<CANCER>/<slide_id>.svs``)."""
        return self.slides_dir / cancer / f"{check_safe_id(slide_id)}.svs"

    @property
    def synthetic_dir(self) -> Path:
        """Ground truth of a generated cohort (``stephctl demo``, benchmarks/transfer.py)."""
        return self.root / "synthetic"

    @property
    def synthetic_spec(self) -> Path:
        return self.synthetic_dir / "cohort.json"

    @property
    def synthetic_truth(self) -> Path:
        return self.synthetic_dir / "truth.csv"

    def slide_path(self, path_in_manifest: str) -> Path:
        """Resolve a manifest ``path`` cell (relative to the project root, or absolute)."""
        path = Path(path_in_manifest).expanduser()
        return path if path.is_absolute() else self.root / path

    # -- labels and splits --------------------------------------------------------------------
    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    def labels(self, cancer: str) -> Path:
        if self.templates.labels:
            return self._fill(self.templates.labels, cancer=cancer)
        return self.labels_dir / f"{cancer}.csv"

    @property
    def splits_root(self) -> Path:
        return self.root / "splits"

    def splits_dir(self, cancer: str) -> Path:
        if self.templates.splits:
            return self._fill(self.templates.splits, cancer=cancer, fold=0).parent
        return self.splits_root / cancer

    def split(self, cancer: str, fold: int) -> Path:
        if self.templates.splits:
            return self._fill(self.templates.splits, cancer=cancer, fold=fold)
        return self.splits_dir(cancer) / f"splits_{fold}.csv"

    def splits_record(self, cancer: str) -> Path:
        """How ``stephctl splits`` made the cancer's split files (beside them)."""
        return self.splits_dir(cancer) / f"{cancer}_splits.json"

    def split_folds(self, cancer: str) -> list[int]:
        """Fold numbers for which a split file exists (sorted)."""
        folds: list[int] = []
        for k in range(100):
            if self.split(cancer, k).is_file():
                folds.append(k)
            elif folds:
                break
        return folds

    # -- features -----------------------------------------------------------------------------
    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def features_dir(self, encoder: str) -> Path:
        return self.features_root / encoder_dir_name(encoder)

    def features(
        self,
        encoder: str,
        slide_id: str,
        *,
        cancer: str | None = None,
        project: str | None = None,
        patient_id: str | None = None,
    ) -> Path:
        """Feature file of a slide (or the store holding it): our layout, or the
        ``paths.features`` template when set."""
        check_safe_id(slide_id)
        if project is not None:
            check_safe_id(project, "project")
        if self.templates.features:
            return self._fill(
                self.templates.features,
                encoder=encoder,
                slide_id=slide_id,
                cancer=cancer,
                project=project,
                patient_id=patient_id,
            )
        return self.features_dir(encoder) / f"{slide_id}.h5"

    def features_fields(self) -> set[str]:
        """Fields the ``paths.features`` template uses (empty for our own layout)."""
        return set(re.findall(r"{([^}]*)}", self.templates.features or ""))

    def own_features(self, encoder: str, slide_id: str) -> Path:
        """Where ``extract`` writes a slide's features (never redirected by templates)."""
        return self.features_dir(encoder) / f"{check_safe_id(slide_id)}.h5"

    def thumbnail(self, encoder: str, slide_id: str) -> Path:
        return self.features_dir(encoder) / "thumbnails" / f"{check_safe_id(slide_id)}.png"

    def own_feature_files(self, encoder: str) -> list[Path]:
        """Feature files ``extract`` wrote for ``encoder`` (sorted; templates not followed)."""
        base = self.features_dir(encoder)
        return sorted(base.glob("*.h5")) if base.is_dir() else []

    def extract_failures(self, encoder: str) -> Path:
        return self.features_dir(encoder) / "failures.csv"

    def extract_config(self, encoder: str) -> Path:
        return self.features_dir(encoder) / "extract_config.yaml"

    def extract_log(self, encoder: str, stamp: str) -> Path:
        """Per-run log of ``stephctl extract`` (``stamp`` = time and shard of the run)."""
        return self.features_dir(encoder) / "logs" / f"extract-{check_safe_id(stamp, 'log stamp')}.log"

    # -- models -------------------------------------------------------------------------------
    @property
    def models_root(self) -> Path:
        return self.root / "models"

    @property
    def theta0(self) -> Path:
        return self.models_root / NULL_MODEL

    @property
    def theta0_meta(self) -> Path:
        return self.theta0.with_suffix(".json")

    def model_dir(self, cancer: str, fold: int) -> Path:
        return self.models_root / cancer / f"fold_{int(fold)}"

    def model_weights(self, cancer: str, fold: int) -> Path:
        return self.model_dir(cancer, fold) / "model.safetensors"

    def model_meta(self, cancer: str, fold: int) -> Path:
        """The model's record (:class:`steph.records.ModelRecord`)."""
        return self.model_dir(cancer, fold) / RECORD_FILE

    def model_metrics(self, cancer: str, fold: int) -> Path:
        return self.model_dir(cancer, fold) / "metrics.json"

    def model_log(self, cancer: str, fold: int) -> Path:
        return self.model_dir(cancer, fold) / "train.log"

    def model_config(self, cancer: str, fold: int) -> Path:
        return self.model_dir(cancer, fold) / "config.yaml"

    # -- task vectors -------------------------------------------------------------------------
    @property
    def task_vectors_root(self) -> Path:
        return self.root / "task_vectors"

    def task_vector(self, cancer: str, fold: int) -> Path:
        return self.task_vectors_root / cancer / f"fold_{int(fold)}.safetensors"

    def task_vector_meta(self, cancer: str, fold: int) -> Path:
        """The task vector's record (:class:`steph.records.TaskVectorRecord`)."""
        return self.task_vector(cancer, fold).with_suffix(".json")

    # -- transferability study (stephctl transfer) -------------------------------------------
    @property
    def transfer_root(self) -> Path:
        return self.root / "transfer"

    def transfer_target(self, target: str) -> Path:
        """One target's zero-shot results (:class:`steph.records.TransferRecord`), written last."""
        return self.transfer_root / "targets" / f"{normalize_cancer(target)}.json"

    def transfer_means(self, target: str) -> Path:
        """Patient-mean features ``[n, D]`` of the target's patients (float32 ``.npy``)."""
        return self.transfer_root / "targets" / f"{normalize_cancer(target)}.means.npy"

    def transfer_targets(self) -> list[str]:
        """Targets with a finished zero-shot record."""
        base = self.transfer_root / "targets"
        if not base.is_dir():
            return []
        return sorted(p.stem for p in base.glob("*.json") if _CANCER.fullmatch(p.stem))

    def transfer_file(self, name: str) -> Path:
        """A study-wide output (``matrix.csv``, ``factors.json``, ``report.html``, ...)."""
        return self.transfer_root / check_safe_id(name, "transfer output")

    def transfer_factor_plot(self, factor: str) -> Path:
        return self.transfer_root / f"factor_{check_safe_id(factor, 'factor')}.png"

    # -- merged models ------------------------------------------------------------------------
    @property
    def merged_root(self) -> Path:
        return self.root / "merged"

    def merged_dir(self, target: str, method: str, fold: int) -> Path:
        return self.merged_root / target / check_safe_id(method, "method name") / f"fold_{int(fold)}"

    def merged_runs(self, target: str) -> list[str]:
        """Run folders under ``merged/<target>/`` (sorted)."""
        base = self.merged_root / target
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def merged_folds(self, target: str, method: str) -> list[int]:
        """Fold numbers of a run's ``merged/<target>/<run>/fold_<k>/`` folders (sorted)."""
        base = self.merged_root / target / check_safe_id(method, "method name")
        if not base.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in base.glob("fold_*") if p.name[5:].isdigit())

    def merged_file(self, target: str, method: str, fold: int, name: str) -> Path:
        """A file inside a merge output folder (``hypernet.safetensors``, ``meta.json`` ...)."""
        return self.merged_dir(target, method, fold) / check_safe_id(name, "file name")

    def merged_coefficients(self, target: str, method: str, fold: int) -> Path:
        """STEPH's per-patient mixing coefficients of a merge fold (``coefficients.csv``)."""
        return self.merged_file(target, method, fold, COEFFICIENTS_FILE)

    def merged_meta(self, target: str, method: str, fold: int) -> Path:
        """The merge fold's record (:class:`steph.records.MergeRecord`), written last."""
        return self.merged_file(target, method, fold, RECORD_FILE)

    def merged_config(self, target: str, method: str, fold: int) -> Path:
        """The resolved configuration the merge fold ran with."""
        return self.merged_file(target, method, fold, MERGE_CONFIG_FILE)

    def merged_log(self, target: str, method: str, fold: int) -> Path:
        return self.merged_file(target, method, fold, MERGE_LOG_FILE)

    # -- results and reports ------------------------------------------------------------------
    @property
    def results_root(self) -> Path:
        return self.root / "results"

    def results_dir(self, target: str, method: str, fold: int) -> Path:
        return self.results_root / target / check_safe_id(method, "method name") / f"fold_{int(fold)}"

    def predictions(self, target: str, method: str, fold: int) -> Path:
        return self.results_dir(target, method, fold) / "predictions.csv"

    def result_metrics(self, target: str, method: str, fold: int) -> Path:
        return self.results_dir(target, method, fold) / "metrics.json"

    def result_record(self, target: str, method: str, fold: int) -> Path:
        """The record (``meta.json``) whose presence marks a result as finished: the trained
        model's for ``cancer-specific``, the merge run's otherwise. Readers take a fold's
        predictions only when it exists."""
        if method == CANCER_SPECIFIC:
            return self.model_meta(target, fold)
        return self.merged_meta(target, method, fold)

    def result_methods(self, target: str) -> list[str]:
        base = self.results_root / target
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def result_folds(self, target: str, method: str) -> list[int]:
        base = self.results_root / target / method
        if not base.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in base.glob("fold_*") if p.name[5:].isdigit())

    def result_targets(self) -> list[str]:
        base = self.results_root
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    @property
    def summary(self) -> Path:
        return self.results_root / "summary.csv"

    @property
    def reports_root(self) -> Path:
        return self.root / "reports"

    def report_dir(self, target: str) -> Path:
        return self.reports_root / target

    def report_file(self, target: str, name: str) -> Path:
        return self.report_dir(target) / check_safe_id(name, "file name")

    def patients_dir(self, target: str) -> Path:
        """Per-patient explanation pages of a target (``stephctl explain``)."""
        return self.report_dir(target) / "patients"

    def patients_index(self, target: str) -> Path:
        return self.patients_dir(target) / "index.html"

    def patient_dir(self, target: str, patient_id: str, method: str, fold: int) -> Path:
        """One patient's explanation by one model: ``patients/<patient_id>/<method>_fold_<k>/``."""
        run = f"{check_safe_id(method, 'method name')}_fold_{int(fold)}"
        return self.patients_dir(target) / check_safe_id(patient_id, "patient_id") / run

    def patient_page(self, target: str, patient_id: str, method: str, fold: int) -> Path:
        return self.patient_dir(target, patient_id, method, fold) / "index.html"

    def patient_record(self, target: str, patient_id: str, method: str, fold: int) -> Path:
        """What an explanation was made from (inputs and files), to skip it when nothing changed."""
        return self.patient_dir(target, patient_id, method, fold) / "explain.json"

    def patient_pages(self, target: str) -> list[Path]:
        """Every patient page of ``target`` (sorted)."""
        base = self.patients_dir(target)
        return sorted(base.glob("*/*_fold_*/index.html")) if base.is_dir() else []

    @property
    def predict_root(self) -> Path:
        return self.root / "predictions"

    def predict_dir(self, name: str) -> Path:
        return self.predict_root / check_safe_id(name, "prediction run name")

    def predict_file(self, name: str, file: str) -> Path:
        """A file of a ``stephctl predict`` run (``predictions.csv``, ``survival.csv`` ...)."""
        return self.predict_dir(name) / check_safe_id(file, "file name")

    # -- bundles ------------------------------------------------------------------------------
    @property
    def exports_root(self) -> Path:
        return self.root / "exports"

    def export_file(self, name: str) -> Path:
        """Default output of ``stephctl export`` / ``export-sources`` (``<name>.safetensors``)."""
        return self.exports_root / f"{check_safe_id(name, 'bundle name')}{BUNDLE_SUFFIX}"

    def model_bundle(self, target: str, method: str, fold: int | None) -> Path:
        """Default ``stephctl export`` file: ``<TARGET>-<method>-fold_<k>`` (``-all-folds`` for None)."""
        return self.export_file(
            f"{target}-{method}-" + ("all-folds" if fold is None else f"fold_{int(fold)}")
        )

    def sources_bundle(self, cancers: list[str]) -> Path:
        """Default ``stephctl export-sources`` file: ``sources-<C1>-<C2>...``."""
        return self.export_file("sources-" + "-".join(cancers))

    def task_vector_folds(self, cancer: str) -> list[int]:
        """Folds of ``cancer`` with a finished task vector (its record written)."""
        base = self.task_vectors_root / cancer
        if not base.is_dir():
            return []
        return sorted(int(p.stem[5:]) for p in base.glob("fold_*.json") if p.stem[5:].isdigit())

    def task_vector_cancers(self) -> list[str]:
        """Cancers with a folder under ``task_vectors/`` (local or imported)."""
        base = self.task_vectors_root
        return (
            sorted(p.name for p in base.iterdir() if p.is_dir() and _CANCER.fullmatch(p.name))
            if base.is_dir()
            else []
        )

    # -- logs ---------------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def stage_log(self, stage: str, stamp: str) -> Path:
        return self.logs_dir / f"{check_safe_id(stage, 'stage')}-{stamp}.log"

    def slurm_log(self, stage: str) -> Path:
        """Log of one Slurm array task (``%A`` = array job id, ``%a`` = task index, filled by Slurm)."""
        return self.logs_dir / "slurm" / f"{check_safe_id(stage, 'stage')}-%A_%a.log"

    def slurm_script(self, stage: str, stamp: str) -> Path:
        """Copy of a job script submitted by ``stephctl slurm --submit``."""
        return self.logs_dir / "slurm" / f"{check_safe_id(stage, 'stage')}-{stamp}.sbatch"

    # -- discovery ----------------------------------------------------------------------------
    def label_cancers(self) -> list[str]:
        """Cancers that have a labels file in ``labels/`` (our layout only)."""
        if not self.labels_dir.is_dir():
            return []
        return sorted(p.stem for p in self.labels_dir.glob("*.csv") if _CANCER.fullmatch(p.stem))

    def model_folds(self, cancer: str) -> list[int]:
        base = self.models_root / cancer
        if not base.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in base.glob("fold_*") if p.name[5:].isdigit())

    def describe(self) -> str:
        """The layout as the text tree of docs/layout.md."""
        return LAYOUT_TREE

    def directories(self) -> list[Path]:
        """Top-level folders ``stephctl init`` creates."""
        return [
            self.slides_dir,
            self.labels_dir,
            self.splits_root,
            self.features_root,
            self.models_root,
            self.task_vectors_root,
            self.merged_root,
            self.results_root,
            self.reports_root,
            self.logs_dir,
        ]


@dataclass(frozen=True)
class PredictionLayout:
    """Files of one ``stephctl predict`` run at ``root`` (``predictions/<name>/`` or ``--out``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    def file(self, name: str) -> Path:
        if name not in PREDICTION_FILES:
            raise ValueError(f"not a prediction file: {name!r}")
        return self.root / name

    @property
    def meta(self) -> Path:
        """The run's record (:class:`steph.records.PredictionRecord`), written last."""
        return self.file(RECORD_FILE)

    def features(self, encoder: str, slide_id: str) -> Path:
        """Features of a new slide, extracted by predict with the model's encoder and settings."""
        return self.root / "features" / encoder_dir_name(encoder) / f"{check_safe_id(slide_id)}.h5"

    def patient_dir(self, patient_id: str) -> Path:
        """One predicted patient's explanation pages (``predict --explain``)."""
        return self.root / "patients" / check_safe_id(patient_id, "patient_id")

    def patient_page(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "index.html"

    def thumbnail(self, encoder: str, slide_id: str) -> Path:
        return (
            self.root
            / "features"
            / encoder_dir_name(encoder)
            / "thumbnails"
            / f"{check_safe_id(slide_id)}.png"
        )


def layout_from(
    root: Path | str, paths: Mapping[str, str | None] | PathTemplates | None = None
) -> ProjectLayout:
    templates = paths if isinstance(paths, PathTemplates) else PathTemplates(**dict(paths or {}))
    return ProjectLayout(Path(root), templates)
