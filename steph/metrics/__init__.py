"""Survival metrics: Harrell's and Uno's C-index, time-dependent AUC, integrated Brier score,
Kaplan-Meier, the log-rank test and a seeded bootstrap.

Every metric follows scikit-survival's conventions (checked in the tests against
scikit-survival, torchsurv and lifelines) and is a
:class:`~steph.metrics.statistic.Statistic`, so the estimate and its bootstrap replicates come
from one formula.
"""

from __future__ import annotations

from .auc import cumulative_dynamic_auc as cumulative_dynamic_auc
from .bootstrap import Interval as Interval
from .bootstrap import percentile_interval as percentile_interval
from .bootstrap import resample_counts as resample_counts
from .bootstrap import stable_seed as stable_seed
from .brier import brier_contributions as brier_contributions
from .brier import ibs_times as ibs_times
from .brier import integrated_brier_score as integrated_brier_score
from .concordance import harrell_statistic as harrell_statistic
from .concordance import uno_statistic as uno_statistic
from .harrell import Concordance as Concordance
from .harrell import harrell_c as harrell_c
from .km import StepFunction as StepFunction
from .km import censoring_survival as censoring_survival
from .km import kaplan_meier as kaplan_meier
from .logrank import LogRank as LogRank
from .logrank import logrank_test as logrank_test
from .statistic import PairRatio as PairRatio
from .statistic import Statistic as Statistic
from .statistic import WeightedMean as WeightedMean
