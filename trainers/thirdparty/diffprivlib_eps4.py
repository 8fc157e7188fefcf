"""diffprivlib plugins claiming epsilon = 4 (pure DP), on the ``fair`` data's public domain.

    [trainer]
    kind = "blackbox-plugin"
    plugin = "trainers.thirdparty.diffprivlib_eps4:logreg_correct"

Each plugin is the factory of the same name in :mod:`trainers.thirdparty.diffprivlib_plugins`
(its docstring says what it configures and what it gets wrong) given this module's
``CLAIMED_EPSILON``: the epsilon diffprivlib is given is the epsilon the audit tests.
"""

from trainers.thirdparty import diffprivlib_plugins as _dpl

CLAIMED_EPSILON = 4.0
CLAIMED_DELTA = 0.0  # pure epsilon-DP; dpaudit audits it at dp.delta

logreg_correct = _dpl.logreg_correct(CLAIMED_EPSILON, _dpl.FAIR)
logreg_no_data_norm = _dpl.logreg_no_data_norm(CLAIMED_EPSILON, _dpl.FAIR)
gnb_correct = _dpl.gnb_correct(CLAIMED_EPSILON, _dpl.FAIR)
gnb_no_bounds = _dpl.gnb_no_bounds(CLAIMED_EPSILON, _dpl.FAIR)
gnb_no_classes = _dpl.gnb_no_classes(CLAIMED_EPSILON, _dpl.FAIR)
