"""A worker: pulls trials of a study, trains them, reports FID, obeys the pruner.

Any number of workers, on any number of machines, share one study through its storage:

- the total trial budget is exact: a worker counts the started trials and starts a new one
  under :func:`ganhpo.storage.budget_lock`;
- a running trial heartbeats; one whose worker died is handed over after the grace period
  (:mod:`ganhpo.worker._handover`), and whoever picks it up resumes from its last checkpoint in
  the shared artifact store;
- SIGTERM/Ctrl-C checkpoints the running trial and hands it back; a second one exits at once;
- a worker whose trial was taken over while it was frozen drops its copy and goes on;
- database errors are retried with backoff, so a restarting server does not lose a trial;
- failures that are not the trial's fault (a broken artifact store, dataset or extractor, the
  same error twice in a row) hand the trial back and stop the worker instead of spending the
  budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
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
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ganhpo._failpoints import failpoint
from ganhpo._optuna import (
    forget_sampled_trials,
    record_artifact,
    storage_of,
    study_id_of,
    trial_id_of,
    update_trial_copy,
)
from ganhpo.artifacts import (
    PatientStore,
    dashboard_artifact_id,
    mimetype_of,
    new_artifact_id,
    open_artifact_store,
    read_artifact,
    remove_artifact,
    write_artifact,
)
from ganhpo.chains import (
    CHECKPOINT_ATTR,
    CHECKPOINT_PENDING_ATTR,
    OVER_ESTIMATE_ATTR,
    Ledger,
    checkpoint_files,
    checkpoint_ids,
    checkpoint_of,
    pending_checkpoint_of,
    read_ledger,
    retry_history,
)
from ganhpo.components import STD_ATTRS
from ganhpo.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    ExtractorError,
    GanhpoError,
    ModelImportError,
    StorageError,
)
from ganhpo.spec import StudySpec
from ganhpo.storage import (
    at_connection_limit,
    budget_lock,
    cache_trial,
    record_heartbeat,
    set_user_attrs,
    take_trial_id,
)
from ganhpo.study import REAL_IMAGES_ATTR, apply_params, suggest_params
from ganhpo.train import EvalRecord, Progress, TrainConfig, Trainer, count_params, parse_checkpoint
from ganhpo.train.export import dump_generator
from ganhpo.train.models import import_builder
from ganhpo.worker._handover import (
    TakenOver as _TakenOver,
)
from ganhpo.worker._handover import (
    fail_stale_trials,
    hand_over,
    repair,
    retry_trial,
    study_key,
    sweep_checkpoints,
    trial_by_number,
)
from ganhpo.worker._strategies import strategy_for
from ganhpo.worker._strategy import Strategy

__all__ = [
    "STOP_GRACE_S",
    "Worker",
    "WorkerOptions",
    "WorkerSummary",
    "open_worker_study",
    "trial_seed",
]

logger = logging.getLogger("ganhpo.worker")
T = TypeVar("T")

# After SIGTERM, database calls are retried for at most this long: a worker asked to stop exits
# within seconds even when the database is down (its trial is then taken over after the grace
# period, from its last recorded checkpoint).
STOP_GRACE_S = 10.0

# A server at its connection limit is waited for as long as it takes, with a warning this often.
FULL_SERVER_WARN_S = 300.0

# A link of a trial that has not measured its step time yet trains this many steps, reserved
# at the slowest rate the study has measured, before it reserves the rest of its interval at
# its own rate (a device-time budget only): its first interval may be a resnet's after many
# dcgan ones. The trainer times its first steps exactly (synchronised on CUDA).
CALIBRATION_STEPS = Trainer.TIMED_FIRST_STEPS

# Failures that come from where the worker runs, not from the trial's parameters: every trial
# would fail the same way here, so the trial is handed back and the worker stops.
_ENVIRONMENT_ERRORS = (OSError, ImportError, DataError, ExtractorError, ModelImportError)


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
    store_retry_timeout: float = 300.0  # how long an unavailable artifact store is waited for


@dataclass
class WorkerSummary:
    """What a worker did."""

    trials: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


def trial_seed(spec: StudySpec, number: int) -> int:
    """The training seed of trial ``number``: distinct per trial, reproducible per study."""
    return (spec.seed * 1_000_003 + number) % 2**31


def open_worker_study(
    name: str, open_storage: Callable[..., optuna.storages.RDBStorage]
) -> tuple[optuna.Study, StudySpec, optuna.storages.RDBStorage]:
    """The study, its spec and its storage as a worker needs them.

    ``open_storage(**heartbeat_settings)`` opens the study database. It is opened once to read
    the spec, then again with the study's heartbeat interval and grace period. Stale trials are
    handed over by :func:`ganhpo.worker._handover.fail_stale_trials`, not by an Optuna callback
    (whose fail-then-retry is two transactions that nobody repairs).
    """
    from ganhpo.study import load_study, study_spec

    first = open_storage()
    spec = study_spec(load_study(name, first))
    first.engine.dispose()
    storage = open_storage(
        heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period
    )
    return load_study(name, storage), spec, storage


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
    """Records a trial's heartbeat every interval; survives database hiccups (unlike Optuna's).

    It also notices when the trial is no longer RUNNING (another worker took it for dead while
    this process was frozen): ``lost`` is then set, and the trial stops at its next step.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        super().__init__(name=f"heartbeat-{trial_id}", daemon=True)
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop_event = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while True:
            try:
                if record_heartbeat(self._storage, self._trial_id) != TrialState.RUNNING:
                    self.lost.set()
                    return
            except Exception as e:  # the next beat retries; the grace period absorbs a few misses
                logger.debug("heartbeat of trial id %d failed: %s", self._trial_id, e)
            if self._stop_event.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _failure_signature(reason: str) -> str:
    """A failure's reason with its numbers blanked: the same error in two trials looks equal."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", reason)


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
        from ganhpo.train import load_training_data

        self.study = study
        self.spec = spec
        self.strategy: Strategy = strategy_for(spec)
        self.options = options
        self.storage = storage  # the RDB storage itself, for heartbeats and the budget lock
        self.budget = options.max_total_trials or spec.max_trials  # trials, shared
        self.max_steps = spec.max_steps  # training steps over all trials, shared
        self.steps_spent = 0  # of max_steps, as last seen under the budget lock
        # Device seconds (training and evaluation) over all trials, shared.
        self.max_seconds = (
            spec.max_device_hours * 3600 if spec.max_device_hours is not None else None
        )
        self.seconds_spent = 0.0  # of max_seconds, as last seen under the budget lock
        self._link_start = _Clock()  # the running trial's clock when this link of it began
        self.ledger: Ledger | None = None  # the study's budget, as next_trial last read it
        # Whether the ledger sums the compute spent (a compute budget needs it).
        self._costs_counted = self.max_steps is not None or self.max_seconds is not None
        self.spent = ""  # which budget is spent, once one is
        base = spec.base
        if options.device:
            base = dataclasses.replace(base, device=options.device)
        self.base: TrainConfig = base
        ds = base.dataset
        # Loaded once per worker, shared by all its trials.
        self.data = load_training_data(ds, options.data_dir)
        # A store that goes away is waited for (PatientStore); the preflight tries the store
        # itself, so that one that does not work at all stops the worker at once.
        self.artifacts = (
            PatientStore(
                open_artifact_store(options.artifacts),
                options.store_retry_timeout,
                stopping=lambda: self.stop_requested is not None,
                location=options.artifacts,
            )
            if options.artifacts
            else None
        )
        self._evaluator: Any = None
        self.host = socket.gethostname()
        self.stop_requested: str | None = None  # the signal that asked this worker to stop
        self._stop_deadline = math.inf  # database calls give up then, once a stop was asked
        self._last_failure: tuple[int, str] | None = None  # (trial number, signature)
        self._study_key: str | None = None  # names its checkpoint files (new_checkpoint_id)
        # The checkpoint files the running trial names, as this worker last recorded them (its
        # system attributes CHECKPOINT_ATTR and CHECKPOINT_PENDING_ATTR): trial number ->
        # ({"id", "step"} or None, pending id or None).
        self._files: dict[int, tuple[dict[str, Any] | None, str | None]] = {}

    # ---------------------------------------------------------------- checks
    def preflight(self) -> None:
        """Check, before taking any trial, what every trial needs: the artifact store takes a
        write, a read and a delete; the feature extractor loads and scores the real data.

        A broken environment then stops the worker with one line instead of failing (and
        spending) the study's budget one trial at a time.
        """
        if self.artifacts is not None:
            probe = b"ganhpo artifact store probe"
            try:
                store = self.artifacts.store
                artifact_id = write_artifact(store, probe, kind="probe")
                ok = read_artifact(store, artifact_id) == probe
                remove_artifact(store, artifact_id)
            except Exception as e:
                raise ConfigError(
                    f"the artifact store {self.options.artifacts} is not usable ({e}); make it "
                    "writable from this machine or pass --artifacts DIR"
                ) from e
            if not ok:
                raise ConfigError(
                    f"the artifact store {self.options.artifacts} returned other bytes than were "
                    "written; check the mount, or pass --artifacts DIR"
                )
        self.evaluator(self.base)  # builds the extractor and the real statistics (cached)
        if self.base.model.custom:  # a user's networks: their package must be installed here
            import_builder(self.base.model.arch)
        self._score_real_images()

    def _score_real_images(self) -> None:
        """Record, once per study, what real images the search never saw score (the floor a
        person reads every trial's FID against: ``study show``, the dashboard's study page).
        The first workers of a study do it (a few at once write the same); a study without
        such images has none."""
        from ganhpo.results import held_out_images, real_images_score

        if REAL_IMAGES_ATTR in self._db(lambda: self.study.user_attrs):
            return
        try:
            held = held_out_images(
                self.base.dataset, self.study.study_name, data_dir=self.options.data_dir
            )
        except (ConfigError, DataError) as e:
            logger.debug("no real images to score: %s", e)
            return
        score = real_images_score(self.evaluator(self.base), held, self.base.eval.final_samples)
        self._db(self.study.set_user_attr, REAL_IMAGES_ATTR, score)
        logger.info(
            "real images the search never saw (%s split, %d) score FID %s: a trial's floor",
            held.split,
            score["samples"],
            "nan" if score["fid"] is None else f"{score['fid']:.3f}",
        )

    # ---------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the step, checkpoint, hand the trial back; twice: exit now."""

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.stop_requested is not None:
                raise KeyboardInterrupt(f"second {name}")
            self.stop_requested = name
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
            logger.warning("%s: checkpointing and handing the trial back (again to quit now)", name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # --------------------------------------------------------------- database
    def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a storage operation, retrying transient database errors with backoff.

        A write to a trial that another worker has finished raises :class:`_TakenOver`. A server
        at its ``max_connections`` answers, so it is no outage: the call waits for a free
        connection as long as it takes (a warning every :data:`FULL_SERVER_WARN_S`), where an
        unreachable server is given up on after ``--db-retry-timeout``. Once a stop was asked
        for, retries end after :data:`STOP_GRACE_S`.
        """
        # From the first failure: a call that waited long before it failed (the process was
        # frozen inside it) has its whole retry time still ahead.
        deadline = math.inf
        delay = 1.0
        full_since: float | None = None
        warned = 0.0
        while True:
            try:
                return fn(*args, **kwargs)
            except UpdateFinishedTrialError as e:
                raise _TakenOver(str(e)) from e
            except Exception as e:
                if not _is_transient(e):
                    raise
                now = time.monotonic()
                full = at_connection_limit(e)
                if full:
                    deadline = math.inf  # the server is there: wait as long as it takes
                    full_since = full_since if full_since is not None else now
                    if now - full_since - warned >= FULL_SERVER_WARN_S:
                        warned = now - full_since
                        logger.warning(
                            "the database server has been full (too many clients) for %.0f s; "
                            "waiting. More workers than its max_connections talk at once: put "
                            "PgBouncer in front of it (docs/machines.md, 'How many workers one "
                            "database serves')",
                            warned,
                        )
                else:
                    deadline = min(deadline, now + self.options.db_retry_timeout)
                if now + delay > min(deadline, self._stop_deadline):
                    raise StorageError(
                        f"the study database was unreachable for {self.options.db_retry_timeout:g}"
                        " s; check the server, then restart the worker (its trial is resumed)"
                        if self.stop_requested is None
                        else "the study database is unreachable"
                    ) from None
                pause = delay * random.uniform(0.5, 1.5)  # many workers retry apart
                if full:  # back-pressure, not an outage
                    logger.info(
                        "the database server is at its connection limit (too many clients); "
                        "retrying in %.1f s",
                        pause,
                    )
                else:
                    logger.warning("database unavailable; retrying in %.1f s", pause)
                # Short naps: a SIGTERM meanwhile shortens the deadline at once.
                wake = time.monotonic() + pause
                while time.monotonic() < min(wake, self._stop_deadline):
                    time.sleep(0.2)
                delay = min(delay * 2, 15.0)

    # ----------------------------------------------------------------- budget
    def next_trial(self) -> optuna.Trial | None:
        """Start the next trial, or None when the study's budget is spent.

        Under the budget lock: missing retries of handed-over trials are enqueued first (a
        worker may have died between failing a trial and enqueuing its retry), then the budget
        is counted, then a trial is taken (a waiting retry before a new one). A waiting retry
        is taken even when no compute is left, so that it ends instead of waiting forever.
        After the lock, the trial is opened for sampling (:meth:`_open`), in a database call
        of its own: an outage then retries the opening, not the taking of another trial.
        """
        trial_id = self._db(self._take)
        if trial_id is None:
            return None
        trial = self._db(self._open, trial_id)
        failpoint("worker:asked")
        return trial

    def _take(self) -> int | None:
        """The id of the trial this worker starts, under the budget lock (see next_trial).

        The ledger is read first without the lock: when it shows nothing to take (no budget
        left for a new trial, nothing waiting, nothing to repair), as it does for every worker
        that waits for a study's last trials, the worker says so without queueing for the lock
        every worker's start goes through. What the lock guards is decided under it.
        """
        ledger = self.ledger = read_ledger(self.study, costs=self._costs_counted)
        refused = self._refused(ledger)
        if (
            refused
            and not ledger.marked
            and (not ledger.waiting or self._out_of_trials(ledger))
            and not self.strategy.growth_due(self.spec, ledger, refused)
        ):
            self.spent = refused
            return None
        with budget_lock(self.storage, self.study.study_name):
            ledger = self.ledger = read_ledger(self.study, costs=self._costs_counted)
            failpoint("lock:held")
            if repair(self.study, max_retry=self.spec.max_retry, ledger=ledger):
                ledger = self.ledger = read_ledger(self.study, costs=self._costs_counted)
            refused = self._refused(ledger)
            # The search is over and its last trials have ended: the best ones grow (a
            # strategy that grows them; once per study).
            if self.strategy.growth_due(self.spec, ledger, refused) and self.strategy.grow(
                self.study, self.spec, ledger
            ):
                failpoint("grow:enqueued")
                ledger = self.ledger = read_ledger(self.study, costs=self._costs_counted)
                refused = self._refused(ledger)
            if self._out_of_trials(ledger):
                self.spent = refused
                return None
            # A waiting trial (a retry, a PBT member) is taken even when no compute is left,
            # so that it ends instead of waiting forever; a new one only if its first
            # evaluation interval fits.
            trial_id = take_trial_id(self.study, create=not refused)
            if trial_id is None:
                self.spent = refused
            return trial_id

    def _out_of_trials(self, ledger: Ledger) -> bool:
        return self.budget is not None and ledger.counted >= self.budget

    def _refused(self, ledger: Ledger) -> str:
        """Why no new trial may start, by the study's budgets as ``ledger`` counts them ("" when
        one may): its trials are spent, or its first evaluation interval does not fit in the
        compute left."""
        self.steps_spent, self.seconds_spent = ledger.steps, ledger.seconds
        if self._out_of_trials(ledger):
            return f"the study's budget of {self.budget} trials is spent"
        steps = self.base.train.steps
        if self.max_steps is not None and self.max_steps - ledger.steps < self._chunk(0, steps):
            return f"the study's compute budget of {self.max_steps} steps is spent"
        if self.max_seconds is not None:
            # At the cheapest rates measured: its own 5 calibration steps decide whether a
            # slower configuration goes on (an estimate at the dearest would leave up to a
            # whole interval of the slowest network unspent, however cheap the next one).
            first = self._estimate(
                0, self._chunk(0, steps), steps, ledger.fastest.per_step, ledger.fastest.per_image
            )
            if ledger.seconds >= self.max_seconds or ledger.seconds + first > self.max_seconds:
                hours = self.spec.max_device_hours
                return f"the study's device-time budget of {hours:g} h is spent"
        return self.strategy.search_refused(self.spec, ledger)

    def _open(self, trial_id: int) -> optuna.Trial:
        """Study.ask's other work, outside the lock (the trial is counted already), so that
        workers do it in parallel: put the trial into the study's trial cache (it must know a
        trial taken from the queue before the trial's parameters are set), then let the sampler
        prepare; it reads what it needs of the other trials itself (TPE with the constant liar:
        the running ones too)."""
        failpoint("worker:opening")
        forget_sampled_trials(self.study)
        cache_trial(self.study, trial_id)
        return optuna.Trial(self.study, trial_id)

    def _chunk(self, step: int, steps: int) -> int:
        """Steps from ``step`` to the next evaluation (or the end, ``steps``): the unit of the
        compute budget that one reservation takes."""
        every = self.base.eval.every
        until = min(steps, (step // every + 1) * every) if every else steps
        return until - step

    def _eval_images(self, until: int, steps: int) -> int:
        """Images generated by the evaluation at step ``until`` of a trial of ``steps`` (none
        between evaluations)."""
        ev = self.base.eval
        if until >= steps:
            return ev.final_samples
        return ev.samples if ev.every and until % ev.every == 0 else 0

    def _estimate(
        self, step: int, until: int, steps: int, per_step: float, per_image: float
    ) -> float:
        """Device seconds of training from ``step`` to ``until`` of a trial of ``steps``, with
        the evaluation there if there is one, at the given rates."""
        return (until - step) * per_step + self._eval_images(until, steps) * per_image

    def _reserve(self, trial: optuna.Trial, trainer: Trainer, steps: int | None = None) -> int:
        """Reserve the trial's next evaluation interval (from ``trainer.step`` to the next
        evaluation) out of the study's compute budgets; returns the step it may train to
        (``trainer.step`` itself when the interval does not fit).

        Under the budget lock, so that all workers together never reserve more than
        ``study.max_steps``. Device time cannot be reserved exactly: the interval's is
        estimated from the rates this link of the trial measured, and the estimate the previous
        interval reserved is replaced by the time it took. A link that has not measured its
        step time yet (a new trial, a resumed one, perhaps on another device) first reserves
        only :data:`CALIBRATION_STEPS` steps, at the slowest rate the study has measured, and
        the rest of the interval once it knows its own. So the study's device time stays within
        ``study.max_device_hours`` but for what intervals in flight take beyond their estimates.

        A trial whose strategy lets it end early (a grown trial: what matters is its final
        generator, not its length) reserves what is left when its interval does not fit, and
        ends there with its final evaluation (:meth:`Trainer.end_at`; its ``length`` is
        recorded): a lost worker's reserved steps, spent twice, then shorten it instead of
        leaving it without a final FID.
        """
        steps = self.base.train.steps if steps is None else steps  # the trial's length
        shortens = self.strategy.may_end_early(trial)
        step = trainer.step
        until = step + self._chunk(step, steps)
        if (self.max_steps is None and self.max_seconds is None) or step >= steps:
            return max(until, step)
        now = _Clock.of(trainer)
        used = now.seconds - self._link_start.seconds
        per_step, per_image = now.rates_since(self._link_start)
        if self.max_seconds is not None and per_step is None:
            until = min(until, step + CALIBRATION_STEPS)

        def reserve() -> tuple[int, dict[str, Any]]:
            with budget_lock(self.storage, self.study.study_name):
                ledger = read_ledger(self.study)
                fits = True
                target, length = until, steps  # where this interval ends; the trial's length
                attrs: dict[str, Any] = {}  # written together, in one transaction
                self.steps_spent = ledger.steps
                if self.max_steps is not None:
                    if shortens and ledger.steps + (target - step) > self.max_steps:
                        target = length = step + max(0, self.max_steps - ledger.steps)
                    fits = ledger.steps + (target - step) <= self.max_steps
                if self.max_seconds is not None:
                    rates = (
                        per_step if per_step is not None else ledger.slowest.per_step,
                        per_image if per_image is not None else ledger.slowest.per_image,
                    )
                    estimate = self._estimate(step, target, length, *rates)
                    # The others' reservations, then this trial's: what it used, and the next
                    # interval if that fits.
                    others = ledger.seconds - float(trial.user_attrs.get("seconds_reserved", 0))
                    left = self.max_seconds - others - used
                    if shortens and estimate > left:  # the steps that fit, with a final FID
                        final = self.base.eval.final_samples * rates[1]
                        fit = math.floor((left - final) / rates[0]) if rates[0] > 0 else 0
                        target = length = step + max(0, min(target - step, fit))
                        estimate = self._estimate(step, target, length, *rates)
                    fits = fits and others + used + estimate <= self.max_seconds
                    mine = used + estimate if fits else used
                    attrs["seconds_reserved"] = mine
                    self.seconds_spent = others + mine
                    # Rates measured over an interval (not a few calibration steps, which
                    # include the first step's warm-up) price other trials' first intervals.
                    if step - self._link_start.step > CALIBRATION_STEPS:
                        own = (("seconds_per_step", per_step), ("seconds_per_image", per_image))
                        attrs |= {key: rate for key, rate in own if rate is not None}
                if fits and self.max_steps is not None:
                    mine_steps = int(trial.user_attrs.get("steps_reserved", 0))
                    attrs["steps_reserved"] = mine_steps + target - step
                    self.steps_spent = ledger.steps + target - step
                if fits and length != steps:
                    attrs["length"] = length  # what `study best --as-config` trains
                if attrs:  # into the trial's own copy once the lock's transaction commits
                    set_user_attrs(self.storage, trial_id_of(trial), attrs)
                return (target if fits else step), attrs

        allowed, written = self._db(reserve)
        update_trial_copy(trial, written)
        self._end_at_length(trial, trainer)
        return allowed

    def _end_at_length(self, trial: optuna.Trial, trainer: Trainer) -> None:
        """End the training at the trial's recorded ``length`` where the budget shortened it
        (with its final evaluation there)."""
        length = trial.user_attrs.get("length")
        if length is not None and length < trainer.config.train.steps:
            trainer.end_at(int(length))
            logger.info(
                "trial %d: the budget left ends it at step %d, with its final evaluation",
                trial.number,
                trainer.config.train.steps,
            )

    def mark_checkpoint_pending(self, trial: optuna.Trial, artifact_id: str | None) -> None:
        """Record, before its file is written, the id of a checkpoint of ``trial`` being
        written (a crash between the two then leaves no file that no trial names)."""
        self._db(self.storage.set_trial_system_attr, trial_id_of(trial), CHECKPOINT_PENDING_ATTR,
                 artifact_id)  # fmt: skip
        recorded, _ = self._files.get(trial.number, (None, None))
        self._files[trial.number] = (recorded, artifact_id)

    def _trial_files(self, trial: optuna.Trial) -> list[str]:
        """The checkpoint files ``trial`` names (read from the database where this worker has
        not recorded them yet: the trial ended before it resumed)."""
        if trial.number not in self._files:
            frozen = self._db(self.storage.get_trial, trial_id_of(trial))
            return checkpoint_ids(frozen)
        return checkpoint_files(*self._files[trial.number])

    def new_checkpoint_id(self) -> str:
        """A fresh id for a checkpoint file of this study (named with its :func:`study_key`)."""
        if self._study_key is None:
            self._study_key = self._db(study_key, self.study)
        return new_artifact_id(f"checkpoint-{self._study_key}")

    def _sweep(self, *, done: bool = False) -> None:
        """Remove the checkpoint files no trial needs (see :func:`sweep_checkpoints`); until
        the study is ``done``, a strategy that grows completed trials needs their final
        states."""
        if self.artifacts is not None:
            self._db(
                sweep_checkpoints,
                self.study,
                self.artifacts,
                max_retry=self.spec.max_retry,
                keep_completed=not done and self.spec.strategy.name == "grow",
            )

    # ------------------------------------------------------------------- loop
    def run(self) -> WorkerSummary:
        """Run trials until this worker's limit, the study's budget or the timeout."""
        summary = WorkerSummary()
        start = time.monotonic()
        waiting_logged = False
        self._sweep()  # what a worker killed at the wrong instant left behind
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
            # Trials whose worker died are handed over here, by whoever comes first.
            self._db(
                fail_stale_trials,
                self.study,
                max_retry=self.spec.max_retry,
                grace_period=self.spec.grace_period,
            )
            trial = self.next_trial()
            if trial is None:
                assert self.ledger is not None  # next_trial read it
                running = self.ledger.running
                if not running:
                    summary.stop_reason = self.spent
                    self._sweep(done=True)  # the study is done: no checkpoint is needed
                    break
                # Stay until the running trials end: if their worker dies, one is taken over.
                if not waiting_logged:
                    logger.info(
                        "budget spent; waiting for %d running trial(s) to end, ready to take "
                        "over any whose worker dies",
                        running,
                    )
                    waiting_logged = True
                # Apart from the other waiting workers (hundreds of them, on a large study).
                time.sleep(min(self.spec.heartbeat_interval, 5) * random.uniform(0.5, 1.5))
                continue
            waiting_logged = False
            state = self.run_trial(trial)
            summary.trials.append(trial.number)
            key = state.name if state is not None else "TAKEN_OVER"
            summary.states[key] = summary.states.get(key, 0) + 1
        logger.info(
            "worker done: %s; %d trial(s) here (%s)",
            summary.stop_reason,
            len(summary.trials),
            ", ".join(
                f"{k.lower().replace('_', ' ')} {v}" for k, v in sorted(summary.states.items())
            )
            or "none",
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
        frozen = self._db(self.storage.get_trial, trial_id_of(trial))
        checkpoint = checkpoint_of(frozen)
        pending = pending_checkpoint_of(frozen)
        self._files[trial.number] = (checkpoint, pending)
        history = retry_history(frozen)
        if not history:
            return
        if pending and self.artifacts is not None and pending != (checkpoint or {}).get("id"):
            # The predecessor died between writing a checkpoint and recording it.
            remove_artifact(self.artifacts, pending)
            self.mark_checkpoint_pending(trial, None)
        if self.artifacts is not None and "pbt" in trial.user_attrs:
            # A PBT member that went on from another's state no longer needs its own (removed
            # at the end of its interval, unless its worker died first).
            before = self._db(
                self.storage.get_trial,
                storage_of(self.study).get_trial_id_from_study_id_trial_number(
                    study_id_of(self.study), history[-1]
                ),
            )
            own = checkpoint_of(before)
            if own and own["id"] != (checkpoint or {}).get("id"):
                remove_artifact(self.artifacts, own["id"])
        step = 0
        if checkpoint and self.artifacts is not None:
            try:
                data = read_artifact(self.artifacts, checkpoint["id"])
                state = parse_checkpoint(data, source="the trial's checkpoint")
                # A PBT interval may go on with perturbed hyperparameters.
                trainer.load_state_dict(state, adopt=self.strategy.adopt)
                step = trainer.step
            except (OSError, CheckpointError, optuna.artifacts.exceptions.ArtifactNotFound) as e:
                logger.warning("trial %d: checkpoint unusable (%s); from step 0", trial.number, e)
        self._db(trial.set_user_attr, "resumed_from_trial", history[-1])
        self._db(trial.set_user_attr, "resumed_at_step", step)
        logger.info("trial %d resumes trial %d at step %d", trial.number, history[-1], step)

    def _save_checkpoint(self, trial: optuna.Trial, trainer: Trainer) -> None:
        """Write the training state and record it in the trial.

        The new id is recorded as pending (:meth:`mark_checkpoint_pending`) before the file is
        written, so a worker that dies between writing and recording leaves no file nobody
        knows of: whoever resumes the trial removes it. The previous checkpoint is removed once
        the new one is recorded; a new one that cannot be recorded is removed at once.
        """
        if self.artifacts is None:
            return
        old, _ = self._files.get(trial.number, (None, None))
        new_id = self.new_checkpoint_id()
        self.mark_checkpoint_pending(trial, new_id)
        data = trainer.checkpoint_bytes()
        write_artifact(self.artifacts, data, kind="checkpoint", artifact_id=new_id)
        failpoint("checkpoint:written")
        recorded = {"id": new_id, "step": trainer.step}
        try:
            self._db(self.storage.set_trial_system_attr, trial_id_of(trial), CHECKPOINT_ATTR,
                     recorded)  # fmt: skip
        except BaseException:
            remove_artifact(self.artifacts, new_id)  # nobody will ever read it
            raise
        self._files[trial.number] = (recorded, new_id)
        failpoint("checkpoint:recorded")
        if old:  # replaced, not accumulated
            remove_artifact(self.artifacts, old["id"])

    def _upload(self, trial: optuna.Trial, data: bytes, filename: str) -> str | None:
        """Attach a file to the trial in the artifact store (optuna-dashboard lists it).

        Recorded in the trial first, then written: a trial taken over meanwhile refuses the
        record (:class:`_TakenOver`) and nothing is written; a worker killed between the two
        leaves a record of a missing file, never a file that no trial names (Optuna's
        ``upload_artifact`` writes first)."""
        if self.artifacts is None:
            return None
        artifact_id = dashboard_artifact_id()
        mimetype = mimetype_of(filename)
        self._db(record_artifact, self.storage, trial_id_of(trial), artifact_id, filename, mimetype)
        write_artifact(self.artifacts, data, kind="upload", artifact_id=artifact_id)
        return artifact_id

    def run_trial(self, trial: optuna.Trial) -> TrialState | None:
        """Train one trial and tell the study how it ended; never raises for a bad trial.

        Returns the trial's final state, or None when another worker took it over.
        """
        heartbeat = _Heartbeat(self.storage, trial_id_of(trial), self.spec.heartbeat_interval)
        heartbeat.start()
        grids = Path(tempfile.mkdtemp(prefix="ganhpo-grids-"))  # uploaded, then deleted
        try:
            return self._train_trial(trial, heartbeat, grids)
        except _TakenOver:
            logger.warning(
                "trial %d was taken over by another worker; dropping my copy", trial.number
            )
            return None
        finally:
            heartbeat.stop()
            shutil.rmtree(grids, ignore_errors=True)
            self._files.pop(trial.number, None)

    def _train_trial(
        self, trial: optuna.Trial, heartbeat: _Heartbeat, grids: Path
    ) -> TrialState | None:
        """Train the trial from where it stands to its end, or until it is stopped; how it
        ended decides what is told (:meth:`_ended`). The order of the ``except`` clauses is the
        worker's fault behaviour: another worker's take-over and a second signal end this copy
        at once, a divergence prunes the trial, a database gone for good leaves it for another
        worker, any other error fails this one trial."""
        started = time.monotonic()
        best = self._best_value()
        try:
            run = self._prepare(trial, heartbeat, grids, best=best)
            self._resume(trial, run.trainer)
            self._link_start = _Clock.of(run.trainer)
            # The compute budget is reserved an evaluation interval at a time.
            run.allowed = self._reserve(trial, run.trainer, run.config.train.steps)
            if run.allowed <= run.trainer.step < run.trainer.config.train.steps:
                reason = (
                    f"not run from step {run.trainer.step}: the study's compute budget is spent"
                )
                return self._finish(
                    trial, TrialState.PRUNED, reason, started, None, step=run.trainer.step
                )
            run.progress = Progress(run.config.train.steps, run.trainer.step)
            logger.info("trial %d started: %s", trial.number, _short(trial.params))
            result = run.trainer.run(
                on_eval=run.on_eval,
                should_stop=run.should_stop,
                on_checkpoint=lambda step: self._save_checkpoint(trial, run.trainer),
            )
        except (_TakenOver, KeyboardInterrupt):
            raise  # a second signal: the trial is taken over after the grace, or repaired
        except DivergenceError as e:
            reason = f"diverged at step {e.step}: {e}"
            return self._finish(trial, TrialState.PRUNED, reason, started, None, step=e.step)
        except StorageError as e:
            if self.stop_requested is not None:
                self._abandon(trial, e)
                return None
            raise  # the database is gone for good: the trial is taken over once it is back
        except Exception as e:  # one trial's crash must never kill the worker
            logger.debug("trial %d crashed:\n%s", trial.number, traceback.format_exc())
            return self._failed(trial, e, started)
        return self._ended(run, result, started)

    def _prepare(
        self, trial: optuna.Trial, heartbeat: _Heartbeat, grids: Path, *, best: float | None
    ) -> _TrialRun:
        """The trial's configuration and trainer, with what describes it recorded."""
        config = self._config_for(trial)
        attrs = {"host": self.host, "seed": config.seed}
        attrs["device"] = str(Trainer.device_for(config))
        self._db(_write_attrs, self.storage, trial, attrs)
        failpoint("trial:training")
        trainer = Trainer(config, data=self.data, evaluator=self.evaluator(config), out_dir=grids)
        # What the trial's networks cost: parameters of each (the Pareto axis of a study that
        # weighs size against FID).
        sizes = {"g_params": count_params(trainer.G), "d_params": count_params(trainer.D)}
        self._db(_write_attrs, self.storage, trial, sizes)
        return _TrialRun(self, trial, config, trainer, heartbeat, best=best)

    def _ended(self, run: _TrialRun, result: Any, started: float) -> TrialState | None:
        """Tell the study how the trial's training ended (see :class:`_TrialRun`)."""
        trial, trainer = run.trial, run.trainer
        if run.heartbeat.lost.is_set():
            raise _TakenOver("the trial is no longer running")
        if run.hopeless is not None:
            reason = f"stopped: {run.hopeless}"
            return self._finish(trial, TrialState.PRUNED, reason, started, result)
        if run.pruned_at is not None:
            reason = f"pruned at step {run.pruned_at}"
            return self._finish(trial, TrialState.PRUNED, reason, started, result)
        if run.budget_stop is not None:
            reason = f"stopped at step {run.budget_stop}: the study's compute budget is spent"
            return self._finish(trial, TrialState.PRUNED, reason, started, result)
        if run.interval_end is not None:
            return self.strategy.end_interval(self, trial, result, started)
        if result.stopped_early:  # a signal: checkpoint and hand the trial back
            return self._hand_back(trial, trainer, result, started)
        try:
            if self.strategy.keeps_final_state(trial):
                self._save_checkpoint(trial, trainer)  # it may grow once the search is over
            # Self-describing: ganhpo.load_generator rebuilds it (ganhpo sample, study test).
            generator_id = self._upload(trial, dump_generator(trainer), "generator.pt")
            if generator_id:
                self._db(trial.set_user_attr, "generator", generator_id)
        except (_TakenOver, StorageError):
            raise
        except Exception as e:  # e.g. the artifact store went away at the very end
            return self._failed(trial, e, started)
        return self._finish(trial, TrialState.COMPLETE, "completed", started, result)

    def _hand_back(
        self, trial: optuna.Trial, trainer: Trainer, result: Any, started: float
    ) -> TrialState | None:
        """After SIGTERM: checkpoint, record the results so far, hand the trial over."""
        try:
            try:
                self._save_checkpoint(trial, trainer)
            except (_TakenOver, StorageError):
                raise
            except Exception as e:  # the retry resumes from the last recorded checkpoint
                logger.warning("trial %d: no checkpoint at the hand-back (%s)", trial.number, e)
            reason = f"interrupted by {self.stop_requested} at step {result.steps}: handed back"
            self._record(trial, reason, started, result)
            failpoint("handback:recorded")
            self._db(
                hand_over, self.study, trial_id_of(trial), reason, max_retry=self.spec.max_retry
            )
        except StorageError as e:
            self._abandon(trial, e)
            return None
        logger.warning("trial %d interrupted at step %d: handed back", trial.number, result.steps)
        return TrialState.FAIL

    def _abandon(self, trial: optuna.Trial, e: StorageError) -> None:
        """A stop was asked for while the database is unreachable: exit now, leave the trial
        RUNNING; another worker takes it over after the grace period."""
        checkpoint, _ = self._files.get(trial.number, (None, None))
        at = f"its checkpoint at step {checkpoint['step']}" if checkpoint else "step 0"
        logger.warning(
            "trial %d not handed back (%s); another worker takes it over after the grace period "
            "(%d s) and resumes it from %s",
            trial.number,
            e,
            self.spec.grace_period,
            at,
        )

    def _failed(self, trial: optuna.Trial, e: Exception, started: float) -> TrialState | None:
        """A trial raised. Its own fault (e.g. out of memory for its batch size): it fails and
        the worker goes on. The environment's fault (a broken store, dataset or extractor, or
        the same error as the previous trial here): it is handed back and the worker stops."""
        reason = (
            f"failed: {e}" if isinstance(e, GanhpoError) else f"failed: {type(e).__name__}: {e}"
        )
        if _is_oom(e):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return self._finish(
                trial, TrialState.FAIL, f"failed: out of memory on the device ({e})", started, None
            )
        signature = _failure_signature(reason)
        repeated = self._last_failure is not None and self._last_failure[1] == signature
        if not (isinstance(e, _ENVIRONMENT_ERRORS) or repeated):
            self._last_failure = (trial.number, signature)
            return self._finish(trial, TrialState.FAIL, reason, started, None)
        why = f"not the trial's fault: {reason}"
        self._db(hand_over, self.study, trial_id_of(trial), why, max_retry=self.spec.max_retry)
        like = ""
        if repeated and self._last_failure is not None:
            self._hand_over_failed(self._last_failure[0])
            like = f" like trial {self._last_failure[0]}"
        raise GanhpoError(
            f"trial {trial.number} {reason}{like}: this machine or the study's setup is at fault, "
            "not the trial's parameters; fix that and restart the worker (the trial was handed "
            "back: no budget spent)"
        ) from e

    def _hand_over_failed(self, number: int) -> None:
        """Enqueue a retry of a trial that already failed here (it looked like its own fault
        until the next trial failed the same way): that failure then spends no budget."""

        def enqueue() -> None:
            with budget_lock(self.storage, self.study.study_name):
                links = read_ledger(self.study, costs=False).links
                if number not in links:  # not retried yet: its checkpoint went with it
                    failed = trial_by_number(self.study, number)
                    retry_trial(self.study, failed, max_retry=self.spec.max_retry, from_start=True)

        self._db(enqueue)

    def _record(
        self,
        trial: optuna.Trial,
        reason: str,
        started: float,
        result: Any,
        *,
        step: int | None = None,
    ) -> float | None:
        """Write the trial's status and results as user attributes; returns the objective of
        the final evaluation, if there was one."""
        attrs: dict[str, Any] = {"status": reason, "wall_time": time.monotonic() - started}
        value: float | None = None
        if result is not None:
            device_seconds = result.train_seconds + result.eval_seconds - self._link_start.seconds
            attrs |= {
                "steps": result.steps,
                "images_per_sec": result.images_per_sec,
                "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds,
                "device_seconds": device_seconds,
            }
            if self.max_seconds is not None:  # the time it took replaces the estimate
                reserved = float(trial.user_attrs.get("seconds_reserved", 0.0))
                attrs["seconds_reserved"] = device_seconds
                if device_seconds > reserved:  # by this much the budget may be overrun
                    attrs[OVER_ESTIMATE_ATTR] = device_seconds - reserved
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
        self._db(_write_attrs, self.storage, trial, attrs)
        return value

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
        """Record the trial's results and tell the study it ended in ``state``; then remove its
        checkpoint files. They stay recorded through the tell: a worker killed before it is
        taken over and resumed from its last checkpoint, not from step 0. (A finished trial's
        ``checkpoint`` attribute then names a removed file; one killed after the tell leaves
        files that :func:`sweep_checkpoints` removes.)"""
        value = self._record(trial, reason, started, result, step=step)
        if state != TrialState.FAIL:
            self._last_failure = None  # only failures in a row look like the environment's
        failpoint("finish:recorded")
        values: list[float] | None = None
        if state == TrialState.COMPLETE:
            assert value is not None and math.isfinite(value)
            values = [value, *self._costs(trial)]
        self.tell(trial, state, values)
        failpoint("finish:told")
        if self.artifacts is not None and not (
            state == TrialState.COMPLETE and self.strategy.keeps_final_state(trial)
        ):
            for artifact_id in self._trial_files(trial):
                remove_artifact(self.artifacts, artifact_id)
        wall = time.monotonic() - started
        log = logger.info if state != TrialState.FAIL else logger.warning
        log("trial %d %s (%s, %.0fs)", trial.number, state.name.lower(), reason, wall)
        return state

    def _report(self, trial: optuna.Trial, value: float, step: int) -> None:
        """Report an evaluation. A study with two objectives keeps its metric's curve too
        (for the dashboard, plots and hand-overs), written to the storage directly: Optuna's
        ``Trial.report`` refuses multi-objective studies, whose trials are never pruned."""
        if self.spec.cost is None:
            trial.report(value, step)
        else:
            self.storage.set_trial_intermediate_value(trial_id_of(trial), step, value)

    def _costs(self, trial: optuna.Trial) -> list[float]:
        """The second objective of a multi-objective study (none for one with one objective):
        a cost the trial recorded as a user attribute of the same name."""
        name = self.spec.cost
        if name is None:
            return []
        cost = self._db(lambda: trial.user_attrs.get(name))
        if cost is None:
            raise RuntimeError(f"trial {trial.number} recorded no {name}")
        return [float(cost)]

    def tell(
        self, trial: optuna.Trial, state: TrialState, values: list[float] | None = None
    ) -> None:
        """Tell the study that ``trial`` ended in ``state``, retrying through outages.

        A tell can go through and its answer still be lost (the connection drops after the
        commit, or a read that follows it fails): tried again, Optuna would refuse to tell a
        finished trial. So a retry first looks: already in ``state``, it is done; finished
        otherwise, another worker took the trial over. A first tell that Optuna refuses
        because the trial is no longer running (this worker was frozen after recording the
        trial's end, and another took the trial over meanwhile) is a take-over too.
        """
        attempts = 0

        def told() -> bool:
            """Whether the trial is in ``state`` already; _TakenOver if it ended otherwise."""
            current = self.storage.get_trial(trial_id_of(trial)).state
            if current != state and current.is_finished():
                raise _TakenOver(f"the trial is {current.name}")
            return current == state

        def tell_once() -> None:
            nonlocal attempts
            if attempts and told():
                return
            attempts += 1
            try:
                if values is not None:
                    self.study.tell(trial, values)
                else:
                    self.study.tell(trial, state=state)
            except ValueError as e:  # "Cannot tell a FAIL trial.": finished by another
                if not str(e).startswith("Cannot tell a ") or not told():
                    raise
            failpoint("tell:done")

        self._db(tell_once)

    def _best_value(self) -> float | None:
        """The best metric so far (of a multi-objective study: the best on its Pareto front)."""
        if self.spec.cost is not None:
            front = self._db(lambda: self.study.best_trials)
            return min((t.values[0] for t in front), default=None)
        try:
            return float(self._db(lambda: self.study.best_value))
        except ValueError:
            return None


