"""Statistics: empirical epsilon lower bounds, estimates, ROC metrics, accounting.

Pure numpy/scipy/statsmodels: importing this package never imports torch, opacus or
mlflow (Opacus is imported only when :func:`claimed_epsilon` or :func:`check_accounting`
is called).

Guaranteed bounds (``kind="bound"``):
  :func:`epsilon_from_counts`          counts at one threshold (Clopper-Pearson)
  :func:`epsilon_from_scores`          multi-run scores, valid threshold selection
  :func:`epsilon_one_run`              one-run counts (Steinke, Nasr & Jagielski 2023)
  :func:`epsilon_one_run_from_scores`  one-run scores, valid abstention search
Tests of a claim's whole privacy curve (may decide: they test the claim itself):
  :func:`dpsgd_curve`                  the claimed DP-SGD profile and trade-off curve
                                       (Google's dp_accounting, imported when called)
  :func:`claim_test_one_run`           one-run f-DP test of it (Mahloujifar et al. 2024)
Estimates (``kind="estimate"``, never decide a verdict):
  :func:`gdp_from_counts`, :func:`fdp_one_run_estimate`, Jeffreys counts.
"""

from audit.stats.accountant import check_accounting, claimed_epsilon
from audit.stats.claim_test import ClaimTestResult, claim_test_one_run
from audit.stats.counts import epsilon_from_counts
from audit.stats.estimates import epsilon_for_gdp, fdp_one_run_estimate, gdp_from_counts, gdp_mu_for_epsilon
from audit.stats.guesses import FixedGuesses, GuessSearch
from audit.stats.one_run import epsilon_one_run, epsilon_one_run_from_scores, one_run_p_value
from audit.stats.privacy_curve import PrivacyCurve, dpsgd_curve
from audit.stats.result import EpsilonResult
from audit.stats.roc import RocCurve, TprAtFpr, auc, roc_curve, tpr_at_fpr
from audit.stats.thresholds import Bonferroni, Split, epsilon_from_scores

__all__ = [
    "Bonferroni",
    "ClaimTestResult",
    "EpsilonResult",
    "FixedGuesses",
    "GuessSearch",
    "PrivacyCurve",
    "RocCurve",
    "Split",
    "TprAtFpr",
    "auc",
    "check_accounting",
    "claim_test_one_run",
    "claimed_epsilon",
    "dpsgd_curve",
    "epsilon_for_gdp",
    "epsilon_from_counts",
    "epsilon_from_scores",
    "epsilon_one_run",
    "epsilon_one_run_from_scores",
    "fdp_one_run_estimate",
    "gdp_from_counts",
    "gdp_mu_for_epsilon",
    "one_run_p_value",
    "roc_curve",
    "tpr_at_fpr",
]
