"""Evaluation of test-set predictions: per-fold metrics, cross-fold tables, plots and reports.

The stage function is :func:`steph.pipeline.evaluate.evaluate_models`; this package holds its
parts: :mod:`.inputs` (reading and validation), :mod:`.fold` (metrics of one fold),
:mod:`.summary` (across folds and targets, summary.csv), :mod:`.tables` (comparison tables),
:mod:`.groups`, :mod:`.coefficients`, :mod:`.plots` and :mod:`.html_report` (the report).
"""

from __future__ import annotations

from .fold import FoldResult as FoldResult
from .fold import MetricResult as MetricResult
from .fold import evaluate_fold as evaluate_fold
from .fold import metric_names as metric_names
from .fold import survival_at as survival_at
from .inputs import FoldPredictions as FoldPredictions
from .inputs import TrainingSurvival as TrainingSurvival
from .inputs import read_predictions as read_predictions
from .summary import Summary as Summary
from .summary import relative_change as relative_change
from .summary import summarize as summarize
from .summary import summary_rows as summary_rows
from .summary import write_summary as write_summary
from .tables import Table as Table
from .tables import comparison_tables as comparison_tables
from .tables import to_csv as to_csv
from .tables import to_markdown as to_markdown
