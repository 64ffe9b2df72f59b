"""Helpers the benchmark scripts share: the machine they ran on, a scratch database."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``bench/results/NAME.json`` with the command that measured it, the
    CPU and the date: the file BENCHMARKS.md quotes (tests/test_figures.py checks each quoted
    figure against it)."""
    argv = [f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]
    record = {
        "command": "python " + " ".join(argv),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        **data,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``admin_url``, dropped afterwards."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(admin_url).set(drivername="postgresql+psycopg2")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bulk_fill(
    url: str,
    study_name: str,
    n: int,
    seed: int,
    distributions: dict[str, Any],
    curve: Callable[[float], list[float]],
    *,
    steps: Sequence[int] | None = None,
    running: bool = False,
    user_attrs: dict[str, Any] | None = None,
) -> float:
    """Add ``n`` completed trials to the existing study ``study_name``, each with a value of
    every distribution and the FID-like ``curve(level)`` as its intermediate values (at
    ``steps``, default 0, 1, ...); returns the seconds taken. With ``running``, the trials are
    RUNNING instead, without a value, with a heartbeat recorded now (other workers' trials);
    ``user_attrs`` are set on each.

    ``Study.add_trials`` writes one transaction per trial (about 0.1 s each here); thousands of
    them would take longer than a benchmark, so the rows go in with one executemany per table,
    in Optuna's own schema (its SQLAlchemy models).
    """
    import datetime
    import json
    import random
    import time

    import optuna
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    from ganhpo.storage import open_storage

    started = time.perf_counter()
    storage = open_storage(url)
    study = optuna.load_study(storage=storage, study_name=study_name)
    study_id = study._study_id
    first = len(study.get_trials(deepcopy=False))
    rng = random.Random(seed)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    dists = {k: distribution_to_json(d) for k, d in distributions.items()}
    state = TrialState.RUNNING if running else TrialState.COMPLETE
    with storage.engine.begin() as conn:
        if n:
            conn.execute(
                models.TrialModel.__table__.insert(),
                [
                    {"number": first + i, "study_id": study_id, "state": state,
                     "datetime_start": now, "datetime_complete": None if running else now}
                    for i in range(n)
                ],
            )  # fmt: skip
        ids = dict(
            conn.execute(
                models.TrialModel.__table__.select()
                .with_only_columns(models.TrialModel.number, models.TrialModel.trial_id)
                .where(models.TrialModel.study_id == study_id, models.TrialModel.number >= first)
            ).all()
        )
        params, values, intermediate, attrs = [], [], [], []
        finite_v = models.TrialValueModel.TrialValueType.FINITE
        finite_i = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
        for trial_id in ids.values():
            level = rng.uniform(50.0, 500.0)
            for name, dist in distributions.items():
                value = (
                    10 ** rng.uniform(math.log10(dist.low), math.log10(dist.high))
                    if dist.log
                    else rng.uniform(dist.low, dist.high)
                )
                params.append(
                    {"trial_id": trial_id, "param_name": name, "param_value": value,
                     "distribution_json": dists[name]}
                )  # fmt: skip
            points = curve(level)
            if not running:
                values.append(
                    {"trial_id": trial_id, "objective": 0, "value": points[-1],
                     "value_type": finite_v}
                )  # fmt: skip
            intermediate += [
                {"trial_id": trial_id, "step": s, "intermediate_value": v,
                 "intermediate_value_type": finite_i}
                for s, v in zip(steps or range(len(points)), points, strict=False)
            ]  # fmt: skip
            attrs += [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in (user_attrs or {}).items()
            ]
        if n:
            conn.execute(models.TrialParamModel.__table__.insert(), params)
            if values:
                conn.execute(models.TrialValueModel.__table__.insert(), values)
            conn.execute(models.TrialIntermediateValueModel.__table__.insert(), intermediate)
            if attrs:
                conn.execute(models.TrialUserAttributeModel.__table__.insert(), attrs)
            if running:
                conn.execute(
                    models.TrialHeartbeatModel.__table__.insert(),
                    [{"trial_id": i} for i in ids.values()],  # the server's time now
                )
    loaded = len(optuna.load_study(study_name=study_name, storage=storage).get_trials())
    assert loaded == first + n, (loaded, first, n)
    storage.engine.dispose()
    return time.perf_counter() - started


def worker_env(cache: Path, data_dir: str | None) -> dict[str, str]:
    """The environment of a benchmark's ``ganhpo`` processes: one torch thread each, a shared
    statistics cache, the full MNIST (``data_dir``, else where the environment says), ganhpo
    from this checkout."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GANHPO_CACHE_DIR=str(cache))
    if data_dir is not None:
        env["GANHPO_DATA_DIR"] = data_dir
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