def _write_attrs(
    storage: optuna.storages.RDBStorage, trial: optuna.Trial, attrs: dict[str, Any]
) -> None:
    """Set user attributes of a running trial in one transaction, and in the ``Trial``'s own
    copy of it, which ``trial.user_attrs`` reads (as ``Trial.set_user_attr`` does for one)."""
    set_user_attrs(storage, trial_id_of(trial), attrs)
    update_trial_copy(trial, attrs)


@dataclass(frozen=True)
class _Clock:
    """A trainer's counters of device time: training seconds over its steps, evaluation seconds
    over the images it evaluated (both restored from a checkpoint with the steps before)."""

    step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images: int = 0

    @classmethod
    def of(cls, trainer: Trainer) -> _Clock:
        """A trainer's clock now."""
        return cls(
            step=trainer.step,
            train_seconds=trainer.train_seconds,
            eval_seconds=trainer.eval_seconds,
            images=sum(r.num_samples for r in trainer.history),
        )

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def rates_since(self, start: _Clock) -> tuple[float | None, float | None]:
        """Seconds per training step since ``start`` (None: no step since), and per evaluated
        image (since ``start`` or, before this link evaluated, over the whole trial; None when
        it never evaluated)."""
        steps, images = self.step - start.step, self.images - start.images
        per_step = (self.train_seconds - start.train_seconds) / steps if steps > 0 else None
        if images > 0:
            return per_step, (self.eval_seconds - start.eval_seconds) / images
        return per_step, (self.eval_seconds / self.images if self.images else None)


