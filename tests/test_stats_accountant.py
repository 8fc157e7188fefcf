"""Accountant inputs: refused in one line before Opacus runs, or computed; never a traceback,
a hang or an unbounded allocation."""

import math
import time

import pytest

from audit.errors import InputError
from audit.stats import accountant as acc
from audit.stats import check_accounting, claimed_epsilon

REF = dict(noise_multiplier=1.0, sample_rate=0.0256, steps=1170, delta=1e-5)


def args(**over):
    return {**REF, **over}


@pytest.mark.parametrize("name", acc.ACCOUNTANTS)
def test_reference_inputs_pass(name):
    check_accounting(**REF, accountant=name)


BAD = [
    (dict(noise_multiplier=math.inf), "noise_multiplier=inf"),  # Opacus' RDP series never ends
    (dict(noise_multiplier=math.nan), "noise_multiplier=nan"),
    (dict(noise_multiplier=0.0), "noise_multiplier=0.0"),
    (dict(noise_multiplier=-1.0), "noise_multiplier=-1.0"),
    (dict(noise_multiplier=1e300), "noise_multiplier=1e+300"),  # sigma**2 overflows
    (dict(noise_multiplier=1e-160), "noise_multiplier=1e-160"),  # RDP series never ends
    (dict(sample_rate=0.0), "sample_rate=0.0"),
    (dict(sample_rate=1.5), "sample_rate=1.5"),
    (dict(steps=0), "steps=0"),
    (dict(steps=-3), "steps=-3"),
    (dict(steps=2.5), "steps=2.5"),
    (dict(steps=10**19), "steps=10000000000000000000"),
    (dict(steps=10**400), "steps=1000"),  # float(10**400) overflows: still one message
    (dict(delta=0.0), "delta=0"),
    (dict(delta=1.0), "delta=1.0"),
    (dict(delta=0.9), "delta=0.9"),
    (dict(delta=math.nan), "delta=nan"),
]


@pytest.mark.parametrize("name", acc.ACCOUNTANTS)
@pytest.mark.parametrize("over, named", BAD)
def test_bad_inputs_refused_with_the_value_named(name, over, named):
    for fn in (check_accounting, claimed_epsilon):
        with pytest.raises(InputError) as err:
            fn(**args(**over), accountant=name)
        assert named in str(err.value) and "\n" not in str(err.value)


def test_unknown_accountant():
    with pytest.raises(InputError, match="accountant='moments'"):
        check_accounting(**REF, accountant="moments")


@pytest.mark.parametrize(
    "over",
    [
        dict(steps=10**6),  # needed more than 4 GB
        dict(steps=10**7),  # grew past 23 GB
        dict(steps=10**12),  # traceback
        dict(noise_multiplier=1e-9),  # traceback ("Maximum allowed size exceeded")
        dict(noise_multiplier=0.1, sample_rate=0.01, steps=1000),  # ran out of memory
    ],
)
def test_prv_grid_too_large_is_refused_before_running(monkeypatch, over):
    from opacus.accountants import PRVAccountant

    def never(*a, **k):
        raise AssertionError("the PRV accountant must not run")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", never)
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        check_accounting(**args(**over), accountant="prv")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "grid" in message and "rdp" in message and f"steps={args(**over)['steps']}" in message
    with pytest.raises(InputError):
        claimed_epsilon(**args(**over), accountant="prv")


def test_prv_grid_limit_follows_opacus_sizing():
    # Just inside and just outside the limit at the reference sigma and sample rate
    # (83,084 steps give 19,999,954 points with Opacus 1.6).
    points = acc.prv_grid_points(1.0, 0.0256, 83_084, 1e-5)
    assert points <= acc.PRV_GRID_POINTS_MAX < acc.prv_grid_points(1.0, 0.0256, 84_000, 1e-5)
    check_accounting(**args(steps=83_084), accountant="prv")
    with pytest.raises(InputError):
        check_accounting(**args(steps=84_000), accountant="prv")


def test_prv_delta_too_small_for_its_grid():
    # Opacus: "Floating point errors will dominate for such small values of delta".
    for delta in (1e-100, 1e-310):
        with pytest.raises(InputError, match=f"delta={delta!r}.*rdp"):
            check_accounting(**args(delta=delta), accountant="prv")


@pytest.mark.parametrize("name", ["rdp", "gdp"])
def test_steps_beyond_prv_are_fine_for_rdp_and_gdp(name):
    res = claimed_epsilon(**args(steps=10**12), accountant=name)
    assert res.value > 1000  # 10^12 steps at sigma = 1: no meaningful privacy left
    assert claimed_epsilon(**args(steps=acc.STEPS_MAX), accountant=name).value >= res.value


def test_tiny_noise_multiplier():
    # RDP: Opacus' own (huge) value; GDP: infinite (above the 500 its solver searches), with
    # a note; PRV: refused above (grid).
    rdp = claimed_epsilon(**args(noise_multiplier=1e-9), accountant="rdp")
    assert rdp.value > 1e18
    gdp = claimed_epsilon(**args(noise_multiplier=1e-9), accountant="gdp")
    assert gdp.value == math.inf and "500" in gdp.details["note"]
    assert claimed_epsilon(**args(noise_multiplier=0.1), accountant="gdp").value == math.inf
    tiny = claimed_epsilon(**args(noise_multiplier=acc.NOISE_MULTIPLIER_MIN), accountant="rdp")
    assert tiny.value >= rdp.value  # within the range, no hang: inf or huge


def test_huge_noise_multiplier_gives_about_zero():
    from opacus.accountants.analysis import gdp as opacus_gdp

    big = args(noise_multiplier=acc.NOISE_MULTIPLIER_MAX, sample_rate=0.01)
    assert claimed_epsilon(**big, accountant="prv").value == pytest.approx(0.01, abs=1e-4)  # PRV's eps_error
    # RDP's floor with orders up to 63: log(1/delta) / 62 and the like, not 0.
    assert claimed_epsilon(**big, accountant="rdp").value == pytest.approx(0.10287, abs=1e-4)
    # GDP: delta is already met at epsilon = 0 (Opacus' solver raised: no sign change).
    res = claimed_epsilon(**args(noise_multiplier=1e6, sample_rate=0.5, steps=1000), accountant="gdp")
    mu = opacus_gdp.compute_mu_poisson(steps=1000, noise_multiplier=1e6, sample_rate=0.5)
    assert opacus_gdp.delta_eps_mu(eps=0.0, mu=mu) <= 1e-5
    assert res.value == 0.0 and "epsilon = 0" in res.details["note"]


@pytest.mark.parametrize("name", acc.ACCOUNTANTS)
def test_epsilon_never_negative(name):
    # Near delta = 1/2, RDP's conversion and PRV's search give negative epsilons; (eps, delta)
    # with eps < 0 implies (0, delta), the value reported.
    res = claimed_epsilon(noise_multiplier=1e3, sample_rate=0.01, steps=10, delta=0.5, accountant=name)
    assert res.value >= 0.0


def test_claimed_epsilon_checks_first(monkeypatch):
    def refuse(**kwargs):
        raise InputError("refused by check_accounting")

    monkeypatch.setattr(acc, "check_accounting", refuse)
    with pytest.raises(InputError, match="refused by check_accounting"):
        claimed_epsilon(**REF, accountant="rdp")
