"""``stephctl predict``: risk for new, unlabelled patients from a bundle or a project model.

Its own package because it joins three others: it loads bundles (:mod:`steph.bundles`), runs
predictors (:mod:`steph.evaluation.predictors`) and draws explain pages (:mod:`steph.explain`);
none of them imports it.

- :mod:`~steph.predict.run`: :func:`predict_patients`, the stage behind ``stephctl predict``;
- :mod:`~steph.predict.inputs`: who to predict (a manifest, or slide files one by one);
- :mod:`~steph.predict.features`: features reused when made the model's way, else extracted;
- :mod:`~steph.predict.explain`: ``--explain``, each patient's explain pages.
"""

from __future__ import annotations

from .run import PatientCase, predict_patients, read_manifest

__all__ = ["PatientCase", "predict_patients", "read_manifest"]
