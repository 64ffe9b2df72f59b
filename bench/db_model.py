"""A measured model of one worker's database load, as the study grows and more workers run.

    python bench/db_model.py [--prefill 100,10000] [--running 0,100,1000] [--trials 3]
        [--storage postgresql://postgres@127.0.0.1:5432/test] [--json]

One real ``ganhpo.worker.Worker`` (the class ``ganhpo worker`` runs) trains ``--trials`` tiny
real trials (60 steps, an evaluation every 15 with a checkpoint, the shipped MNIST subset) of a
study on PostgreSQL that already holds ``--prefill`` finished trials and ``--running`` trials of
other workers (running, beating, with the attributes and curve points a real trial has by
then). The study has ganhpo's default sampler and pruner (multivariate TPE, the median rule):
what a user gets. Every database statement the worker runs is attributed to what the worker was
doing (taking a trial, opening it, reserving, reporting, asking the pruner, checkpointing,
finishing, heartbeating, scanning for silent trials), and counted: connections (each a
transaction: the worker keeps no pool), statements, rows read, and time, per call of that
part. The budget lock's hold time is measured too.

From these the load of W workers follows: per trial, per evaluation and per heartbeat, times
the rates at which W workers run them. Which parts grow with the running trials (W) or the
study's size is the point: those are what limits how many workers one database serves.
Results to stdout (a table per configuration, or JSON with --json), progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from _common import bulk_fill, cpu_model, scratch_database  # noqa: E402  (bench/, beside this)

DEFAULT_STORAGE = "postgresql://postgres@127.0.0.1:5432/test"
EVAL_STEPS = [15, 30, 45, 60]
# What a running (and a finished) ganhpo trial carries besides its parameters: the user
# attributes the worker writes at its start and evaluations (values of typical sizes).
ATTRS: dict[str, Any] = {
    "host": "gpu-node-042", "seed": 1234567, "device": "cuda:0", "g_params": 1_234_567,
    "d_params": 654_321, "steps_reserved": 500, "fid_std": {"15": 3.2, "30": 2.9},
    "checkpoint": {"id": "checkpoint-0123456789abcdef-0123456789abcdef", "step": 30},
    "grid": "grid-0123456789abcdef0123456789abcdef", "status": "running",
}  # fmt: skip

SPEC = """
[study]
name = "model"
objective = "fid"
seed = 0
max_trials = {budget}
heartbeat_interval = 1
grace_period = 3600

[dataset]
name = "mnist-subset"

[model]
width = 8
latent_dim = 16

[train]
steps = 60
batch_size = 32

[eval]
every = 15
samples = 100
final_samples = 100
kid = "off"

[search]
lr_g = {{ low = 5e-5, high = 5e-3, log = true }}
lr_d = {{ low = 5e-5, high = 5e-3, log = true }}
"""

# The worker's parts, by the method or function that does them (see Worker.run).
PARTS = {
    "_sweep": "sweep checkpoint files",
    "fail_stale_trials": "scan for silent trials",
    "_take": "take a trial (ledger, lock)",
    "_open": "open it (trial cache, sampler)",
    "_config_for": "sample its parameters",
    "_best_value": "read the best value so far",
    "_resume": "look for its checkpoint",
    "_reserve": "reserve an interval",
    "_report": "report an evaluation",
    "after_evaluation": "ask the pruner",
    "_save_checkpoint": "record a checkpoint",
    "_finish": "finish (record, tell)",
    "run_trial": "trial's other attributes",
    "heartbeat": "heartbeat",
}


class Meter:
    """Statements, rows, connections and time, attributed to the part the worker is in."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.calls: dict[str, int] = defaultdict(int)
        self.first: dict[str, dict[str, float]] = {}
        self.totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.lock_holds: list[float] = []

    def part(self) -> str:
        if threading.current_thread().name.startswith("heartbeat"):
            return "heartbeat"
        stack = getattr(self.local, "stack", None)
        return stack[-1] if stack else "other"

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        stack = self.local.__dict__.setdefault("stack", [])
        stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            stack.pop()
            self.totals[name]["ms"] += 1000 * (time.perf_counter() - started)
            self.calls[name] += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.inside(name):
                return fn(*args, **kwargs)

        return wrapped

    def listen(self, engine: Any) -> None:
        import sqlalchemy

        def connect(*args: Any) -> None:
            self.totals[self.part()]["connections"] += 1

        def statement(conn: Any, cursor: Any, *args: Any) -> None:
            part = self.part()
            self.totals[part]["statements"] += 1
            if cursor.description is not None:  # a SELECT: psycopg2 counts its rows
                self.totals[part]["rows"] += max(cursor.rowcount, 0)

        sqlalchemy.event.listen(engine, "connect", connect)
        sqlalchemy.event.listen(engine, "after_cursor_execute", statement)


