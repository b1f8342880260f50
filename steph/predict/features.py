"""Features of new slides for a model: reused when made the model's way, else extracted the same way.

A slide's features are taken, in order, from

1. the project's feature file (``features/<encoder>/<slide_id>.h5`` or the ``paths.features``
   template) when its attributes show the model's encoder, weights, patch size, MPP and tissue
   fraction and, when the row gives a slide path, were made from that very file as it is now
   (recorded resolved path, size and modification time: a different image under the same name,
   or a file of a version that did not record them, is extracted again); any file when the row
   gives no slide path (then they are the user's features).
   A template's ``{project}`` (and ``{cancer}``) of a slide come from the project's labels, as in
   training (:func:`template_fields`); ``{patient_id}`` is the manifest's patient;
2. the prediction run's own ``features/<encoder>/<slide_id>.h5`` from an earlier run (same checks);
3. extraction from the slide file with the model's encoder and extraction settings
   (:func:`steph.extraction.slide_job.extract_slide`, the code ``stephctl extract`` runs), into 2.

The encoder is built once, on the first slide that needs it. When its weights are not available
locally (or are not the file the model was trained with) every slide that needs extraction fails
with an error naming the file to provide; slides with features are still predicted.

As in ``stephctl extract``, while a slide encodes, the next slide that will be extracted (the
first of the ``upcoming`` slides given to :meth:`FeatureMaker.features` that has no usable
features) is prepared in a background thread (:class:`~steph.extraction.ahead.SlidesAhead`:
open, MPP, tissue mask, grid, thumbnail, first patch batches); its lock is still taken in its
turn, and a failed preparation fails that slide alone, when its turn comes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config.project import project_cancers
from ..data.stores import store_for
from ..errors import DataError, EncoderUnavailableError, MissingArtifactError, StephError
from ..extraction.h5format import is_complete, made_from, read_attrs, remove_stale_temps
from ..locks import hold
from ..progress import NULL_PROGRESS, Progress
from .inputs import SlideInput

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..config.extract import ExtractConfig
    from ..evaluation.predictors import LoadedModel
    from ..extraction.ahead import SlidesAhead
    from ..extractors import Encoder
    from ..layout import PredictionLayout, ProjectLayout
    from ..slides.manifest import SlideEntry

log = logging.getLogger(__name__)

_SHA = re.compile(r"^sha256:([0-9a-f]{64}) \((.*)\)$")
_CANCER_FIELDS = {"cancer", "cancer_lower", "dataset"}


@dataclass(frozen=True)
class SlideFields:
    """Per-slide values of the ``paths.features`` template taken from the project's labels."""

    cancer: str
    project: str | None


def template_fields(
    layout: ProjectLayout, config: ProjectConfig, slide_ids: Collection[str], target: str | None = None
) -> dict[str, SlideFields]:
    """The cancer and project of each of ``slide_ids`` found in the project's labels (``target``'s
    first, then every cancer's), read only when the features template uses those fields.

    A labels file that cannot be read is logged and skipped: its cancer's slides then have no
    fields (their own error says so); the other slides are still predicted.
    """
    if not layout.features_fields() & (_CANCER_FIELDS | {"project"}):
        return {}
    from ..data import load_cohort

    wanted = set(slide_ids)
    found: dict[str, SlideFields] = {}
    cancers = list(dict.fromkeys([*([target] if target else []), *project_cancers(layout, config)]))
    for cancer in cancers:
        if not wanted - found.keys():
            break
        try:
            cohort = load_cohort(layout, config, cancer)
        except StephError as exc:
            log.warning("%s labels skipped for the features template: %s", cancer, exc)
            continue
        for patient in cohort.patients.values():
            projects = patient.projects or ("",) * len(patient.slide_ids)
            for sid, project in zip(patient.slide_ids, projects, strict=True):
                if sid in wanted and sid not in found:
                    found[sid] = SlideFields(cancer, project or None)
    return found


