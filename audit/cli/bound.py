"""``dpaudit bound``: empirical epsilon from counts, one-run counts, raw scores, or an accountant."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import click
import numpy as np

from audit.errors import InputError

_confidence = click.option(
    "--confidence", type=float, default=0.95, show_default=True, help="Probability that the bound holds."
)
_json = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
_delta = click.option("--delta", type=float, required=True, help="delta of the (epsilon, delta) claim under test.")


@click.group(name="bound")
def command() -> None:
    """Empirical epsilon lower bounds (and the accountant's claimed epsilon)."""


def _emit(payload: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload, sort_keys=True))
    else:
        click.echo("\n".join(lines))


def _bound_lines(result, label: str = "epsilon lower bound") -> list[str]:
    return [f"{label}: {result.value:.4f} (method {result.method}, confidence {result.confidence:g}, delta {result.delta:g})"]


def _claimed_curve(noise_multiplier: float | None, sample_rate: float | None, steps: int | None):
    """The claimed DP-SGD curve from the three claim options, None when none is given."""
    given = [v is not None for v in (noise_multiplier, sample_rate, steps)]
    if not any(given):
        return None
    if not all(given):
        raise InputError("--noise-multiplier, --sample-rate and --steps: give all three (the claimed DP-SGD) or none")
    from audit.stats.privacy_curve import dpsgd_curve

    return dpsgd_curve(noise_multiplier, sample_rate, steps)


def _add_claim(payload: dict, lines: list[str], test, eff, how: str) -> None:
    """The claim test and the effective noise, into the JSON payload and the human lines."""
    payload.update(claim_rejected=test.rejected, claim_p_value=test.p_value, claim_test=test.to_dict(),
                   effective_noise_multiplier=eff.noise_multiplier, effective_epsilon=eff.epsilon,
                   effective=eff.to_dict())
    verdict = "REJECTED" if test.rejected else "not rejected" + ("" if test.testable else " (no outcome of this design could reject it)")
    lines.append(f"claimed privacy curve ({test.claim}): {verdict}, p = {test.p_value:.3g} "
                 f"({how}, confidence {test.confidence:g})")
    lines.append(_effective_line(eff))


def _effective_line(eff) -> str:
    if eff.noise_multiplier is None:
        return (f"effective noise: no DP-SGD noise level up to {eff.details['searched_up_to']:g} is rejected "
                "(effective epsilon 0)")
    by = {"noise": ", from the noise measured on the canaries never inserted",
          "signal": ", from the canary scores"}.get(eff.details.get("decided_by"), "")
    return (f"effective noise: behaves as if it added less noise than sigma = {eff.noise_multiplier:.4g} "
            f"(claimed {eff.claimed_noise_multiplier:.4g}{by}); effective epsilon {eff.epsilon:.4g} at delta "
            f"{eff.delta:g} (confidence {eff.confidence:g}; assumes DP-SGD with the claimed q, T and C, not an "
            "assumption-free bound)")


_claim_options = [
    click.option("--noise-multiplier", type=float, default=None,
                 help="Claimed DP-SGD noise multiplier: with --sample-rate and --steps, also test the claimed privacy curve."),
    click.option("--sample-rate", type=float, default=None, help="Claimed Poisson sampling rate q."),
    click.option("--steps", type=int, default=None, help="Claimed number of DP-SGD steps T."),
]


def _claim(func):
    for option in reversed(_claim_options):
        func = option(func)
    return func


@command.command(name="one-run")
@click.option("--canaries", "m", type=int, required=True, help="Number of canaries M (each included w.p. 1/2).")
@click.option("--guesses", "r", type=int, required=True, help="Number of guesses R, fixed in advance.")
@click.option("--correct", "v", type=int, required=True, help="Number of correct guesses V.")
@_delta
@_confidence
@_json
def one_run(m: int, r: int, v: int, delta: float, confidence: float, as_json: bool) -> int:
    """One-run bound from counts (Steinke, Nasr & Jagielski 2023)."""
    from audit.stats import epsilon_one_run

    result = epsilon_one_run(m, r, v, delta=delta, confidence=confidence)
    _emit(result.to_dict(), as_json, _bound_lines(result) + [f"from {v} correct of {r} guesses on {m} canaries"])
    return 0


@command.command(name="counts")
@click.option("--tp", type=int, required=True, help="Members guessed member.")
@click.option("--fn", type=int, required=True, help="Members guessed non-member.")
@click.option("--fp", type=int, required=True, help="Non-members guessed member.")
@click.option("--tn", type=int, required=True, help="Non-members guessed non-member.")
@_delta
@_confidence
@click.option(
    "--method",
    type=click.Choice(["clopper-pearson", "jeffreys"]),
    default="clopper-pearson",
    show_default=True,
    help="jeffreys is a Bayesian interval: reported as an estimate.",
)
@_claim
@_json
def counts(tp: int, fn: int, fp: int, tn: int, delta: float, confidence: float, method: str,
           noise_multiplier: float | None, sample_rate: float | None, steps: int | None, as_json: bool) -> int:
    """Bound from the confusion counts at one threshold fixed in advance (multi-run audit); with
    the claimed DP-SGD (--noise-multiplier, --sample-rate, --steps), the test of its privacy
    curve and the effective noise."""
    from audit.stats import epsilon_from_counts

    curve = _claimed_curve(noise_multiplier, sample_rate, steps)
    result = epsilon_from_counts(tp, fn, fp, tn, delta=delta, confidence=confidence, method=method)
    label = "epsilon lower bound" if result.is_guaranteed else "epsilon estimate (not a guaranteed bound)"
    payload, lines = result.to_dict(), _bound_lines(result, label)
    if curve is not None:
        from audit.stats.claim_test import claim_test_counts
        from audit.stats.effective_noise import effective_noise_counts

        test = claim_test_counts(tp, fn, fp, tn, curve, confidence=confidence)
        eff = effective_noise_counts(tp, fn, fp, tn, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                     steps=steps, delta=delta, confidence=confidence)
        _add_claim(payload, lines, test, eff, "multi-run test of the counts")
    _emit(payload, as_json, lines)
    return 0


