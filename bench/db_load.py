"""Database load of many workers: the real worker's storage protocol, training replaced by sleep.

    python bench/db_load.py [--workers 500] [--processes 4] [--prefill 100,50000]
        [--via direct,pgbouncer] [--trial-seconds 60] [--trials-per-worker 1] [--json]

Each simulated worker is a ``ganhpo.worker.Worker`` whose training is a sleep: it runs the real
loop (``Worker.run``): hand stale trials over, take a trial under the budget lock (repair, count
the budget, ``ask``), a heartbeat thread, the trial's attributes, ``report`` and
``should_prune`` at each of 4 evaluations, then ``_finish`` (record, ``tell``). One in 30 trials
is abandoned mid-trial without a word, as by a worker killed there: the heartbeat stops, the
grace period passes, and another worker hands it over and resumes it.

How a simulated worker maps to a real one: it is a thread with its own heartbeat thread and its
own storage (engine, connections, Optuna's in-memory trial cache), as a real worker process has;
for a study pre-filled with more than ``--own-storage-up-to`` trials (1,000) the workers of one
process share one storage, since 500 caches of 50,000 trials do not fit in memory: their
connections are still opened per transaction, each worker its own. The cache is filled before
the clock starts (``load_s``: what a real worker pays once when it starts). All threads of a
process share one Python interpreter on 2 cores, so the numbers are a lower bound on what
separate machines reach. The sampler is random and
the pruner none, so that neither's computation masks the storage (a real study's TPE reads the
trials it learns from, cached per process).

For each way in (``direct``: a private PostgreSQL with its default max_connections = 100;
``pgbouncer``: the same server behind Debian's PgBouncer in transaction mode with a pool of
20) and each pre-fill (completed trials bulk-inserted before the workers start), the study's
budget is pre-fill + workers x trials-per-worker. Reported: asks per second (trials started,
from the moment all workers are ready to the last one's end), p50 and p99 latency of taking a
trial (lock, repair, count, ask), the polls apart (calls that found nothing to take: a worker
waiting for the study's last trials asks every few seconds), peak server connections
(pg_stat_activity, sampled every 0.2 s), the times a worker found the server full, and lost
(left RUNNING or WAITING), duplicated (a chain completed twice) and over-budget trials.
Results go to stdout (a table, or JSON with --json), progress to stderr.

It imports the tests' private-server helpers (tests/pg.py) and needs PostgreSQL's binaries and
Debian's pgbouncer, as the tests do. Run it with ``PYTHONPATH=DIR`` to measure another
checkout of ganhpo (the simulated worker uses only ``Worker``'s loop and trial ending).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # pg.py: the private PostgreSQL and PgBouncer
if not os.environ.get("PYTHONPATH"):  # ganhpo from this checkout, unless PYTHONPATH names one
    sys.path.insert(1, str(ROOT))  # (inserted always, it hid the other checkout's: the code
    # "before" in BENCHMARKS 4b's first side-by-side table was this checkout's too)

from _common import bulk_fill, cpu_model  # noqa: E402  (bench/, beside this script)

EVALUATIONS = 4  # report + should_prune per trial
ABANDON_EVERY = 30  # one trial in this many is abandoned mid-trial (a killed worker)
POOL = 20  # PgBouncer's server connections for the study's database

SPEC = """
[study]
name = "load"
objective = "fid"
seed = 0
max_trials = {budget}
heartbeat_interval = 10
grace_period = 30
max_retry = 5

[dataset]
name = "mnist-subset"

[train]
steps = 400

[eval]
every = 100
samples = 100
final_samples = 100

[search]
lr_g = {{ low = 5e-5, high = 5e-3, log = true }}
lr_d = {{ low = 5e-5, high = 5e-3, log = true }}

[sampler]
name = "random"