class _TrialRun:
    """One trial's training under a worker: the callbacks ``Trainer.run`` calls (an
    evaluation; whether to stop) and why the training stopped early, which
    :meth:`Worker._ended` reads: the strategy pruned it (``pruned_at``), ended its PBT
    interval (``interval_end``) or found it hopeless (``hopeless``), or the compute budget
    ran out (``budget_stop``). A stop asked for by a signal, or the heartbeat's loss (the
    trial was taken over), stops it too."""

    def __init__(
        self,
        worker: Worker,
        trial: optuna.Trial,
        config: TrainConfig,
        trainer: Trainer,
        heartbeat: _Heartbeat,
        *,
        best: float | None,
    ) -> None:
        self.worker = worker
        self.trial = trial
        self.config = config
        self.trainer = trainer
        self.heartbeat = heartbeat
        self.best = best  # the study's best value when the trial started
        self.objective = worker.spec.objective
        std_attr = STD_ATTRS[self.objective]
        self.stds: dict[str, float] = dict(trial.user_attrs.get(std_attr) or {})
        self.progress = Progress(config.train.steps, 0)
        self.allowed = 0  # the step the budget reserved so far lets the trial train to
        self.pruned_at: int | None = None
        self.interval_end: int | None = None
        self.hopeless: str | None = None
        self.budget_stop: int | None = None

    def on_eval(self, record: EvalRecord) -> None:
        """Report the evaluation, log it, upload its grid, and ask the strategy."""
        w, trial = self.worker, self.trial
        fid = self.objective == "fid"
        value = record.fid if fid else record.kid
        std = record.fid_std if fid else record.kid_std
        if math.isfinite(std):  # before the report: the pruner reads it
            self.stds[str(record.step)] = std
            w._db(trial.set_user_attr, STD_ATTRS[self.objective], self.stds)
        w._db(w._report, trial, value, record.step)
        logger.info("trial %d  %s", trial.number, self._line(record))
        if record.grid is not None:
            name = "grid_final.png" if record.final else f"grid_step_{record.step:07d}.png"
            grid_id = w._upload(trial, Path(record.grid).read_bytes(), name)
            if grid_id:
                w._db(trial.set_user_attr, "grid", grid_id)
        if not record.final:
            self._decide(record.step)

    def _line(self, record: EvalRecord) -> str:
        """The evaluation's progress line: the record, the best so far, the budget spent."""
        w = self.worker
        line = self.progress.line(record)
        if self.best is not None:
            line += f"  (best so far {self.best:.3f})"
        if w.max_steps is not None:
            line += f"  budget {w.steps_spent}/{w.max_steps} steps"
        if w.max_seconds is not None:
            line += f"  budget {w.seconds_spent / 3600:.3g}/{w.spec.max_device_hours:g} device-h"
        return line

    def _decide(self, step: int) -> None:
        """After an intermediate evaluation: stop a hopeless trial, else the strategy's call."""
        w, trial = self.worker, self.trial
        why = w.strategy.stop_reason(w, trial, self.trainer.history, self.config)
        if why:
            self.hopeless = why
            return
        decision = w.strategy.after_evaluation(w, trial)
        if decision == "prune":
            self.pruned_at = step
        elif decision == "end interval":
            self.interval_end = step

    def should_stop(self) -> bool:
        """Whether the training stops after this step."""
        stopped = (self.pruned_at, self.hopeless, self.interval_end)
        return (
            any(reason is not None for reason in stopped)
            or self.worker.stop_requested is not None
            or self.heartbeat.lost.is_set()
            or self._out_of_budget()
        )

    def _out_of_budget(self) -> bool:
        """At the end of the reserved interval, reserve the next; True when none is left."""
        trainer = self.trainer
        if trainer.step < self.allowed or trainer.step >= trainer.config.train.steps:
            return False
        self.allowed = self.worker._reserve(self.trial, trainer, trainer.config.train.steps)
        # Read again: the reservation may have ended the trial sooner (Trainer.end_at).
        if self.allowed > trainer.step or trainer.step >= trainer.config.train.steps:
            return False
        self.budget_stop = trainer.step
        return True


def _short(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
