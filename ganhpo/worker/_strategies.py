"""The strategy a study's spec names: a registry over the strategies' own modules."""

from __future__ import annotations

from ganhpo.spec import StudySpec
from ganhpo.worker._grow import GrowStrategy
from ganhpo.worker._strategy import OptunaStrategy, PBTStrategy, Strategy

__all__ = ["strategy_for"]


def strategy_for(spec: StudySpec) -> Strategy:
    """The strategy a study's spec names (``[strategy] name``)."""
    if spec.strategy.name == "pbt":
        return PBTStrategy(spec.strategy)
    if spec.strategy.name == "grow":
        return GrowStrategy(spec.strategy)
    return OptunaStrategy(spec.strategy)
