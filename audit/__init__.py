"""dpaudit: differential-privacy auditing.

Subpackages: ``audit.stats`` (bounds and estimates; numpy/scipy/statsmodels only),
``audit.cli`` (the ``dpaudit`` command). Importing ``audit`` imports nothing heavy.
"""

__version__ = "0.1.0"
