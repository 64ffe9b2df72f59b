"""A worker: pulls trials of a study, trains them, reports FID, obeys the pruner.

Any number of workers, on any number of machines, share one study through its storage:

- the total trial budget is exact: a worker counts the started trials and starts a new one
  under :func:`ganhpo.storage.budget_lock`;
- a running trial heartbeats; one whose worker died is failed after the grace period and
  re-enqueued (Optuna's ``RetryHeartbeatStaleTrialCallback``), and whoever picks it up resumes
  from its last checkpoint in the shared artifact store;
- SIGTERM/Ctrl-C checkpoints the running trial and hands it back; a second one exits at once;
- database errors are retried with backoff, so a restarting server does not lose a trial.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ganhpo.artifacts import (
    open_artifact_store,
    read_artifact,
    remove_artifact,
    write_artifact,
)
from ganhpo.errors import CheckpointError, DivergenceError, GanhpoError, StorageError
from ganhpo.spec import StudySpec
from ganhpo.storage import budget_lock
from ganhpo.study import apply_params, suggest_params
from ganhpo.train import EvalRecord, Progress, TrainConfig, Trainer, parse_checkpoint

__all__ = [
    "STARTED_STATES",
    "Worker",
    "WorkerOptions",
    "WorkerSummary",
    "counted_trials",
    "open_worker_study",
    "retry_callback",
    "trial_seed",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# States of trials that count against the total budget (unless handed over to a retry).
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
    artifacts: str | None = None  # artifact store location (see ganhpo.artifacts)
    db_retry_timeout: float = 300.0  # how long database errors are retried before giving up


@dataclass
class WorkerSummary:
    """What a worker did."""

    trials: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


def trial_seed(spec: StudySpec, number: int) -> int:
    """The training seed of trial ``number``: distinct per trial, reproducible per study."""
    return (spec.seed * 1_000_003 + number) % 2**31


def retry_callback(spec: StudySpec) -> RetryHeartbeatStaleTrialCallback:
    """Re-enqueues a failed trial, keeping its attributes (its checkpoint) and its FID curve."""
    return RetryHeartbeatStaleTrialCallback(
        max_retry=spec.max_retry, inherit_intermediate_values=True
    )


def open_worker_study(
    name: str, open_storage: Callable[..., optuna.storages.RDBStorage]
) -> tuple[optuna.Study, StudySpec, optuna.storages.RDBStorage]:
    """The study, its spec and its storage as a worker needs them.

    ``open_storage(**heartbeat_settings)`` opens the study database. It is opened once to read
    the spec, then again with the study's heartbeat settings and stale-trial callback, so that
    dead workers' trials get handed over.
    """
    from ganhpo.study import load_study, study_spec

    first = open_storage()
    spec = study_spec(load_study(name, first))
    first.engine.dispose()
    storage = open_storage(
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        stale_trial_callback=retry_callback(spec),
    )
    return load_study(name, storage), spec, storage


def counted_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: started ones, a handed-over chain counted once."""
    trials = study.get_trials(deepcopy=False)
    handed_over = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if t.state in STARTED_STATES and t.number not in handed_over)


