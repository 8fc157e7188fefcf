"""Membership-inference attacks. Scores: float64[records], higher = more likely a member.

Each attack scores the records of a target model ``target`` using the other models as
its shadows. Families (one module each) register themselves by name; use
:func:`get_attack` / :func:`score_records` / :func:`score_targets` (many targets at once).
Imports numpy, scipy and scikit-learn only.
"""

from audit.attacks import calibrated, label_only, lira, metric, rmia, shokri, white_box  # noqa: F401
from audit.attacks.registry import Attack, available_attacks, get_attack, register, score_records, score_targets

__all__ = ["Attack", "available_attacks", "get_attack", "register", "score_records", "score_targets"]

LOGIT_METHODS = (
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "calibrated",
    "lira-online",
    "lira-online-fixed",
    "lira-offline",
    "lira-offline-fixed",
    "rmia",
    "shokri",
    "label-only",
)
WHITE_BOX_METHODS = ("gradient-norm", "canary-statistic")
