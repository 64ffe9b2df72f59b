"""The one place where ganhpo uses Optuna's private internals.

ganhpo needs a few things Optuna's public API does not give: the RDB schema's tables for
queries that must be one transaction, or that must not read every running trial (a worker's
start under the budget lock; the ledger; the stale scan); the ids behind a study and a trial;
Optuna's trial cache, subclassed to read less (:class:`TrialCache`); the session Optuna's
storage runs its transactions in, bound to the budget lock's connection; the schema's head
version. Every such use goes through this module, and every internal it uses is listed in
:data:`INTERNALS` with a check; ``tests/test_optuna_contract.py`` runs each against the
installed Optuna and fails naming the Optuna version and the internal. ``pyproject.toml`` pins
Optuna to the versions those checks passed on (docs/development.md, "Dependencies").
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from collections.abc import Callable, Container, Iterable
from typing import Any

import optuna
import sqlalchemy
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "INTERNALS",
    "FrozenStudy",
    "TrialCache",
    "backend_of",
    "forget_sampled_trials",
    "models",
    "record_artifact",
    "record_study_artifact",
    "schema_head_version",
    "session_registry",
    "storage_of",
    "study_id_of",
    "trial_id_of",
    "update_trial_copy",
]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (``Study._storage``)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The study's id in its storage (``Study._study_id``)."""
    return int(study._study_id)


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (``Trial._trial_id``, ``FrozenTrial._trial_id``)."""
    return int(trial._trial_id)


def update_trial_copy(trial: optuna.Trial, user_attrs: dict[str, Any]) -> None:
    """Put user attributes already written to the storage into the ``Trial``'s own copy of the
    trial, which ``trial.user_attrs`` reads (``Trial._cached_frozen_trial``), as
    ``Trial.set_user_attr`` does for one."""
    trial._cached_frozen_trial.user_attrs.update(user_attrs)


def forget_sampled_trials(study: optuna.Study) -> None:
    """Drop the trials a study keeps for its sampler between two asks
    (``Study._thread_local.cached_all_trials``), so that the next trial's sampling reads them
    again."""
    study._thread_local.cached_all_trials = None


def record_artifact(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    artifact_id: str,
    filename: str,
    mimetype: str,
) -> None:
    """Record a file of the artifact store as the trial's, as
    :func:`optuna.artifacts.upload_artifact` records one (``artifacts:<id>`` system attribute
    with Optuna's ``ArtifactMeta``), where optuna-dashboard and ``get_all_artifact_meta`` find
    it. ganhpo records before it writes the file: a write that never happens leaves a record
    of a missing file, never a file that no trial names."""
    meta = ArtifactMeta(
        artifact_id=artifact_id, filename=filename, mimetype=mimetype, encoding=None
    )
    storage.set_trial_system_attr(
        trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(dataclasses.asdict(meta))
    )


def record_study_artifact(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    artifact_id: str,
    filename: str,
    mimetype: str,
) -> None:
    """Record a file of the artifact store as the study's own, as
    :func:`optuna.artifacts.upload_artifact` records one for a study (where optuna-dashboard
    lists the study's artifacts); recorded before the file is written, as trials' are."""
    meta = ArtifactMeta(
        artifact_id=artifact_id, filename=filename, mimetype=mimetype, encoding=None
    )
    storage.set_study_system_attr(
        study_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(dataclasses.asdict(meta))
    )


def backend_of(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage behind Optuna's trial cache (``_CachedStorage._backend``), or ``storage``
    itself."""
    return getattr(storage, "_backend", storage)


def session_registry(rdb: optuna.storages.RDBStorage) -> Any:
    """The thread-local registry of the SQLAlchemy session that ``RDBStorage`` runs each of its
    transactions in (``RDBStorage.scoped_session.registry``)."""
    return rdb.scoped_session.registry


def schema_head_version(rdb: optuna.storages.RDBStorage) -> str:
    """The schema version this Optuna writes (``RDBStorage._version_manager``)."""
    return str(rdb._version_manager.get_head_version())


class TrialCache(_CachedStorage):
    """Optuna's in-memory trial cache around a database storage (``_CachedStorage``, what
    ``optuna.load_study`` puts around an ``RDBStorage``), reading less of what other workers'
    running trials hold.

    Optuna's cache reads every unfinished trial again, whole (parameters, attributes, curve),
    whenever it is asked for trials: with hundreds of workers, hundreds of running trials for
    every pruning decision of every worker. Here, a question about finished trials alone (the
    median and percentile pruners ask for the completed trials' curves) reads the ids and states
    of the unfinished and newer trials, then only those that have finished since: finished
    trials never change again. Any other question is Optuna's, unchanged.
    """

    def cache_trial(self, study_id: int, trial_id: int) -> None:
        """Read one trial into the cache: the cache must know a trial before parameters can be
        set on it, which ``Study.ask`` gets by syncing every unfinished trial. It stays
        unfinished here, so the next sync reads it again."""
        frozen = self._backend.get_trial(trial_id)
        with self._lock:
            info = self._studies.setdefault(study_id, _StudyInfo())
            self._add_trials_to_cache(study_id, [frozen])
            info.unfinished_trial_ids.add(trial_id)

    def forget(self) -> None:
        """Forget every cached trial (they are read again when asked for): what was written
        under a budget lock whose transaction was undone may be in the cache."""
        with self._lock:
            self._studies.clear()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if not _finished_only(states):
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        assert states is not None
        self._read_finished(study_id)
        with self._lock:
            trials = sorted(
                (t for t in self._studies[study_id].trials.values() if t.state in states),
                key=lambda t: t.number,
            )
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_finished(self, study_id: int) -> None:
        """Bring the cache's finished trials up to date, reading only those that finished."""
        trial = models.TrialModel
        with self._lock:
            info = self._studies.setdefault(study_id, _StudyInfo())
            newer = trial.trial_id > info.last_finished_trial_id
            if info.unfinished_trial_ids:
                newer = sqlalchemy.or_(newer, trial.trial_id.in_(info.unfinished_trial_ids))
            with self._backend.engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.select(trial.trial_id, trial.state).where(
                        trial.study_id == study_id, newer
                    )
                ).all()
            done = {i for i, state in rows if TrialState(state).is_finished()}
            info.unfinished_trial_ids.update(i for i, _ in rows if i not in done)
            if not done:
                return
            # Optuna's read: these ids, and any newer trial that finished meanwhile.
            read = self._backend._get_trials(
                study_id,
                states=_FINISHED,
                included_trial_ids=done,
                trial_id_greater_than=max(done),
            )
            self._add_trials_to_cache(study_id, read)
            seen = max(i for i, _ in rows)  # every trial up to it was in rows (Optuna's rule)
            for t in read:
                info.unfinished_trial_ids.discard(t._trial_id)
                if t._trial_id <= seen:
                    info.last_finished_trial_id = max(info.last_finished_trial_id, t._trial_id)


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _finished_only(states: Container[TrialState] | None) -> bool:
    if states is None or not isinstance(states, Iterable):
        return False
    listed = list(states)
    return bool(listed) and all(s in _FINISHED for s in listed)


# -- the contract ------------------------------------------------------------------------------


def _has(owner: Any, *names: str) -> Callable[[], None]:
    def check() -> None:
        for name in names:
            if not hasattr(owner, name):
                raise AttributeError(f"{getattr(owner, '__name__', owner)} has no {name}")

    return check


def _instance_has(factory: Callable[[], Any], *names: str) -> Callable[[], None]:
    def check() -> None:
        obj = factory()
        for name in names:
            if not hasattr(obj, name):
                raise AttributeError(f"{type(obj).__name__} instance has no {name}")

    return check


def _params(owner: Any, method: str, *names: str) -> Callable[[], None]:
    def check() -> None:
        fn = getattr(owner, method)
        have = set(inspect.signature(fn).parameters)
        missing = [n for n in names if n not in have]
        if missing:
            raise TypeError(f"{fn.__qualname__} takes no {', '.join(missing)}")

    return check


def _columns(model: Any, *names: str) -> Callable[[], None]:
    def check() -> None:
        have = set(sqlalchemy.inspect(model).columns.keys())
        missing = [n for n in names if n not in have]
        if missing:
            raise AttributeError(f"{model.__name__} has no column {', '.join(missing)}")

    return check


def _memory_study() -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage())


