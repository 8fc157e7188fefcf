"""What is inserted and where: inclusion designs, input-space canaries, gradient canaries.

* :mod:`canaries.designs` - ``keep: bool[models, records]`` designs (one-run, multi-run,
  LiRA-balanced, Poisson).
* :mod:`canaries.input_space` - black-box canary records (held-out, mislabeled,
  out-of-distribution, ClipBKD-style crafted).
* :mod:`canaries.gradient` - white-box Dirac and split gradient canaries inserted into
  Opacus' DP-SGD, with their per-step observations.
* :mod:`canaries.iterate_scores` - scores from a gradient canary's per-step readings
  (all-iterates sum, likelihood ratio).

Submodules are imported explicitly (``from canaries import designs``), so importing the
package does not import torch.
"""
