"""The epsilon an implementation claims, from Opacus' accountants (never a hand-written RDP).

Opacus is imported inside the function so that ``import audit.stats`` stays light.
"""

from __future__ import annotations

from audit.stats import _validate
from audit.stats.result import EpsilonResult

ACCOUNTANTS = ("prv", "rdp", "gdp")


def claimed_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """epsilon at ``delta`` for DP-SGD with Poisson sampling, by Opacus' named accountant."""
    if accountant not in ACCOUNTANTS:
        raise _validate.InputError(f"accountant={accountant!r}: expected one of {', '.join(ACCOUNTANTS)}")
    noise_multiplier = _validate.check_finite("noise_multiplier", noise_multiplier)
    if noise_multiplier <= 0:
        raise _validate.InputError(f"noise_multiplier={noise_multiplier!r}: expected a number > 0")
    sample_rate = _validate.check_finite("sample_rate", sample_rate)
    if not 0 < sample_rate <= 1:
        raise _validate.InputError(f"sample_rate={sample_rate!r}: expected a number in (0, 1]")
    steps = _validate.check_count("steps", steps)
    if steps == 0:
        raise _validate.InputError("steps=0: expected at least one step")
    delta = _validate.check_delta(delta)
    if delta == 0:
        raise _validate.InputError("delta=0: expected a number in (0, 1) for an accountant")

    import warnings

    from opacus.accountants import create_accountant

    with warnings.catch_warnings():
        # Opacus warns that GDP accounting is experimental; we say so in ``details``.
        warnings.simplefilter("ignore", UserWarning)
        acct = create_accountant(mechanism=accountant)
        acct.history = [(noise_multiplier, sample_rate, steps)]
        eps = float(acct.get_epsilon(delta=delta))
    return EpsilonResult(
        value=eps,
        kind="bound",
        method=f"opacus-{accountant}",
        confidence=1.0,
        delta=delta,
        inputs={"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps},
        details={
            "role": "claimed upper bound on epsilon (accountant), not an audit result",
            **({"warning": "Opacus: GDP accounting is experimental and can underestimate epsilon"} if accountant == "gdp" else {}),
        },
    )
