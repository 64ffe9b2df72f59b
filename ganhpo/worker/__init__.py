"""Workers: pull trials of a study, train them, report FID, hand trials over when they must.

- :mod:`ganhpo.worker._worker`: the worker loop and the running of one trial;
- :mod:`ganhpo.worker._handover`: stale trials, hand-backs, their repair, the sweep of
  checkpoints no trial needs;
- :mod:`ganhpo.worker._strategy`: what the worker asks after each evaluation (Optuna's pruner,
  or population-based training).

The budget is counted by :func:`ganhpo.chains.read_ledger`.
"""

from __future__ import annotations

from ganhpo.chains import HANDOVER_ATTR, STARTED_STATES, chain_links, counted_trials
from ganhpo.worker._handover import (
    fail_stale_trials,
    hand_over,
    repair,
    retry_trial,
)
from ganhpo.worker._worker import (
    STOP_GRACE_S,
    Worker,
    WorkerOptions,
    WorkerSummary,
    open_worker_study,
    trial_seed,
)

__all__ = [
    "HANDOVER_ATTR",
    "STARTED_STATES",
    "STOP_GRACE_S",
    "Worker",
    "WorkerOptions",
    "WorkerSummary",
    "chain_links",
    "counted_trials",
    "fail_stale_trials",
    "hand_over",
    "open_worker_study",
    "repair",
    "retry_trial",
    "trial_seed",
]