class FeatureMaker:
    """Finds or makes the feature file of each slide for one model. Use it as a context manager:
    leaving it closes a slide prepared ahead and not taken."""

    def __init__(
        self,
        layout: ProjectLayout,
        run: PredictionLayout,
        model: LoadedModel,
        *,
        mpp: float | None = None,
        device: torch.device,
        progress: Progress = NULL_PROGRESS,
        fields: Mapping[str, SlideFields] | None = None,
        cancer: str | None = None,
        allow_download: bool = False,
    ) -> None:
        self.layout, self.run, self.model = layout, run, model
        self.mpp, self.device, self.progress = mpp, device, progress
        self.fields, self.cancer = dict(fields or {}), cancer
        """Template fields per slide (:func:`template_fields`); ``cancer`` for slides without."""
        self.allow_download = allow_download
        """Whether the encoder's weights may come from the hub (``predict --allow-download``)."""
        self._encoder: Encoder | None = None
        self._encoder_error: EncoderUnavailableError | None = None
        self._ahead: SlidesAhead | None = None
        self.extracted = 0

    def __enter__(self) -> FeatureMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop preparing ahead (a slide prepared and not taken is closed)."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def features(
        self,
        slide: SlideInput,
        patient_id: str | None = None,
        *,
        upcoming: Iterable[tuple[SlideInput, str | None]] = (),
    ) -> Path:
        """The feature file of ``slide`` of ``patient_id`` (see the module docstring). When it is
        extracted, the first of ``upcoming`` (slides and their patients, in the order they will
        be asked for) that will be extracted too is prepared in the background meanwhile.

        Raises:
            MissingArtifactError: no features and no slide file (or a ``{project}`` template and
                no labels row giving the slide's project).
            EncoderUnavailableError: extraction needed but the encoder weights are not available.
            SlideError: the slide cannot be extracted (no MPP, no tissue, unreadable ...).
        """
        path, extract = self._locate(slide, patient_id)
        return self._extract(slide, path, upcoming) if extract else path

    def _locate(self, slide: SlideInput, patient_id: str | None) -> tuple[Path, bool]:
        """``(features, False)`` where usable features exist, else ``(file to extract into, True)``;
        raises as :meth:`features`."""
        encoder = self.model.encoder
        known = self.fields.get(slide.slide_id)
        if "project" in self.layout.features_fields() and (known is None or known.project is None):
            if slide.path is None:
                raise MissingArtifactError(
                    f"slide {slide.slide_id}: paths.features uses {{project}} but no labels file with a "
                    "project column lists this slide",
                    hint="add the slide's row (with its project) to its cancer's labels, or give the "
                    "slide path in the manifest so predict extracts it",
                )
            project = None
        else:
            project = self.layout.features(
                encoder,
                slide.slide_id,
                cancer=known.cancer if known else self.cancer,
                project=known.project if known else None,
                patient_id=patient_id,
            )
        if project is not None and slide.path is None and store_for(project).keyed:
            raise DataError(
                f"slide {slide.slide_id}: predict does not read keyed feature stores yet ({project})",
                hint="give the slide path in the manifest so predict extracts it, or point paths.features "
                "at per-slide files (h5, pt, npy)",
            )
        if (
            project is not None
            and project.is_file()
            and (slide.path is None or self._made_our_way(project, slide))
        ):
            return project, False
        if slide.path is None:
            raise MissingArtifactError(
                f"slide {slide.slide_id}: no features at {project} and no slide path",
                hint="add a path column to the manifest (predict then extracts the slide), or run "
                f"`stephctl -p {self.layout.root} extract` first",
            )
        own = self.run.features(encoder, slide.slide_id)
        return own, not (is_complete(own) and self._made_our_way(own, slide))

    def _made_our_way(self, path: Path, slide: SlideInput) -> bool:
        """Made from ``slide``'s file as it is now (path, size, mtime) the model's way."""
        if path.suffix != ".h5":
            return False
        try:
            attrs = read_attrs(path)
        except OSError:
            return False
        spec = self.model.extraction
        wanted = {
            "encoder": self.model.encoder,
            "patch_size": spec.patch_size,
            "target_mpp": spec.target_mpp,
            "min_tissue_fraction": spec.min_tissue_fraction,
        }
        if self.model.encoder_weights is not None:
            wanted["encoder_weights"] = self.model.encoder_weights
        if spec.precision != "auto":
            wanted["precision"] = spec.precision
        same = all(attrs.get(k) == v for k, v in wanted.items())
        return same and (slide.path is None or made_from(attrs, slide.path))

    def _extract(
        self, slide: SlideInput, output: Path, upcoming: Iterable[tuple[SlideInput, str | None]] = ()
    ) -> Path:
        from ..extraction.slide_job import encode_slide

        encoder = self.encoder()
        config = self._extraction()
        output.parent.mkdir(parents=True, exist_ok=True)
        with hold(output, what=f"slide {slide.slide_id}"):
            remove_stale_temps(output)
            start = time.perf_counter()
            ahead = self._slides_ahead(config)
            try:
                prepared = ahead.take(_entry(slide), self.run.thumbnail(self.model.encoder, slide.slide_id))
            finally:
                self._prepare_next(ahead, upcoming)  # a failed slide still lets the next one start
            outcome = encode_slide(
                prepared, encoder=encoder, config=config, output=output, progress=self.progress, start=start
            )
        self.extracted += 1
        log.info("slide %s: %s", slide.slide_id, outcome.describe())
        return output

    def _extraction(self) -> ExtractConfig:
        """The model's extraction settings, with the run's MPP override."""
        return self.model.extraction if self.mpp is None else replace(self.model.extraction, mpp=self.mpp)

    def _slides_ahead(self, config: ExtractConfig) -> SlidesAhead:
        if self._ahead is None:
            from ..extraction.ahead import SlidesAhead

            self._ahead = SlidesAhead(config)
        return self._ahead

    def _prepare_next(self, ahead: SlidesAhead, upcoming: Iterable[tuple[SlideInput, str | None]]) -> None:
        """Start preparing the first of ``upcoming`` that will be extracted; slides with features,
        or that will fail before extraction (no slide path, no labels row), are passed over."""
        for slide, patient_id in upcoming:
            try:
                _, extract = self._locate(slide, patient_id)
            except StephError:
                continue  # fails in its turn
            if extract:
                if ahead.pending != slide.slide_id:
                    ahead.start(_entry(slide), self.run.thumbnail(self.model.encoder, slide.slide_id))
                return

    def encoder(self) -> Encoder:
        """The model's encoder with its weights, built once (a failure is remembered)."""
        if self._encoder_error is not None:
            raise self._encoder_error
        if self._encoder is None:
            try:
                self._encoder = self._build()
            except EncoderUnavailableError as exc:
                self._encoder_error = exc
                raise
        return self._encoder

    def _build(self) -> Encoder:
        name, wanted, file = self.model.encoder, self.model.encoder_weights, self.model.encoder_weights_file
        match = _SHA.match(wanted or "")
        if match and file is None:
            raise EncoderUnavailableError(
                f"encoder {name!r}: the model was trained with weights file {match.group(2)} "
                f"(sha256 {match.group(1)[:12]}...), which is not available locally",
                hint=f"provide that file: `stephctl predict --encoder-weights /path/to/{match.group(2)}`",
            )
        encoder = self._create(name, file)
        if wanted is not None and encoder.weights_identity != wanted:
            shown = match.group(2) if match else wanted
            raise EncoderUnavailableError(
                f"encoder {name!r}: weights {encoder.weights_identity} are not the ones the model was trained "
                f"with ({wanted})",
                hint=f"provide the original file: `stephctl predict --encoder-weights /path/to/{shown}`",
            )
        return encoder

    def _create(self, name: str, file: Path | None) -> Encoder:
        """The encoder; without ``allow_download`` its weights come only from a local file."""
        from ..extractors import create_encoder
        from ..extractors.weights import hub_blocked

        precision = self.model.extraction.precision
        if self.allow_download or file is not None:
            return create_encoder(name, weights=file, device=self.device, precision=precision)
        try:
            with hub_blocked("predict downloads nothing unless --allow-download is given"):
                return create_encoder(name, weights=None, device=self.device, precision=precision)
        except EncoderUnavailableError as exc:
            raise EncoderUnavailableError(
                f"encoder {name!r}: its weights ({self.model.encoder_weights}) are not available locally and "
                "predict downloads nothing unless asked",
                hint=f"provide the file: `stephctl predict --encoder-weights /path/to/{name.replace(':', '-')}"
                "-weights` (a .safetensors/.bin/.pth state dict), or pass --allow-download to fetch them "
                "from the model hub",
            ) from exc