def load_scores_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``scores: float[M]`` and ``members: bool[M]`` from an .npz (no pickle), or InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--scores {path}: no such file")
    if not zipfile.is_zipfile(p):
        raise InputError(f"--scores {path}: not an .npz archive")
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in ("scores", "members") if k not in data.files]
            if missing:
                raise InputError(f"--scores {path}: missing array {', '.join(repr(k) for k in missing)} (expected 'scores' and 'members')")
            return np.asarray(data["scores"]), np.asarray(data["members"])
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise InputError(f"--scores {path}: not a readable .npz without pickled objects ({err})") from None


def load_readings_npz(path: str) -> tuple[np.ndarray, float] | None:
    """The optional ``readings: float[steps, canaries]`` (white-box per-step readings on the
    unnormalised scale) and ``max_grad_norm`` (default 1) of a scores .npz, or None."""
    with np.load(Path(path), allow_pickle=False) as data:
        if "readings" not in data.files:
            return None
        c = float(np.asarray(data["max_grad_norm"])) if "max_grad_norm" in data.files else 1.0
        return np.asarray(data["readings"], dtype=np.float64), c


@command.command(name="scores")
@click.option("--scores", "path", required=True,
              help=".npz with 'scores' (higher = member) and 'members' (bool); optionally 'readings' "
                   "(float[steps, canaries]) and 'max_grad_norm' for the effective noise's noise test.")
@_delta
@_confidence
@_claim
@_json
def scores(path: str, delta: float, confidence: float, noise_multiplier: float | None, sample_rate: float | None,
           steps: int | None, as_json: bool) -> int:
    """One-run bound with a valid abstention search, plus the multi-run counts bound; with the
    claimed DP-SGD (--noise-multiplier, --sample-rate, --steps), the one-run test of its whole
    privacy curve (Mahloujifar, Melis & Chaudhuri 2024)."""
    from audit.stats import epsilon_from_scores, epsilon_one_run_from_scores
    from audit.stats._validate import check_scores

    curve = _claimed_curve(noise_multiplier, sample_rate, steps)
    s, members = check_scores(*load_scores_npz(path))
    one_run = epsilon_one_run_from_scores(s, members, delta=delta, confidence=confidence)
    try:
        multi = epsilon_from_scores(s, members, delta=delta, confidence=confidence).to_dict()
    except InputError as err:  # too few records for a split: reported, not fatal
        multi = {"epsilon_lower_bound": None, "error": str(err)}
    payload = one_run.to_dict()
    payload["counts_bound"] = multi
    d = one_run.details
    lines = _bound_lines(one_run, "one-run epsilon lower bound") + [
        f"  {d.get('correct', 0)} correct of {d.get('guesses', 0)} guesses on {d['canaries']} canaries; "
        f"search over {d['family_size']} guess counts; this design's power: {d['power']:.4f}",
        f"counts bound (valid only if each entry is an independent run): {multi['epsilon_lower_bound']}",
    ]
    if curve is not None:
        from audit.stats.claim_test import claim_test_one_run
        from audit.stats.effective_noise import effective_noise_one_run

        test = claim_test_one_run(s, members, curve, confidence=confidence)
        readings, c = load_readings_npz(path) or (None, 1.0)
        eff = effective_noise_one_run(s, members, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                      steps=steps, delta=delta, confidence=confidence, readings=readings,
                                      max_grad_norm=c)
        _add_claim(payload, lines, test, eff, "one-run f-DP test")
        try:
            from audit.stats.claim_test import claim_test_scores_multi_run

            multi_test = claim_test_scores_multi_run(s, members, curve, confidence=confidence)
            payload["counts_claim_test"] = multi_test.to_dict()
            lines.append(f"counts test of the claimed curve (valid only if each entry is an independent run): "
                         f"{'REJECTED' if multi_test.rejected else 'not rejected'}, p = {multi_test.p_value:.3g}")
        except InputError as err:  # too few records for a split: reported, not fatal
            payload["counts_claim_test"] = {"rejected": None, "error": str(err)}
    _emit(payload, as_json, lines)
    return 0


@command.command(name="accountant")
@click.option("--noise-multiplier", type=float, required=True)
@click.option("--sample-rate", type=float, required=True)
@click.option("--steps", type=int, required=True)
@_delta
@click.option("--accountant", type=click.Choice(["prv", "rdp", "gdp"]), default="prv", show_default=True)
@_json
def accountant(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str, as_json: bool) -> int:
    """The epsilon Opacus' accountant claims for DP-SGD with Poisson sampling.

    Inputs the accountant cannot handle (see ``audit.stats.accountant``) are refused in one
    line; the epsilon may be ``inf`` (no finite claim) or 0, with a note saying why."""
    from audit.stats import claimed_epsilon

    result = claimed_epsilon(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant
    )
    payload = result.to_dict()
    payload["epsilon"] = payload.pop("epsilon_lower_bound")
    payload["accountant"] = accountant
    lines = [f"epsilon: {result.value:.4f} at delta {delta:g} (Opacus {accountant} accountant)"]
    if "note" in result.details:
        lines.append(f"  note: {result.details['note']}")
    _emit(payload, as_json, lines)
    return 0