def _is_transient(e: BaseException) -> bool:
    """A database error that waiting can cure (a restart, a dropped connection)."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class _Heartbeat(threading.Thread):
    """Records a trial's heartbeat every interval; survives database hiccups (unlike Optuna's)."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        super().__init__(name=f"heartbeat-{trial_id}", daemon=True)
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as e:  # the next beat retries; the grace period absorbs a few misses
                logger.debug("heartbeat of trial id %d failed: %s", self._trial_id, e)
            if self._stop_event.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Worker:
    """Runs trials of one study until a limit is reached."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        options: WorkerOptions,
        *,
        storage: optuna.storages.RDBStorage,
    ) -> None:
        from ganhpo.data import load_dataset

        self.study = study
        self.spec = spec
        self.options = options
        self.storage = storage  # the RDB storage itself, for heartbeats and the budget lock
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
        self.artifacts = open_artifact_store(options.artifacts) if options.artifacts else None
        self._evaluator: Any = None
        self.host = socket.gethostname()
        self.stop_requested: str | None = None  # the signal that asked this worker to stop

    # ---------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the step, checkpoint, hand the trial back; twice: exit now."""

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.stop_requested is not None:
                raise KeyboardInterrupt(f"second {name}")
            self.stop_requested = name
            logger.warning("%s: checkpointing and handing the trial back (again to quit now)", name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # --------------------------------------------------------------- database
    def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a storage operation, retrying transient database errors with backoff."""
        deadline = time.monotonic() + self.options.db_retry_timeout
        delay = 1.0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not _is_transient(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"the study database was unreachable for {self.options.db_retry_timeout:g}"
                        " s; check the server, then restart the worker (its trial is resumed)"
                    ) from None
                logger.warning("database unavailable; retrying in %.0f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    # ----------------------------------------------------------------- budget
    def next_trial(self) -> optuna.Trial | None:
        """Start the next trial, or None when the study's budget is spent."""
        with budget_lock(self.storage, self.study.study_name):
            if self.budget is not None and counted_trials(self.study) >= self.budget:
                return None
            return self.study.ask()

    def _running(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    # ------------------------------------------------------------------- loop
    def run(self) -> WorkerSummary:
        """Run trials until this worker's limit, the study's budget or the timeout."""
        summary = WorkerSummary()
        start = time.monotonic()
        waiting_logged = False
        while True:
            if self.stop_requested:
                summary.stop_reason = f"stopped by {self.stop_requested}"
                break
            if self.options.n_trials is not None and len(summary.trials) >= self.options.n_trials:
                summary.stop_reason = f"ran its {self.options.n_trials} trials"
                break
            if (
                self.options.timeout is not None
                and time.monotonic() - start >= self.options.timeout
            ):
                summary.stop_reason = f"timeout of {self.options.timeout:g}s reached"
                break
            # Trials whose worker died are failed and re-enqueued here, by whoever comes first.
            self._db(optuna.storages.fail_stale_trials, self.study)
            trial = self._db(self.next_trial)
            if trial is None:
                running = self._db(self._running)
                if not running:
                    summary.stop_reason = f"the study's budget of {self.budget} trials is spent"
                    break
                # Stay until the running trials end: if their worker dies, one is taken over.
                if not waiting_logged:
                    logger.info(
                        "budget spent; waiting for %d running trial(s) to end, ready to take "
                        "over any whose worker dies",
                        running,
                    )
                    waiting_logged = True
                time.sleep(min(self.spec.heartbeat_interval, 5))
                continue
            waiting_logged = False
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

    # ------------------------------------------------------------------ trial
    def _config_for(self, trial: optuna.Trial) -> TrainConfig:
        config = apply_params(
            self.spec,
            suggest_params(trial, self.spec),
            trial.user_attrs,
            default_seed=trial_seed(self.spec, trial.number),
        )
        return dataclasses.replace(config, device=self.base.device)

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

    def _resume(self, trial: optuna.Trial, trainer: Trainer) -> None:
        """Continue a handed-over trial from the checkpoint its predecessor left."""
        # A live Trial has no system_attrs: read the frozen trial from the storage.
        frozen = self._db(self.storage.get_trial, trial._trial_id)
        history = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        if not history:
            return
        checkpoint = trial.user_attrs.get("checkpoint")
        step = 0
        if checkpoint and self.artifacts is not None:
            try:
                data = read_artifact(self.artifacts, checkpoint["id"])
                trainer.load_state_dict(parse_checkpoint(data, source="the trial's checkpoint"))
                step = trainer.step
            except (OSError, CheckpointError, optuna.artifacts.exceptions.ArtifactNotFound) as e:
                logger.warning("trial %d: checkpoint unusable (%s); from step 0", trial.number, e)
        self._db(trial.set_user_attr, "resumed_from_trial", history[-1])
        self._db(trial.set_user_attr, "resumed_at_step", step)
        logger.info("trial %d resumes trial %d at step %d", trial.number, history[-1], step)

    def _save_checkpoint(self, trial: optuna.Trial, trainer: Trainer) -> None:
        if self.artifacts is None:
            return
        old = trial.user_attrs.get("checkpoint")
        new_id = write_artifact(self.artifacts, trainer.checkpoint_bytes(), kind="checkpoint")
        self._db(trial.set_user_attr, "checkpoint", {"id": new_id, "step": trainer.step})
        if old:  # replaced, not accumulated
            remove_artifact(self.artifacts, old["id"])

    def _drop_checkpoint(self, trial: optuna.Trial) -> None:
        old = trial.user_attrs.get("checkpoint")
        if old and self.artifacts is not None:
            remove_artifact(self.artifacts, old["id"])
            self._db(trial.set_user_attr, "checkpoint", None)

    def _upload(self, trial: optuna.Trial, data: bytes, filename: str) -> str | None:
        """Attach a file to the trial in the artifact store (optuna-dashboard lists it)."""
        if self.artifacts is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            return self._db(
                optuna.artifacts.upload_artifact,
                artifact_store=self.artifacts,
                file_path=str(path),
                study_or_trial=trial,
            )

    def run_trial(self, trial: optuna.Trial) -> TrialState:
        """Train one trial and tell the study how it ended; never raises for a bad trial."""
        objective = self.spec.objective
        started = time.monotonic()
        pruned_at: list[int] = []
        best = self._best_value()
        heartbeat = _Heartbeat(self.storage, trial._trial_id, self.spec.heartbeat_interval)
        heartbeat.start()
        grids = Path(tempfile.mkdtemp(prefix="ganhpo-grids-"))  # uploaded, then deleted
        try:
            config = self._config_for(trial)
            attrs = {"host": self.host, "seed": config.seed, "device": str(config.device)}
            attrs["device"] = str(Trainer.device_for(config))
            for key, value in attrs.items():
                self._db(trial.set_user_attr, key, value)
            trainer = Trainer(
                config, data=self.data, evaluator=self.evaluator(config), out_dir=grids
            )

            def on_eval(record: EvalRecord) -> None:
                value = record.fid if objective == "fid" else record.kid
                self._db(trial.report, value, record.step)
                logger.info(
                    "trial %d  %s%s",
                    trial.number,
                    progress.line(record),
                    f"  (best so far {best:.3f})" if best is not None else "",
                )
                if record.grid is not None:
                    name = "grid_final.png" if record.final else f"grid_step_{record.step:07d}.png"
                    grid_id = self._upload(trial, Path(record.grid).read_bytes(), name)
                    if grid_id:
                        self._db(trial.set_user_attr, "grid", grid_id)
                if not record.final and self._db(trial.should_prune):
                    pruned_at.append(record.step)

            self._resume(trial, trainer)
            progress = Progress(config.train.steps, trainer.step)
            logger.info("trial %d started: %s", trial.number, _short(trial.params))
            result = trainer.run(
                on_eval=on_eval,
                should_stop=lambda: bool(pruned_at) or self.stop_requested is not None,
                on_checkpoint=lambda step: self._save_checkpoint(trial, trainer),
            )
        except DivergenceError as e:
            self._drop_checkpoint(trial)
            reason = f"diverged at step {e.step}: {e}"
            return self._finish(trial, TrialState.PRUNED, reason, started, None, step=e.step)
        except StorageError:
            raise  # the database is gone for good: the trial is resumed once it is back
        except GanhpoError as e:
            return self._finish(trial, TrialState.FAIL, f"failed: {e}", started, None)
        except KeyboardInterrupt:
            raise  # a second signal: leave the trial RUNNING; it is taken over after the grace
        except Exception as e:  # one trial's crash must never kill the worker
            logger.debug("trial %d crashed:\n%s", trial.number, traceback.format_exc())
            reason = f"failed: {type(e).__name__}: {e}"
            if _is_oom(e):
                reason = f"failed: out of memory on the device ({e})"
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            return self._finish(trial, TrialState.FAIL, reason, started, None)
        finally:
            heartbeat.stop()
            shutil.rmtree(grids, ignore_errors=True)
        if pruned_at:
            self._drop_checkpoint(trial)
            reason = f"pruned at step {pruned_at[0]}"
            return self._finish(trial, TrialState.PRUNED, reason, started, result)
        if result.stopped_early:  # a signal: checkpoint and hand the trial back
            self._save_checkpoint(trial, trainer)
            reason = f"interrupted by {self.stop_requested} at step {result.steps}: handed back"
            state = self._finish(trial, TrialState.FAIL, reason, started, result)
            frozen = self._db(self.storage.get_trial, trial._trial_id)
            self._db(retry_callback(self.spec), self.study, frozen)
            return state
        self._drop_checkpoint(trial)
        buffer = io.BytesIO()
        torch.save(
            {"config": dataclasses.asdict(config), "G": trainer.generator.state_dict()}, buffer
        )
        generator_id = self._upload(trial, buffer.getvalue(), "generator.pt")
        if generator_id:
            self._db(trial.set_user_attr, "generator", generator_id)
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
                attrs["fid"] = last.fid
                if not math.isnan(last.kid):  # KID is computed where [eval] kid asks for it
                    attrs |= {"kid": last.kid, "kid_std": last.kid_std}
            if result.final is not None:
                final = result.final
                value = final.fid if self.spec.objective == "fid" else final.kid
        elif step is not None:
            attrs["steps"] = step
        for key, v in attrs.items():
            self._db(trial.set_user_attr, key, v)
        try:
            if state == TrialState.COMPLETE:
                assert value is not None and math.isfinite(value)
                self._db(self.study.tell, trial, value)
            else:
                self._db(self.study.tell, trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker took this trial for dead (a long database outage) and failed it;
            # its retry carries on from the checkpoint.
            logger.warning("trial %d was already finished elsewhere", trial.number)
        log = logger.info if state != TrialState.FAIL else logger.warning
        log("trial %d %s (%s, %.0fs)", trial.number, state.name.lower(), reason, attrs["wall_time"])
        return state

    def _best_value(self) -> float | None:
        try:
            return float(self._db(lambda: self.study.best_value))
        except ValueError:
            return None


def _short(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