def _memory_trial() -> optuna.Trial:
    return _memory_study().ask()


def _frozen_trial() -> FrozenTrial:
    study = _memory_study()
    study.tell(study.ask(), 1.0)
    return study.trials[0]


def _frozen_study() -> FrozenStudy:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="contract")
    (study,) = storage.get_all_studies()
    if not isinstance(study, FrozenStudy):
        raise TypeError(f"get_all_studies gives {type(study).__name__}, not FrozenStudy")
    return study


def _artifact_round_trip() -> None:
    """An artifact recorded as ganhpo records one is what Optuna's public API lists."""
    study = _memory_study()
    trial = study.ask()
    record_artifact(study._storage, trial._trial_id, "contract-id", "grid.png", "image/png")
    (meta,) = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    if (meta.artifact_id, meta.filename, meta.mimetype) != ("contract-id", "grid.png", "image/png"):
        raise ValueError(f"get_all_artifact_meta lists {meta}")


def _rdb() -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage("sqlite:///:memory:")


# Every internal this module uses: its name, and a check that it is there as used.
INTERNALS: dict[str, Callable[[], object]] = {
    "optuna.Study._storage, _study_id": _instance_has(_memory_study, "_storage", "_study_id"),
    "optuna.Study._thread_local.cached_all_trials": lambda: _memory_study()._thread_local,
    "optuna.Trial._trial_id, _cached_frozen_trial": _instance_has(
        _memory_trial, "_trial_id", "_cached_frozen_trial"
    ),
    "optuna.trial.FrozenTrial._trial_id": _instance_has(_frozen_trial, "_trial_id"),
    "optuna.storages._CachedStorage(_backend, _studies, _lock, _add_trials_to_cache)": (
        _instance_has(
            lambda: _CachedStorage(_rdb()), "_backend", "_studies", "_lock", "_add_trials_to_cache"
        )
    ),
    "optuna.storages._cached_storage._StudyInfo(unfinished_trial_ids, "
    "last_finished_trial_id, trials)": _instance_has(
        _StudyInfo, "unfinished_trial_ids", "last_finished_trial_id", "trials"
    ),
    "optuna.storages.RDBStorage._get_trials(study_id, states, included_trial_ids, "
    "trial_id_greater_than)": _params(
        optuna.storages.RDBStorage,
        "_get_trials",
        "study_id",
        "states",
        "included_trial_ids",
        "trial_id_greater_than",
    ),
    "optuna.storages.RDBStorage._version_manager.get_head_version": lambda: schema_head_version(
        _rdb()
    ),
    "optuna.storages.RDBStorage.scoped_session.registry": lambda: session_registry(_rdb()).has(),
    "optuna.storages._rdb.models.TrialModel": _columns(
        models.TrialModel, "trial_id", "number", "study_id", "state"
    ),
    "optuna.storages._rdb.models.TrialUserAttributeModel": _columns(
        models.TrialUserAttributeModel, "trial_user_attribute_id", "trial_id", "key", "value_json"
    ),
    "optuna.storages._rdb.models.TrialSystemAttributeModel": _columns(
        models.TrialSystemAttributeModel, "trial_id", "key", "value_json"
    ),
    "optuna.storages._rdb.models.TrialHeartbeatModel": _columns(
        models.TrialHeartbeatModel, "trial_heartbeat_id", "trial_id", "heartbeat"
    ),
    "optuna.storages._rdb.models.TrialValueModel, TrialIntermediateValueModel": _has(
        models, "TrialValueModel", "TrialIntermediateValueModel"
    ),
    "optuna.artifacts._upload.ArtifactMeta, ARTIFACTS_ATTR_PREFIX": lambda: _artifact_round_trip(),
    "optuna.study._frozen.FrozenStudy": _instance_has(_frozen_study, "study_name", "user_attrs"),
}
