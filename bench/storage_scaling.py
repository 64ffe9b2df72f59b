"""Storage scaling: many worker processes on one study database, with dummy trials.

    python bench/storage_scaling.py [--quick] [--storage postgresql://postgres@127.0.0.1:5432/test]
        [--workers 1,4,8,16] [--prefill 100,5000] [--backends postgresql,sqlite,grpc]
        [--trials 320] [--json]

Each worker process (multiprocessing, spawn) loops like ``ganhpo worker`` does, without the
training: under :func:`ganhpo.storage.budget_lock` it counts the study's trials with
:func:`ganhpo.worker.counted_trials` and starts one with ``study.ask`` unless the budget is
spent; then it suggests two floats, reports 20 intermediate values with ``should_prune`` after
each (the default study's median pruner, warm-up scaled to 20 steps), and tells the study the
result (complete or pruned). The sampler is random, so its cost does not mask the storage's.

For each backend, each number of workers and each pre-fill (completed trials with 20
intermediate values already in the study, bulk-inserted), the study gets a budget of
``pre-fill + --trials`` and the workers run until it is spent. Reported: finished trials per
second (from the moment all workers are ready to the last one's end), median and p95 latency
of ask (lock + count + ask, as a worker sees it), suggest, report, should_prune and tell, and
the trials lost (left unfinished), duplicated (finished by two workers) or over the budget
(target 0 for each).

Backends: ``postgresql`` (a fresh database on --storage's server, dropped afterwards),
``sqlite`` (a fresh file; the SQLite default of ganhpo) and ``grpc``: Optuna's gRPC storage proxy
(``run_grpc_proxy_server`` in its own process, over the same PostgreSQL) with the workers'
trial calls through ``GrpcStorageProxy`` and the budget lock still taken on PostgreSQL (the
proxy has no lock: :func:`ganhpo.storage.budget_lock` refuses a non-RDB storage).
Results go to stdout (a table, or JSON with --json), progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import queue
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

from _common import bulk_fill, cpu_model, save_results, scratch_database  # noqa: E402  (bench/)

DEFAULT_STORAGE = "postgresql://postgres@127.0.0.1:5432/test"
STEPS = 20  # intermediate values per trial
OPS = ("ask", "suggest", "report", "should_prune", "tell")


def _distributions() -> dict[str, Any]:
    from optuna.distributions import FloatDistribution

    return {"x": FloatDistribution(0.0, 1.0), "lr": FloatDistribution(1e-5, 1e-2, log=True)}


def _curve(level: float) -> list[float]:
    """A falling FID-like curve ending at ``level``."""
    return [level * (1.0 + 2.0 / (step + 1)) for step in range(STEPS)]


def _pruner() -> Any:
    import optuna

    # A median pruner (5 startup trials, warm-up 1/5 of the trial): some trials stop early.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=STEPS // 5)


# ------------------------------------------------------------------------------ databases
def prefill(url: str, study_name: str, n: int, seed: int) -> float:
    """Create the study with ``n`` completed trials (bulk-inserted); returns the seconds taken."""
    import optuna

    from ganhpo.storage import open_storage

    started = time.perf_counter()
    storage = open_storage(url, create_schema=True)
    optuna.create_study(storage=storage, study_name=study_name, direction="minimize")
    storage.engine.dispose()
    bulk_fill(url, study_name, n, seed, _distributions(), _curve)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- the workers
def worker_main(cfg: dict[str, Any], ready: Any, start: Any, out: Any) -> None:
    """One worker process: dummy trials until the study's budget is spent."""
    import optuna

    from ganhpo.storage import budget_lock, open_storage
    from ganhpo.worker import counted_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # "experimental" warnings of the gRPC proxy
    lock_storage = open_storage(cfg["url"])
    if cfg["grpc"] is not None:
        host, port = cfg["grpc"]
        storage: Any = optuna.storages.GrpcStorageProxy(host=host, port=port)
        storage.wait_server_ready(timeout=60)
    else:
        storage = lock_storage
    study = optuna.load_study(
        study_name=cfg["study"],
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=cfg["index"]),
        pruner=_pruner(),
    )
    t0 = time.perf_counter()
    study.get_trials(deepcopy=False)  # a worker that has been running has its cache filled
    cold = time.perf_counter() - t0
    rng = random.Random(cfg["index"])
    lat: dict[str, list[float]] = {op: [] for op in OPS}
    done: list[int] = []
    ready.put(cfg["index"])
    start.wait()
    began = time.monotonic()
    while True:
        t = time.perf_counter()
        with budget_lock(lock_storage, cfg["study"]):
            if counted_trials(study.get_trials(deepcopy=False)) >= cfg["budget"]:
                break
            trial = study.ask()
        lat["ask"].append(time.perf_counter() - t)
        t = time.perf_counter()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        lat["suggest"].append(time.perf_counter() - t)
        pruned = False
        curve = _curve(rng.uniform(50.0, 500.0))
        for step, value in enumerate(curve):
            t = time.perf_counter()
            trial.report(value, step)
            lat["report"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pruned = trial.should_prune()
            lat["should_prune"].append(time.perf_counter() - t)
            if pruned:
                break
        t = time.perf_counter()
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
        lat["tell"].append(time.perf_counter() - t)
        done.append(trial.number)
    out.put(
        {"index": cfg["index"], "began": began, "ended": time.monotonic(), "cold_s": cold,
         "lat": lat, "done": done}
    )  # fmt: skip
    lock_storage.engine.dispose()


def grpc_server_main(url: str, host: str, port: int) -> None:
    """Optuna's gRPC proxy in front of ``url`` (with the per-process trial cache it recommends)."""
    import optuna

    from ganhpo.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # "experimental" warnings
    optuna.storages.run_grpc_proxy_server(
        optuna.storages.get_storage(open_storage(url)), host=host, port=port
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _collect(q: Any, procs: list[Any]) -> list[Any]:
    """One message from each process; stops at once when one of them has died."""
    got: list[Any] = []
    while len(got) < len(procs):
        try:
            got.append(q.get(timeout=2))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"a worker process died (exit codes {dead})") from None
    return got


def run_config(
    backend: str, url: str, n_workers: int, n_prefill: int, n_new: int
) -> dict[str, Any]:
    """One measurement: a fresh pre-filled study, ``n_workers`` processes, ``n_new`` trials."""
    import optuna

    from ganhpo.storage import open_storage

    ctx = multiprocessing.get_context("spawn")
    name = f"scaling-{backend}-{n_workers}w-{n_prefill}"
    fill_s = prefill(url, name, n_prefill, seed=n_prefill)
    server = None
    grpc = None
    if backend == "grpc":
        port = _free_port()
        grpc = ("127.0.0.1", port)
        server = ctx.Process(target=grpc_server_main, args=(url, *grpc), daemon=True)
        server.start()
    ready = ctx.Queue()
    start = ctx.Event()
    out = ctx.Queue()
    procs = []
    for i in range(n_workers):
        cfg = {"url": url, "grpc": grpc, "study": name, "index": i, "budget": n_prefill + n_new}
        p = ctx.Process(target=worker_main, args=(cfg, ready, start, out))
        p.start()
        procs.append(p)
    _collect(ready, procs)  # every worker has loaded the study and filled its cache
    began = time.monotonic()
    start.set()
    results: list[dict[str, Any]] = _collect(out, procs)
    for p in procs:
        p.join()
    if server is not None:
        server.terminate()
        server.join()
    ended = max(r["ended"] for r in results)

    storage = open_storage(url)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    new = [t for t in trials if t.number >= n_prefill]
    finished = [t for t in new if t.state.is_finished()]
    told = Counter(n for r in results for n in r["done"])
    state = {t.number: t.state for t in trials}
    told_unfinished = sum(1 for n in told if n not in state or not state[n].is_finished())
    lat = {op: [x for r in results for x in r["lat"][op]] for op in OPS}
    return {
        "backend": backend,
        "workers": n_workers,
        "prefill": n_prefill,
        "new_trials": n_new,
        "prefill_s": fill_s,
        "wall_s": ended - began,
        "trials_per_s": len(finished) / (ended - began),
        "cold_load_s": statistics.median(r["cold_s"] for r in results),
        "latency_ms": {
            op: {"median": 1000 * statistics.median(v), "p95": 1000 * _p95(v), "n": len(v)}
            for op, v in lat.items()
            if v
        },
        "lost": len(new) - len(finished) + told_unfinished,
        "duplicated": sum(c - 1 for c in told.values() if c > 1),
        "over_budget": max(len(new) - n_new, 0),
        "under_budget": max(n_new - len(finished), 0),
        "pruned": sum(1 for t in new if t.state == optuna.trial.TrialState.PRUNED),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@contextlib.contextmanager
def backend_url(backend: str, admin_url: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'scaling-{uuid.uuid4().hex[:6]}.db'}"
    else:
        with scratch_database(admin_url, "bench_storage") as url:
            yield url


def print_table(rows: list[dict[str, Any]], meta: str) -> None:
    print(meta)
    head = "".join(f"{op + ' ms':>20}" for op in OPS)
    print(
        f"\n{'backend':10} {'pre-fill':>8} {'workers':>7} {'trials/s':>9}{head}"
        f"   {'lost':>4} {'dup':>4} {'over':>4}"
    )
    print(f"{'':37}" + "".join(f"{'median / p95':>20}" for _ in OPS))
    for r in rows:
        cells = "".join(
            f"{r['latency_ms'][op]['median']:>11.1f} /{r['latency_ms'][op]['p95']:>7.1f}"
            for op in OPS
        )
        print(
            f"{r['backend']:10} {r['prefill']:>8} {r['workers']:>7} {r['trials_per_s']:>9.1f}"
            f"{cells}   {r['lost']:>4} {r['duplicated']:>4} {r['over_budget']:>4}"
        )
    bad = [r for r in rows if r["lost"] or r["duplicated"] or r["over_budget"] or r["under_budget"]]
    print(
        "\nlost / duplicated / over-budget trials: "
        + ("none in any configuration (target 0: met)" if not bad else f"{len(bad)} BAD rows")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 4 workers, smaller studies")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="PostgreSQL server URL")
    parser.add_argument("--workers", help="worker counts (default 1,4,8,16; quick 1,4)")
    parser.add_argument("--prefill", help="trials already in the study (default 100,5000)")
    parser.add_argument("--backends", default="postgresql,sqlite,grpc")
    parser.add_argument("--trials", type=int, help="new trials per measurement (default 320)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = [int(w) for w in (args.workers or ("1,4" if args.quick else "1,4,8,16")).split(",")]
    fills = [
        int(n) for n in (args.prefill or ("100,1000" if args.quick else "100,5000")).split(",")
    ]
    n_new = args.trials or (40 if args.quick else 320)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("postgresql", "sqlite", "grpc"):
            parser.error(f"unknown backend {b!r}; valid: postgresql, sqlite, grpc")
    needs = ("grpc", "google.protobuf")
    if "grpc" in backends and not all(_importable(m) for m in needs):
        parser.error(
            "the grpc backend needs grpcio and protobuf: pip install -e '.[bench]', or pass "
            "--backends postgresql,sqlite"
        )
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            with backend_url(backend, args.storage, Path(tmp)) as url:
                for n_prefill in fills:
                    for n in workers:
                        print(
                            f"{backend}: {n} worker(s), {n_prefill} trials pre-filled ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        row = run_config(backend, url, n, n_prefill, n_new)
                        print(
                            f"  {row['trials_per_s']:.1f} trials/s (pre-fill {row['prefill_s']:.1f}"
                            f" s, cache fill {row['cold_load_s']:.2f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                        rows.append(row)
    meta = (
        f"{cpu_model()}, {os.cpu_count()} cores, PostgreSQL at {args.storage}; "
        f"{n_new} new dummy trials per row ({STEPS} reports each unless pruned), random "
        f"sampler, median pruner; total wall {time.perf_counter() - started:.0f} s"
    )
    save_results("storage_scaling" + ("_quick" if args.quick else ""), {"meta": meta, "rows": rows})
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
    else:
        print_table(rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
