"""Which canaries a one-run audit guesses on, chosen so the bound stays valid.

A one-run audit ranks canaries by score, guesses "member" for the k+ highest and
"non-member" for the k- lowest, and abstains on the rest (Steinke, Nasr & Jagielski
2023, Section 6). Theorem 5.2 needs the number of guesses r fixed before the run;
choosing r after seeing which choice gives the highest bound would overstate it.
*Which* canaries are guessed, and with which sign, may depend on the scores (the
theorem allows any guess computed from the output), but not on the membership labels.
Each strategy here is valid for its choice:

* :class:`GuessSearch` (default): a family of guess counts fixed by the number of
  canaries alone (a geometric grid of top-r guesses, plus one guess on every canary
  whose split between members and non-members is read off the scores, without labels: the widest gap in the scores near the middle),
  each tested at significance ``(1 - confidence) * weight`` (Bonferroni); the best of the
  family is reported. :func:`audit.stats.one_run.guess_plan` drops the members that could
  not reject even with every guess right (at this m, delta and confidence), which is also
  fixed before the run and leaves more significance to the rest.
* :class:`FixedGuesses`: one (k+, k-) chosen in advance; no correction.

Ties never help: when the k-th and (k+1)-th ranked scores are equal, the guess set is
shrunk to exclude the whole tied group (fewer than r guesses is allowed by the theorem,
which only needs ``#guesses <= r``), so identical scores for members and non-members
yield no correct guesses whatever their order in the input.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from audit.errors import InputError

# The member count is Binomial(m, 1/2): outside m/2 +- this many standard deviations
# with probability below 1e-4, so the score-based split is looked for inside that range.
_SPLIT_SDS = 4.0


@dataclasses.dataclass(frozen=True)
class Guess:
    """One member of a guess family: the ``k_plus`` top-ranked canaries guessed members,
    the ``k_minus`` bottom-ranked guessed non-members.

    ``split_from_scores``: a guess on all r = k_plus + k_minus canaries whose split is
    chosen from the scores (:func:`split_from_scores`) when the bound is computed;
    ``k_plus``/``k_minus`` then only hold the even split.
    """

    k_plus: int
    k_minus: int
    split_from_scores: bool = False

    @property
    def r(self) -> int:
        return self.k_plus + self.k_minus


@dataclasses.dataclass(frozen=True)
class GuessSearch:
    """Bonferroni over guess counts on a geometric grid fixed by the number of canaries m.

    The family: for each r on the grid (``min_guesses``, ``min_guesses * ratio``, ..., m),
    guess the top r as members (only while r <= m / 2: guessing more than half of the
    canaries as members forces wrong guesses); when ``two_sided``, also the top ceil(r/2)
    as members and the bottom floor(r/2) as non-members for r < m. Always: a guess on
    every canary, split between members and non-members by the scores
    (``full_split = "scores"``, :func:`split_from_scores`) or in half (``"half"``). That
    guess gets ``full_share`` of the significance level when ``full_share > 0``; the other
    members share the rest equally.

    Attributes:
      ratio: spacing of the grid of guess counts.
      two_sided: add top-and-bottom guesses for every r on the grid below m.
      min_guesses: the smallest guess count tried.
      full_share: share of 1 - confidence for the guess on every canary (0: equal shares).
      full_split: how the guess on every canary splits members from non-members.
      prune: drop the members that cannot reject even with every guess right.
    """

    ratio: float = 2.0
    two_sided: bool = False
    min_guesses: int = 1
    full_share: float = 0.0
    full_split: Literal["scores", "half"] = "scores"
    prune: bool = True

    def __post_init__(self) -> None:
        if not self.ratio > 1.0:
            raise InputError(f"ratio={self.ratio!r}: expected a number > 1")
        if isinstance(self.min_guesses, bool) or not isinstance(self.min_guesses, int) or self.min_guesses < 1:
            raise InputError(f"min_guesses={self.min_guesses!r}: expected an integer >= 1")
        if not 0.0 <= self.full_share < 1.0:
            raise InputError(f"full_share={self.full_share!r}: expected a number in [0, 1)")
        if self.full_split not in ("scores", "half"):
            raise InputError(f"full_split={self.full_split!r}: expected 'scores' or 'half'")

    def family(self, m: int) -> list[Guess]:
        """Every member before pruning; depends on m only. The last is the full guess."""
        counts = set()
        r = float(min(self.min_guesses, m))
        while r < m:
            counts.add(int(round(r)))
            r *= self.ratio
        members: list[Guess] = []
        for r in sorted(counts):
            if 2 * r <= m:
                members.append(Guess(r, 0))
            if self.two_sided and 2 <= r < m:
                members.append(Guess((r + 1) // 2, r // 2))
        full = Guess((m + 1) // 2, m // 2, split_from_scores=self.full_split == "scores")
        if full not in members:
            members.append(full)
        return members

    def weights(self, members: list[Guess], m: int) -> list[float]:
        """Share of the significance level given to each of ``members`` (sums to 1)."""
        n = len(members)
        if self.full_share == 0.0 or n == 1 or members[-1].r != m:
            return [1.0 / n] * n
        rest = (1.0 - self.full_share) / (n - 1)
        return [rest] * (n - 1) + [self.full_share]


@dataclasses.dataclass(frozen=True)
class FixedGuesses:
    """Guess the ``k_plus`` top-ranked canaries as members and ``k_minus`` bottom-ranked as non-members."""

    k_plus: int
    k_minus: int = 0

    def __post_init__(self) -> None:
        for name in ("k_plus", "k_minus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"{name}={value!r}: expected a non-negative integer")
        if self.k_plus + self.k_minus == 0:
            raise InputError("k_plus + k_minus = 0: expected at least one guess")

    prune = False

    def family(self, m: int) -> list[Guess]:
        if self.k_plus + self.k_minus > m:
            raise InputError(
                f"k_plus + k_minus = {self.k_plus + self.k_minus} > {m} canaries: expected at most one guess per canary"
            )
        return [Guess(int(self.k_plus), int(self.k_minus))]

    def weights(self, members: list[Guess], m: int) -> list[float]:
        return [1.0]


GuessStrategy = GuessSearch | FixedGuesses


def split_from_scores(scores: np.ndarray) -> int:
    """How many of the top-ranked canaries to guess members when every canary is guessed.

    Label-free: among the cuts that leave a member count within ``m/2 +- 4 sqrt(m)/2``
    (where Binomial(m, 1/2) puts all but 1e-4 of its mass), the one at the widest gap
    between consecutive sorted scores, i.e. where the scores are sparsest: the valley
    between the members' and the non-members' scores when they separate (whatever the
    member count, and however spread out each group is), an arbitrary cut near the middle
    when they do not. Ties in width go to the cut nearest m/2; a cut inside a tie group
    has no gap and is never chosen. Falls back to ``ceil(m/2)`` when every score in the
    range is tied. (Otsu's two-means cut was tried first: it splits a widely spread group
    of members in two instead of finding the gap.)
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    m = s.size
    half = (m + 1) // 2
    if m < 2:
        return half
    width = _SPLIT_SDS * np.sqrt(m) / 2
    k = np.arange(max(1, int(np.floor(m / 2 - width))), min(m - 1, int(np.ceil(m / 2 + width))) + 1)
    gaps = s[k - 1] - s[k]  # cut after position k: k canaries on top
    if not np.any(gaps > 0):
        return half
    best = k[gaps >= gaps.max()]
    return int(best[np.argmin(np.abs(best - m / 2))])