def measure(url: str, prefill: int, running: int, trials: int) -> dict[str, Any]:
    """One configuration: the study filled, one worker's trials metered."""
    import optuna
    from optuna.distributions import FloatDistribution

    from ganhpo.spec import parse_study_spec
    from ganhpo.storage import open_storage
    from ganhpo.study import create_study
    from ganhpo.worker import Worker, WorkerOptions, open_worker_study
    from ganhpo.worker import _worker as worker_module

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_study_spec(
        tomllib.loads(SPEC.format(budget=prefill + running + trials + 10)), source="db_model"
    )
    create_study(spec, open_storage(url, create_schema=True))
    space = {name: FloatDistribution(5e-5, 5e-3, log=True) for name in ("lr_g", "lr_d")}
    curve = lambda level: [level * 4, level * 3, level * 2, level]  # noqa: E731
    fill = {"steps": EVAL_STEPS, "user_attrs": ATTRS}
    bulk_fill(url, "model", prefill, 0, space, curve, **fill)  # type: ignore[arg-type]
    bulk_fill(url, "model", running, 1, space, curve, running=True, **fill)  # type: ignore[arg-type]

    meter = Meter()
    artifacts = tempfile.mkdtemp(prefix="db-model-")
    study, spec, storage = open_worker_study("model", lambda **kw: open_storage(url, **kw))
    w = Worker(study, spec, WorkerOptions(n_trials=trials, artifacts=artifacts), storage=storage)
    w.preflight()  # the extractor and real statistics, before anything is metered
    for name in ("_sweep", "_take", "_open", "_config_for", "_best_value", "_resume",
                 "_reserve", "_report", "_save_checkpoint", "_finish", "run_trial"):  # fmt: skip
        setattr(w, name, meter.wrap(name, getattr(w, name)))
    w.strategy.after_evaluation = meter.wrap(  # type: ignore[method-assign]
        "after_evaluation", w.strategy.after_evaluation
    )
    real_stale, real_lock = worker_module.fail_stale_trials, worker_module.budget_lock
    beats = [0]
    real_beat = worker_module.record_heartbeat

    def beat(*args: Any) -> Any:
        beats[0] += 1
        return real_beat(*args)

    @contextlib.contextmanager
    def timed_lock(*args: Any, **kwargs: Any) -> Iterator[None]:
        with real_lock(*args, **kwargs):
            held = time.perf_counter()
            try:
                yield
            finally:
                meter.lock_holds.append(1000 * (time.perf_counter() - held))

    worker_module.record_heartbeat = beat
    worker_module.fail_stale_trials = meter.wrap("fail_stale_trials", real_stale)
    worker_module.budget_lock = timed_lock
    meter.listen(storage.engine)
    first: dict[str, float] = {}
    try:
        real_sample = w._config_for

        def sample_first(trial: Any) -> Any:  # the first sampling loads the whole study
            if first:
                return real_sample(trial)
            before = dict(meter.totals["_config_for"])
            config = real_sample(trial)
            first.update(
                {k: v - before.get(k, 0.0) for k, v in meter.totals["_config_for"].items()}
            )
            return config

        w._config_for = sample_first  # type: ignore[method-assign]
        started = time.perf_counter()
        w.run()
        wall = time.perf_counter() - started
    finally:
        worker_module.fail_stale_trials, worker_module.budget_lock = real_stale, real_lock
        worker_module.record_heartbeat = real_beat
    meter.calls["heartbeat"] = beats[0]
    rows = []
    for name, label in PARTS.items():
        totals, calls = meter.totals.get(name, {}), meter.calls.get(name, 0)
        if name == "_config_for" and first:  # later samplings apart from the first
            totals = {k: v - first.get(k, 0.0) for k, v in totals.items()}
            calls -= 1
            rows.append(_row("sample the first (loads the study)", first, 1))
        row = _row(label, totals, calls)
        if name == "run_trial":  # its time is the training's
            row["ms_per_call"] = None
        rows.append(row)
    return {
        "prefill": prefill,
        "running": running,
        "trials": trials,
        "wall_s": round(wall, 1),
        "lock_hold_ms_p50": round(statistics.median(meter.lock_holds), 1),
        "lock_holds": len(meter.lock_holds),
        "parts": rows,
    }


def _row(label: str, totals: dict[str, float], calls: int) -> dict[str, Any]:
    per = max(calls, 1)
    return {
        "part": label,
        "calls": calls,
        **{
            f"{k}_per_call": round(totals.get(k, 0.0) / per, 1)
            for k in ("connections", "statements", "rows", "ms")
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefill", default="100,10000")
    parser.add_argument("--running", default="0,100,1000")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--storage", default=DEFAULT_STORAGE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("ganhpo").setLevel(logging.WARNING)
    print(f"{cpu_model()}; storage {args.storage}", file=sys.stderr)
    results = []
    for prefill in [int(x) for x in args.prefill.split(",")]:
        for running in [int(x) for x in args.running.split(",")]:
            with scratch_database(args.storage, "db_model") as url:
                print(f"pre-fill {prefill}, running {running} ...", file=sys.stderr, flush=True)
                results.append(measure(url, prefill, running, args.trials))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"\n## {r['prefill']} finished trials, {r['running']} running "
            f"(lock held {r['lock_hold_ms_p50']} ms, median of {r['lock_holds']})"
        )
        keys = list(r["parts"][0])
        print(" | ".join(keys))
        for row in r["parts"]:
            print(" | ".join(str(row[k]) for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
