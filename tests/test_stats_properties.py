"""Properties of the bounds (hypothesis): non-negative, monotone in correct guesses,
non-increasing in delta and in confidence."""

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.stats import epsilon_from_counts, epsilon_one_run


@st.composite
def guesses(draw):
    m = draw(st.integers(1, 3000))
    r = draw(st.integers(0, min(m, 400)))
    v = draw(st.integers(0, r))
    return m, r, v


deltas = st.sampled_from([0.0, 1e-6, 1e-5, 1e-3, 0.05])
confidences = st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99])


@settings(max_examples=60, deadline=None)
@given(guesses(), deltas, confidences)
def test_one_run_non_negative_and_monotone_in_correct(g, delta, conf):
    m, r, v = g
    eps = epsilon_one_run(m, r, v, delta=delta, confidence=conf).value
    assert eps >= 0
    if v < r:
        assert epsilon_one_run(m, r, v + 1, delta=delta, confidence=conf).value >= eps - 1e-9


@settings(max_examples=60, deadline=None)
@given(guesses(), deltas, deltas, confidences, confidences)
def test_one_run_non_increasing_in_delta_and_confidence(g, d1, d2, c1, c2):
    m, r, v = g
    lo_d, hi_d = sorted((d1, d2))
    lo_c, hi_c = sorted((c1, c2))
    assert epsilon_one_run(m, r, v, delta=hi_d, confidence=lo_c).value <= epsilon_one_run(m, r, v, delta=lo_d, confidence=lo_c).value + 1e-9
    assert epsilon_one_run(m, r, v, delta=lo_d, confidence=hi_c).value <= epsilon_one_run(m, r, v, delta=lo_d, confidence=lo_c).value + 1e-9


counts = st.integers(0, 2000)


@settings(max_examples=80, deadline=None)
@given(counts, counts, counts, counts, deltas, deltas, confidences, confidences)
def test_counts_properties(tp, fn, fp, tn, d1, d2, c1, c2):
    if tp + fn == 0 or fp + tn == 0:
        return
    lo_d, hi_d = sorted((d1, d2))
    lo_c, hi_c = sorted((c1, c2))
    base = epsilon_from_counts(tp, fn, fp, tn, delta=lo_d, confidence=lo_c).value
    assert base >= 0
    assert epsilon_from_counts(tp, fn, fp, tn, delta=hi_d, confidence=lo_c).value <= base + 1e-12
    assert epsilon_from_counts(tp, fn, fp, tn, delta=lo_d, confidence=hi_c).value <= base + 1e-12
    if fn > 0:  # one more member caught
        assert epsilon_from_counts(tp + 1, fn - 1, fp, tn, delta=lo_d, confidence=lo_c).value >= base - 1e-12