@dataclasses.dataclass(frozen=True)
class RankedCanaries:
    """Canaries sorted by score, with what a tie-safe top/bottom guess gets right.

    Attributes:
      top_correct: int[m + 1]; entry k = members among the k highest scores.
      bottom_correct: int[m + 1]; entry k = non-members among the k lowest scores.
      top_cut: int[m + 1]; entry k = the largest k' <= k that does not split a tie.
      bottom_cut: int[m + 1]; the same from the bottom.
    """

    top_correct: np.ndarray
    bottom_correct: np.ndarray
    top_cut: np.ndarray
    bottom_cut: np.ndarray

    @classmethod
    def from_scores(cls, scores: np.ndarray, members: np.ndarray) -> "RankedCanaries":
        order = np.argsort(-scores, kind="stable")
        s, mem = scores[order], members[order]
        m = s.size
        top_correct = np.concatenate(([0], np.cumsum(mem)))
        bottom_correct = np.concatenate(([0], np.cumsum(~mem[::-1])))
        # A cut after position k (k items on top) is tie-safe when s[k-1] > s[k].
        safe = np.ones(m + 1, dtype=bool)
        safe[1:m] = s[:-1] > s[1:]
        positions = np.arange(m + 1)
        top_cut = np.maximum.accumulate(np.where(safe, positions, 0))
        # From the bottom: k items at the bottom is tie-safe when the cut at m - k is.
        safe_bottom = safe[::-1]
        bottom_cut = np.maximum.accumulate(np.where(safe_bottom, positions, 0))
        return cls(top_correct, bottom_correct, top_cut, bottom_cut)

    def correct(self, k_plus: int, k_minus: int) -> tuple[int, int]:
        """(guesses actually made, correct guesses) for a nominal (k+, k-) pair."""
        kp = int(self.top_cut[k_plus])
        km = int(self.bottom_cut[k_minus])
        return kp + km, int(self.top_correct[kp] + self.bottom_correct[km])


