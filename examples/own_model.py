"""Your own PyTorch model in a ``dpaudit run`` audit: a small CNN factory for digits images.

``examples/own_model.toml`` names it as ``model.plugin = "own_model.py:build_model"``; the
audit calls it once per trained model (and once to check it, before any work)::

    build_model(in_shape, n_classes, **options) -> torch.nn.Module

with ``in_shape`` one record's shape (here ``(1, 8, 8)``: ``x.shape[1:]`` of the NPZ),
``n_classes`` the number of labels (``y.max() + 1``) and ``options`` the config's
``[model.options]`` table. Build the model with PyTorch's usual layers and initialisation:
the audit seeds torch's RNG around the call, so the same config and seed give the same
weights. For DP-SGD (``trainer.kind = "dp"``) the model must be one Opacus can train:
no BatchNorm (GroupNorm is fine), every trainable parameter used in ``forward``.

Run as a script, this file writes the example's data, ``examples/digits.npz``:
scikit-learn's 8x8 digits as ``x: float32[1797, 1, 8, 8]`` in [0, 1] and ``y: int64[1797]``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


def build_model(in_shape: tuple[int, ...], n_classes: int, *, channels: int = 8, groups: int = 4) -> nn.Module:
    """Conv(3x3) -> GroupNorm -> ReLU -> AvgPool(2) -> Conv(3x3) -> ReLU -> global average -> Linear."""
    if len(in_shape) != 3:
        raise ValueError(f"in_shape={in_shape}: expected images (channels, height, width)")
    c_in = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(c_in, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * channels, n_classes),
    )


def write_digits(path: Path) -> None:
    """scikit-learn's digits as an NPZ of arrays ``x`` (images) and ``y`` (labels)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    # compressed to keep the checkout small; np.savez (uncompressed) would be memory-mapped
    np.savez_compressed(path, x=x, y=digits.target.astype(np.int64))


if __name__ == "__main__":
    out = Path(__file__).with_name("digits.npz")
    write_digits(out)
    print(f"wrote {out}")
