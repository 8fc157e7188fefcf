"""dpaudit: differential-privacy auditing.

Subpackages: ``audit.stats`` (bounds and estimates; numpy/scipy/statsmodels only),
``audit.cli`` (the ``dpaudit`` command). ``audit.attach_audit`` audits a user's own Opacus
training loop in process (``audit.attach``, imported on first use). Importing ``audit``
imports nothing heavy.
"""

__version__ = "0.1.0"

_LAZY = {"attach_audit": "audit.attach", "AttachedAudit": "audit.attach", "AuditResult": "audit.attach"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
