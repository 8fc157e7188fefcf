"""Which canaries a one-run audit guesses on, chosen so the bound stays valid.

A one-run audit ranks canaries by score, guesses "member" for the k+ highest and
"non-member" for the k- lowest, and abstains on the rest (Steinke, Nasr & Jagielski
2023, Section 6). Theorem 5.2 needs the number of guesses r fixed before the run;
choosing (k+, k-) after seeing which choice gives the highest bound would overstate it.
Each strategy here is valid for its choice:

* :class:`GuessSearch` (default): a family of (k+, k-) pairs fixed by the number of
  canaries alone (a geometric grid of guess counts), each tested at significance
  ``(1 - confidence) / len(family)`` (Bonferroni); the best of the family is reported.
* :class:`FixedGuesses`: one (k+, k-) chosen in advance; no correction.

Ties never help: when the k-th and (k+1)-th ranked scores are equal, the guess set is
shrunk to exclude the whole tied group (fewer than r guesses is allowed by the theorem,
which only needs ``#guesses <= r``), so identical scores for members and non-members
yield no correct guesses whatever their order in the input.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from audit.errors import InputError


@dataclasses.dataclass(frozen=True)
class GuessSearch:
    """Bonferroni over guess counts on a geometric grid fixed by the number of canaries m.

    The family: for each r on the grid (``min_guesses``, ``min_guesses * ratio``, ..., m),
    guess the top r as members (only while r <= m / 2: guessing more than half of the
    canaries as members forces wrong guesses) and, when ``two_sided``, the top ceil(r/2)
    as members and the bottom floor(r/2) as non-members. Guessing every canary
    two-sided (the choice that catches a broken implementation) gets ``full_share`` of
    the significance level; the other members share the rest equally.

    Attributes:
      ratio: spacing of the grid of guess counts.
      two_sided: include the top-and-bottom guesses.
      min_guesses: the smallest guess count tried.
      full_share: share of 1 - confidence for guessing all m canaries (two-sided only).
    """

    ratio: float = 2.0
    two_sided: bool = True
    min_guesses: int = 1
    full_share: float = 0.0

    def __post_init__(self) -> None:
        if not self.ratio > 1.0:
            raise InputError(f"ratio={self.ratio!r}: expected a number > 1")
        if isinstance(self.min_guesses, bool) or not isinstance(self.min_guesses, int) or self.min_guesses < 1:
            raise InputError(f"min_guesses={self.min_guesses!r}: expected an integer >= 1")
        if not 0.0 <= self.full_share < 1.0:
            raise InputError(f"full_share={self.full_share!r}: expected a number in [0, 1)")

    def family(self, m: int) -> list[tuple[int, int]]:
        counts = {m}
        r = float(min(self.min_guesses, m))
        while r < m:
            counts.add(int(round(r)))
            r *= self.ratio
        pairs: list[tuple[int, int]] = []
        for r in sorted(counts):
            if 2 * r <= m:
                pairs.append((r, 0))
            if self.two_sided and r >= 2:
                pairs.append(((r + 1) // 2, r // 2))
        return pairs or [(1, 0)]

    def weights(self, m: int) -> list[float]:
        """Share of the significance level given to each member of :meth:`family` (sums to 1)."""
        pairs = self.family(m)
        full = ((m + 1) // 2, m // 2)
        if not self.two_sided or self.full_share == 0.0 or full not in pairs or len(pairs) == 1:
            return [1.0 / len(pairs)] * len(pairs)
        rest = (1.0 - self.full_share) / (len(pairs) - 1)
        return [self.full_share if pair == full else rest for pair in pairs]


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

    def family(self, m: int) -> list[tuple[int, int]]:
        if self.k_plus + self.k_minus > m:
            raise InputError(
                f"k_plus + k_minus = {self.k_plus + self.k_minus} > {m} canaries: expected at most one guess per canary"
            )
        return [(self.k_plus, self.k_minus)]

    def weights(self, m: int) -> list[float]:
        return [1.0]


GuessStrategy = GuessSearch | FixedGuesses


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


def describe(strategy: GuessStrategy) -> dict:
    return {"name": type(strategy).__name__, **dataclasses.asdict(strategy)}