[pruner]
name = "none"
"""


# ------------------------------------------------------------------------- the workers
def _sim_worker_class() -> Any:
    import math
    import random

    import optuna
    from optuna.trial import TrialState

    from ganhpo.train.loop import EvalRecord, TrainResult
    from ganhpo.worker import Worker
    from ganhpo.worker import _worker as _worker_module

    class SimWorker(Worker):
        """A worker whose training is a sleep; everything that talks to the database is the
        real worker's."""

        def __init__(
            self, study: Any, spec: Any, storage: Any, cfg: dict[str, Any], number: int
        ) -> None:
            # Worker.__init__ without the dataset, the evaluator and the artifact store.
            from ganhpo.worker import WorkerOptions
            from ganhpo.worker._strategies import strategy_for

            self.study, self.spec, self.storage = study, spec, storage
            self.strategy = strategy_for(spec)
            self.options = WorkerOptions()
            self.budget, self.max_steps, self.steps_spent, self.spent = (
                spec.max_trials,
                None,
                0,
                "",
            )
            self.base = spec.base
            self.artifacts = None
            self._evaluator = None
            self.host = f"sim-{cfg['index']}-{number}"
            self.stop_requested = None
            self._stop_deadline = math.inf
            self._last_failure = None
            self._study_key = None
            self._files = {}
            self.max_seconds, self.seconds_spent = None, 0.0
            clock = getattr(_worker_module, "_Clock", None)  # absent in older checkouts
            self._link_start = clock() if clock is not None else None
            self.ledger = None
            self._costs_counted = False
            self.cfg = cfg
            self.rng = random.Random(self.host)  # each worker its own draws
            self.asks: list[float] = []
            self.polls: list[float] = []
            self.full = 0

        def next_trial(self) -> Any:
            t0 = time.perf_counter()
            trial = super().next_trial()
            # Calls that found nothing to take (the budget spent, waiting for the last
            # trials) apart: they are polls, not starts.
            (self.asks if trial is not None else self.polls).append(time.perf_counter() - t0)
            return trial

        def _train_trial(self, trial: Any, heartbeat: Any, grids: Any) -> Any:
            started = time.monotonic()
            self._db(trial.set_user_attr, "host", self.host)
            self._db(trial.set_user_attr, "seed", trial.number)
            self._db(trial.suggest_float, "lr_g", 5e-5, 5e-3, log=True)
            self._db(trial.suggest_float, "lr_d", 5e-5, 5e-3, log=True)
            abandon = self.rng.randrange(ABANDON_EVERY) == 0
            level = self.rng.uniform(50, 500)
            history = []
            for k in range(1, EVALUATIONS + 1):
                time.sleep(self.cfg["trial_seconds"] / EVALUATIONS)
                if abandon and k == 2:
                    return None  # killed here: no more heartbeats, no word
                step = k * 100
                fid = level * (1 + 2 / k)
                history.append(
                    EvalRecord(
                        step,
                        fid,
                        math.nan,
                        math.nan,
                        100,
                        0.0,
                        0.0,
                        0.0,
                        1.0,
                        final=k == EVALUATIONS,
                    )
                )
                self._db(trial.report, fid, step)
                if self.strategy.after_evaluation(self, trial) == "prune":
                    break
            result = TrainResult(steps=history[-1].step, stopped_early=False, history=history)
            state = TrialState.COMPLETE if result.final is not None else TrialState.PRUNED
            return self._finish(trial, state, "completed", started, result)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return SimWorker