def _entry(slide: SlideInput) -> SlideEntry:
    """The manifest entry extraction takes for a slide of a prediction."""
    from ..slides.manifest import SlideEntry

    return SlideEntry(slide.slide_id, "", "", slide.path or Path(), slide.mpp, 0)


def read_bag(paths: list[Path], dim: int, patient_id: str, *, max_patches: int) -> torch.Tensor:
    """The patient's bag ``[K, D]`` from its slides' feature files, checked against ``D``.

    Each file's ``(K, D)`` is read from its header first (HDF5, ``.npy``, LMDB; a ``.pt`` file
    has none and is bounded by its size): a file whose ``D`` is not the model's, or that declares
    more than ``max_patches`` patches, is refused before its values are read.

    Raises:
        DataError: another feature dimension, too many or no patches, or NaN/inf values.
    """
    from ..data import feature_shape, read_features

    for path in paths:
        k, d = feature_shape(path)
        if d != dim:
            raise DataError(
                f"patient {patient_id}: {path} has features of D={d}, the model takes D={dim}",
                hint="extract the slides with the model's encoder (give the slide path so predict does it)",
            )
        if k > max_patches:
            raise DataError(
                f"patient {patient_id}: {path} declares {k:,} patches, more than max_patches ({max_patches:,})",
                hint="a crafted or broken file, or a slide larger than any expected: raise max_patches "
                "in stephctl.yaml (or pass --max-patches) if the slide is genuine",
            )
    parts = [read_features(p) for p in paths]
    bag = parts[0] if len(parts) == 1 else torch.cat(parts)
    if bag.shape[0] == 0 or not bool(torch.isfinite(bag).all()):
        raise DataError(
            f"patient {patient_id}: no patches or non-finite features in {', '.join(map(str, paths))}",
            hint="re-extract the slides (delete the feature files)",
        )
    return bag