def plan(strategy: GuessStrategy, m: int, alpha: float, can_reject) -> tuple[tuple[Guess, float], ...]:
    """The strategy's family for m canaries, each member with its significance level.

    With ``strategy.prune``, the members for which ``can_reject(guess, level)`` is False
    (they could not reject even with every guess right at the level the whole family would
    give them) are dropped and the level is shared among the rest, whose levels only grow.
    ``can_reject`` must depend on the design (m, the claim, the level), never on scores or
    labels, so the Bonferroni correction over what remains stays valid. If no member could
    reject, the family is kept whole.
    """
    members = strategy.family(m)
    weights = strategy.weights(members, m)
    if getattr(strategy, "prune", False):
        keep = [g for g, w in zip(members, weights) if can_reject(g, alpha * w)]
        if keep:
            members, weights = keep, strategy.weights(keep, m)
    return tuple((g, alpha * w) for g, w in zip(members, weights))


@dataclasses.dataclass(frozen=True)
class GuessOutcome:
    """One member of the plan applied to the scores: the nominal guess counts, the guesses
    actually made (ties are never split) and how many were right; ``level`` its share."""

    k_plus: int
    k_minus: int
    made: int
    correct: int
    level: float

    @property
    def r(self) -> int:
        return self.k_plus + self.k_minus


def guess_outcomes(scores: np.ndarray, members: np.ndarray, plan_: tuple[tuple[Guess, float], ...]) -> list[GuessOutcome]:
    """Each planned guess applied to checked ``scores`` and ``members``."""
    ranked = RankedCanaries.from_scores(scores, members)
    out = []
    for guess, level in plan_:
        k_plus, k_minus = guess.k_plus, guess.k_minus
        if guess.split_from_scores:
            k_plus = split_from_scores(scores)
            k_minus = guess.r - k_plus
        made, correct = ranked.correct(k_plus, k_minus)
        out.append(GuessOutcome(k_plus, k_minus, made, correct, level))
    return out


def describe(strategy: GuessStrategy) -> dict:
    return {"name": type(strategy).__name__, **dataclasses.asdict(strategy)}
