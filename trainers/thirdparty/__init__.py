"""Black-box plugins wrapping third-party DP libraries, to audit them as their users run them.

Needs the optional extra: ``pip install 'dpaudit[thirdparty]'``.

- ``trainers.thirdparty.diffprivlib_plugins``: IBM's diffprivlib models, configured as its
  documentation says and misconfigured in the ways the library allows.
- ``trainers.thirdparty.diffprivlib_eps1`` / ``_eps2`` / ``_eps4``: those plugins at one
  claimed epsilon each (a plugin module states one claim), e.g.
  ``trainer.plugin = "trainers.thirdparty.diffprivlib_eps1:logreg_correct"``.
"""
