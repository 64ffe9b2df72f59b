"""A worker: pulls trials of a study, trains them, reports FID, obeys the pruner.

Any number of workers, on any number of machines, share one study through its storage. The
total trial budget is exact: a worker counts the started trials and starts a new one under
:func:`ganhpo.storage.budget_lock`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ganhpo.errors import DivergenceError, GanhpoError
from ganhpo.spec import StudySpec
from ganhpo.storage import budget_lock
from ganhpo.study import suggest_params
from ganhpo.train import EvalRecord, TrainConfig, Trainer

__all__ = ["STARTED_STATES", "Worker", "WorkerOptions", "WorkerSummary", "trial_seed"]

logger = logging.getLogger(__name__)

# States of trials that count against the total budget.
STARTED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class WorkerOptions:
    """What one ``ganhpo worker`` process does."""

    n_trials: int | None = None  # this worker's own limit
    timeout: float | None = None  # seconds after which no new trial is started
    max_total_trials: int | None = None  # the study's budget, shared by all workers
    device: str | None = None  # overrides the spec's device
    data_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    out_dir: str | Path | None = None  # sample grids per trial, when given


@dataclass
class WorkerSummary:
    """What a worker did."""

    trials: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


def trial_seed(spec: StudySpec, number: int) -> int:
    """The training seed of trial ``number``: distinct per trial, reproducible per study."""
    return (spec.seed * 1_000_003 + number) % 2**31


class Worker:
    """Runs trials of one study until a limit is reached."""

    def __init__(self, study: optuna.Study, spec: StudySpec, options: WorkerOptions) -> None:
        from ganhpo.data import load_dataset

        self.study = study
        self.spec = spec
        self.options = options
        self.budget = options.max_total_trials or spec.max_trials
        base = spec.base
        if options.device:
            base = dataclasses.replace(base, device=options.device)
        self.base: TrainConfig = base
        ds = base.dataset
        # Loaded once per worker, shared by all its trials.
        self.data = load_dataset(
            ds.name,
            split=ds.split,
            data_dir=options.data_dir,
            resolution=ds.resolution,
            channels=ds.channels,
            path=ds.path,
            limit=ds.limit,
        )
        self._evaluator: Any = None
        self.host = socket.gethostname()

    # ----------------------------------------------------------------- budget
    def _started(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=STARTED_STATES))

    def next_trial(self) -> optuna.Trial | None:
        """Start the next trial, or None when the study's budget is spent."""
        storage = self.study._storage
        with budget_lock(storage, self.study.study_name):  # type: ignore[arg-type]
            if self.budget is not None and self._started() >= self.budget:
                return None
            return self.study.ask()

    # ------------------------------------------------------------------- loop
    def run(self) -> WorkerSummary:
        """Run trials until this worker's limit, the study's budget or the timeout."""
        summary = WorkerSummary()
        start = time.monotonic()
        while True:
            if self.options.n_trials is not None and len(summary.trials) >= self.options.n_trials:
                summary.stop_reason = f"ran its {self.options.n_trials} trials"
                break
            if (
                self.options.timeout is not None
                and time.monotonic() - start >= self.options.timeout
            ):
                summary.stop_reason = f"timeout of {self.options.timeout:g}s reached"
                break
            trial = self.next_trial()
            if trial is None:
                summary.stop_reason = f"the study's budget of {self.budget} trials is spent"
                break
            state = self.run_trial(trial)
            summary.trials.append(trial.number)
            summary.states[state.name] = summary.states.get(state.name, 0) + 1
        logger.info(
            "worker done: %s; %d trial(s) here (%s)",
            summary.stop_reason,
            len(summary.trials),
            ", ".join(f"{k.lower()} {v}" for k, v in sorted(summary.states.items())) or "none",
        )
        return summary

    def _config_for(self, trial: optuna.Trial) -> TrainConfig:
        params = suggest_params(trial, self.spec)
        baseline = trial.user_attrs.get("baseline")
        if baseline:  # a known-good configuration: its unsearched values apply too
            params = {**baseline, **params}
        seed = trial_seed(self.spec, trial.number)
        return dataclasses.replace(self.base.replace_params(**params), seed=seed)

    def evaluator(self, config: TrainConfig) -> Any:
        """One evaluator per worker: the real statistics are computed (or loaded) once."""
        from ganhpo.metrics import Evaluator

        if self._evaluator is None:
            self._evaluator = Evaluator(
                self.data,
                extractor=config.eval.extractor,
                device=Trainer.device_for(config),
                cache_dir=self.options.cache_dir,
                seed=config.eval.seed,
                latent_dim=config.model.latent_dim,
            )
        return self._evaluator

    def run_trial(self, trial: optuna.Trial) -> TrialState:
        """Train one trial and tell the study how it ended; never raises for a bad trial."""
        objective = self.spec.objective
        started = time.monotonic()
        attrs: dict[str, Any] = {"host": self.host}
        pruned_at: list[int] = []
        best = self._best_value()

        def on_eval(record: EvalRecord) -> None:
            value = record.fid if objective == "fid" else record.kid
            trial.report(value, record.step)
            logger.info(
                "trial %d  %s%s",
                trial.number,
                record.describe(config.train.steps),
                f"  (best so far {best:.3f})" if best is not None else "",
            )
            if not record.final and trial.should_prune():
                pruned_at.append(record.step)

        try:
            config = self._config_for(trial)
            attrs |= {"seed": config.seed, "device": str(Trainer.device_for(config))}
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            out = (
                Path(self.options.out_dir) / f"trial_{trial.number:05d}"
                if self.options.out_dir
                else None
            )
            trainer = Trainer(config, data=self.data, evaluator=self.evaluator(config), out_dir=out)
            logger.info("trial %d started: %s", trial.number, _short(trial.params))
            result = trainer.run(on_eval=on_eval, should_stop=lambda: bool(pruned_at))
        except DivergenceError as e:
            reason = f"diverged at step {e.step}: {e}"
            return self._finish(trial, TrialState.PRUNED, reason, started, None, step=e.step)
        except GanhpoError as e:
            return self._finish(trial, TrialState.FAIL, f"failed: {e}", started, None)
        except Exception as e:  # one trial's crash must never kill the worker
            logger.debug("trial %d crashed:\n%s", trial.number, traceback.format_exc())
            reason = f"failed: {type(e).__name__}: {e}"
            if _is_oom(e):
                reason = f"failed: out of memory on the device ({e})"
            return self._finish(trial, TrialState.FAIL, reason, started, None)
        if pruned_at:
            return self._finish(
                trial, TrialState.PRUNED, f"pruned at step {pruned_at[0]}", started, result
            )
        return self._finish(trial, TrialState.COMPLETE, "completed", started, result)

    def _finish(
        self,
        trial: optuna.Trial,
        state: TrialState,
        reason: str,
        started: float,
        result: Any,
        *,
        step: int | None = None,
    ) -> TrialState:
        attrs: dict[str, Any] = {"status": reason, "wall_time": time.monotonic() - started}
        value: float | None = None
        if result is not None:
            attrs |= {
                "steps": result.steps,
                "images_per_sec": result.images_per_sec,
                "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds,
            }
            last = result.last
            if last is not None:
                attrs |= {"fid": last.fid, "kid": last.kid, "kid_std": last.kid_std}
                if last.grid:
                    attrs["grid"] = last.grid
            if result.final is not None:
                final = result.final
                value = final.fid if self.spec.objective == "fid" else final.kid
        elif step is not None:
            attrs["steps"] = step
        for key, v in attrs.items():
            trial.set_user_attr(key, v)
        if state == TrialState.COMPLETE:
            assert value is not None and math.isfinite(value)
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)
        log = logger.info if state != TrialState.FAIL else logger.warning
        log("trial %d %s (%s, %.0fs)", trial.number, state.name.lower(), reason, attrs["wall_time"])
        return state

    def _best_value(self) -> float | None:
        try:
            return float(self.study.best_value)
        except ValueError:
            return None


def _short(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
