"""The rule that stops a hopeless trial, whatever its pruner or bracket says.

Optuna's pruners compare a trial with the others at the same step, and some never stop one:
Hyperband's most conservative bracket trains every trial it holds to full length, and a bracket
of a handful of trials has nothing to compare with. A GAN can be beyond saving long before its
end, so every trial of the ``optuna`` and ``grow`` strategies also passes this guard at each
evaluation. It stops a trial that has

- **collapsed**: D's mean loss under ``d_loss_floor`` at each of the last ``patience``
  evaluations (D tells every real image from every fake one) while the FID did not improve by
  ``min_gain`` over them; or
- **no hope**: from ``hopeless_from`` of its length on, an FID more than ``hopeless_ratio``
  times the worst that the better half of the finished trials had at the same step, by more
  than ``std_margin`` of its own evaluation's standard deviation.

Where the rule is safe was measured on recorded curves (``bench/guard_curves.py``,
BENCHMARKS.md 7): early evaluations are too noisy for the second rule (the preset itself scores
700-1000 at its first evaluation and ends among the best; from a tenth of the length, twice the
reference stopped a trial that ended 7th of 40), so it waits for three tenths of the length and
three times the reference. Over 40 random trials of 1,000 steps it stopped 15 and saved 22 % of
their steps; the best of the trials it stopped ended 15th of 40 (collapse alone: 13, 17 %).
The rule is pure (curves in, a reason out) so that the benchmark replays it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["GuardRule", "Point", "verdict"]


@dataclass(frozen=True)
class Point:
    """One evaluation of a trial."""

    step: int
    fid: float
    fid_std: float
    d_loss: float


@dataclass(frozen=True)
class GuardRule:
    """The thresholds of :func:`verdict` (ganhpo's defaults; see the module's docstring)."""

    d_loss_floor: float = 0.1
    patience: int = 3  # evaluations
    min_gain: float = 0.1  # relative FID improvement over the patience window
    hopeless_ratio: float | None = 3.0  # None: the collapse rule only
    hopeless_from: float = 0.3  # of the trial's length
    std_margin: float = 3.0
    min_references: int = 2  # finished trials with a value at the step


def verdict(
    rule: GuardRule,
    points: Sequence[Point],
    finished: Sequence[tuple[float, Mapping[int, float]]],
    *,
    length: int,
    loss: str,
) -> str:
    """Why the trial whose evaluations so far are ``points`` should stop now ("" if it should
    go on). ``finished``: (final value, intermediate values by step) of the study's finished
    trials; ``length``: the trial's full length in steps; ``loss``: its GAN loss (D's loss of
    a Wasserstein critic has no floor, so the collapse rule does not apply to it)."""
    if not points:
        return ""
    last = points[-1]
    window = points[-rule.patience :]
    if (
        loss != "wasserstein"
        and len(window) == rule.patience
        and all(p.d_loss < rule.d_loss_floor for p in window)
        and last.fid > (1 - rule.min_gain) * window[0].fid
    ):
        return (
            f"collapsed at step {last.step}: D's loss under {rule.d_loss_floor:g} for "
            f"{rule.patience} evaluations ({last.d_loss:.3g} now) and FID {last.fid:.1f} not "
            f"{rule.min_gain:.0%} better than {window[0].fid:.1f} at step {window[0].step}"
        )
    if rule.hopeless_ratio is None or last.step < rule.hopeless_from * length:
        return ""
    ranked = sorted(finished, key=lambda f: f[0])
    good = ranked[: max(1, len(ranked) // 2)]
    at_step = [curve[last.step] for _, curve in good if last.step in curve]
    if len(at_step) < rule.min_references:
        return ""
    limit = rule.hopeless_ratio * max(at_step)
    margin = rule.std_margin * (last.fid_std if math.isfinite(last.fid_std) else 0.0)
    if last.fid - margin > limit:
        return (
            f"no hope at step {last.step}: FID {last.fid:.1f} is over {rule.hopeless_ratio:g} "
            f"times {max(at_step):.1f}, the worst the better half of the finished trials had "
            "there"
        )
    return ""