def process_main(cfg: dict[str, Any], ready: Any, start: Any, out: Any) -> None:
    """One process: ``cfg['threads']`` simulated workers on one shared study object."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("ganhpo").setLevel(logging.WARNING)
    from ganhpo.storage import open_storage
    from ganhpo.study import load_study, study_spec

    SimWorker = _sim_worker_class()

    def open_one() -> tuple[Any, Any, Any]:
        storage = open_storage(
            cfg["url"], connect_timeout=300, heartbeat_interval=10, grace_period=30
        )
        study = load_study("load", storage)
        study.get_trials(deepcopy=False)  # fills the cache, as a real worker's first ask does
        return study, study_spec(study), storage

    t0 = time.perf_counter()
    if cfg["own"]:  # each worker its own storage: its own engine (and pool, if any) and cache
        workers = [SimWorker(*open_one(), cfg, n) for n in range(cfg["threads"])]
    else:  # one storage per process: its trial cache shared (memory), connections per call
        study, spec, storage = open_one()
        workers = [SimWorker(study, spec, storage, cfg, n) for n in range(cfg["threads"])]
    load_seconds = time.perf_counter() - t0
    ready.put(load_seconds)
    start.wait()
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(
        {
            "asks": [a for w in workers for a in w.asks],
            "polls": [a for w in workers for a in w.polls],
            "end": time.time(),
        }
    )


# --------------------------------------------------------------------------- a config
def run_config(via: str, prefill_n: int, args: argparse.Namespace) -> dict[str, Any]:
    from faults import ConnectionWatch
    from optuna.distributions import FloatDistribution
    from pg import PgBouncer, PrivateServer

    budget = prefill_n + args.workers * args.trials_per_worker
    # Each simulated worker has a storage of its own (engine, connections, trial cache) unless
    # the study is large: 500 caches of 50,000 trials do not fit in memory, so the workers of
    # a process share one (their connections are still one per transaction each).
    own = prefill_n <= args.own_storage_up_to
    with PrivateServer() as server:
        server.create_database("load")
        direct = server.url("load")
        spec_path = Path(tempfile.mkdtemp()) / "load.toml"
        spec_path.write_text(SPEC.format(budget=budget))
        from ganhpo.cli import main as ganhpo_main

        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the results
            assert ganhpo_main(["-q", "study", "create", str(spec_path), "--storage", direct]) == 0
        space = {name: FloatDistribution(5e-5, 5e-3, log=True) for name in ("lr_g", "lr_d")}
        fill_seconds = bulk_fill(
            direct, "load", prefill_n, 0, space, lambda level: [level * 3, level * 2, level]
        )
        bouncer = PgBouncer(server, ["load"], pool_size=POOL) if via == "pgbouncer" else None
        if bouncer is not None:
            bouncer.__enter__()
        try:
            url = bouncer.url("load") if bouncer is not None else direct
            peak = ConnectionWatch(server.url("postgres"))
            peak.start()
            ctx = multiprocessing.get_context("spawn")
            ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
            per = [args.workers // args.processes] * args.processes
            for i in range(args.workers % args.processes):
                per[i] += 1
            procs = [
                ctx.Process(
                    target=process_main,
                    args=(
                        {
                            "url": url,
                            "threads": n,
                            "index": i,
                            "trial_seconds": args.trial_seconds,
                            "own": own,
                        },
                        ready,
                        start,
                        out,
                    ),
                )
                for i, n in enumerate(per)
            ]
            for p in procs:
                p.start()
            loads = [ready.get(timeout=1800) for _ in procs]
            t_start = time.time()
            start.set()
            results = [out.get(timeout=3600) for _ in procs]
            for p in procs:
                p.join()
            wall = max(r["end"] for r in results) - t_start
            peak.done.set()
            peak.join()
        finally:
            if bouncer is not None:
                bouncer.__exit__(None, None, None)
        counts = _end_state(direct, budget)
    asks = sorted(a for r in results for a in r["asks"])
    polls = sorted(a for r in results for a in r.get("polls", []))
    started = len(asks)
    return {
        "via": via,
        "prefill": prefill_n,
        "workers": args.workers,
        "storage": "per worker" if own else "per process",
        "budget": budget,
        "fill_s": round(fill_seconds, 1),
        "load_s": round(max(loads), 2),
        "wall_s": round(wall, 1),
        "asks_per_s": round(started / wall, 1),
        "ask_p50_ms": round(1000 * statistics.median(asks), 1),
        "ask_p99_ms": round(1000 * asks[min(len(asks) - 1, int(0.99 * len(asks)))], 1),
        "polls": len(polls),
        "poll_p50_ms": round(1000 * statistics.median(polls), 1) if polls else None,
        "peak_server_connections": peak.peak - 1,  # the sampler's own is not counted
        **counts,
    }


def _end_state(url: str, budget: int) -> dict[str, int]:
    """Lost, duplicated and over-budget trials, and how many were handed over."""
    from optuna.trial import TrialState

    from ganhpo.chains import counted_trials, member_of
    from ganhpo.storage import open_storage
    from ganhpo.study import load_study

    trials = load_study("load", open_storage(url)).get_trials(deepcopy=False)
    lost = sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING))
    complete: dict[int, int] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            complete[member_of(t)] = complete.get(member_of(t), 0) + 1
    counted = counted_trials(trials)
    return {
        "counted": counted,
        "handed_over": sum(1 for t in trials if t.system_attrs.get("retry_history")),
        "lost": lost,
        "duplicated": sum(n - 1 for n in complete.values()),
        "over_budget": max(0, counted - budget),
    }


# ----------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--prefill", default="100,50000", help="comma-separated trial counts")
    parser.add_argument("--via", default="direct,pgbouncer", help="direct, pgbouncer or both")
    parser.add_argument("--trial-seconds", type=float, default=60.0)
    parser.add_argument("--trials-per-worker", type=int, default=1)
    parser.add_argument(
        "--own-storage-up-to",
        type=int,
        default=1000,
        help="pre-fills up to this give each worker its own storage (default 1000)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import ganhpo

    print(f"ganhpo from {Path(ganhpo.__file__).parent}; {cpu_model()}", file=sys.stderr)
    rows = []
    for prefill_n in [int(x) for x in args.prefill.split(",")]:
        for via in args.via.split(","):
            print(f"{via}, pre-fill {prefill_n}, {args.workers} workers ...", file=sys.stderr)
            try:
                row = run_config(via, prefill_n, args)
            except Exception as e:  # a configuration that breaks is a result too
                row = {"via": via, "prefill": prefill_n, "workers": args.workers,
                       "error": f"{type(e).__name__}: {e}"[:300]}  # fmt: skip
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        print(" | ".join(keys))
        for r in rows:
            print(" | ".join(str(r.get(k, "")) for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
