"""What a worker costs: one trial run by a real worker on PostgreSQL vs the bare training loop.

    python bench/overhead.py [--quick] [--storage postgresql://postgres@127.0.0.1:5432/test]
        [--data-dir ../shared/data/mnist] [--threads 1] [--json]

The configuration is the default study's (``studies/mnist-dcgan.toml``: DCGAN width 32, latent
64, batch 64, full MNIST, checkpoints every 1000 steps) with nothing searched, so the worker's
trial and the bare ``Trainer.run`` train exactly the same thing with the same seed. The worker
is ``ganhpo.worker.Worker`` as ``ganhpo worker`` builds it: a fresh PostgreSQL database
(created here and dropped afterwards), heartbeats, the stale-trial callback, and a directory
artifact store for checkpoints, sample grids and the final generator.

Two parts, each alternating bare and worker runs (the order swapped every round):

1. evaluation off (``eval.every = 0``): images/s of the worker's trial over the bare loop's,
   end to end (model building, checkpoints, database calls, uploads), the final evaluation's
   time taken out of both; target >= 0.95;
2. evaluation at the spec's cadence (every 500 steps on 2000 samples, final on 10000): the share
   of the worker trial's wall time spent in evaluation (target <= 10 %) and in database calls,
   measured and extrapolated to the spec's 5000-step trial; and how much of one evaluation is
   KID (100 subsets), which an FID study computes only at the final evaluation
   (``[eval] kid = "final"``, the default).

Database time is the time the worker's main thread spends in ``Worker._db`` (every storage
call of the worker goes through it: ask under the budget lock, report, should_prune,
set_user_attr, tell, stale-trial checks); the heartbeat thread is timed separately.
Results go to stdout (a table, or JSON with --json), progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402
from _common import cpu_model, save_results, scratch_database  # noqa: E402  (bench/, beside this)

from ganhpo.data import load_dataset  # noqa: E402
from ganhpo.metrics import Evaluator  # noqa: E402
from ganhpo.spec import StudySpec, load_toml, parse_study_spec  # noqa: E402
from ganhpo.storage import open_storage  # noqa: E402
from ganhpo.study import create_study  # noqa: E402
from ganhpo.train import Trainer  # noqa: E402
from ganhpo.worker import Worker, WorkerOptions, open_worker_study, trial_seed  # noqa: E402

T = TypeVar("T")

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_SPEC = ROOT / "studies" / "mnist-dcgan.toml"
DEFAULT_STORAGE = "postgresql://postgres@127.0.0.1:5432/test"
SPEC_TRIAL_STEPS = 5000  # the default study's trial length, for the extrapolation


class TimedWorker(Worker):
    """The real worker, with the wall time of each of its database calls recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.db_calls: dict[str, list[float]] = defaultdict(list)

    def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return super()._db(fn, *args, **kwargs)
        finally:
            name = getattr(fn, "__name__", type(fn).__name__)
            if name == "<lambda>":  # name it after the method it was written in
                name = fn.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1]
            self.db_calls[name].append(time.perf_counter() - started)


def make_spec(steps: int, *, eval_on: bool, name: str) -> StudySpec:
    """The default study's configuration, ``steps`` long, nothing searched."""
    raw = load_toml(DEFAULT_SPEC)
    raw["study"] = {**raw["study"], "name": name, "max_trials": None}
    raw["study"].pop("max_trials")
    raw["train"] = {**raw["train"], "steps": steps}
    if not eval_on:  # the final evaluation cannot be turned off: make it small (excluded anyway)
        raw["eval"] = {**raw["eval"], "every": 0, "final_samples": raw["eval"]["samples"]}
    raw.pop("search", None)  # nothing searched (an empty [search] is refused)
    raw.pop("baselines", None)
    raw["device"] = "cpu"
    return parse_study_spec(raw, source=f"overhead spec {name}")


def bare_run(spec: StudySpec, seed: int, data: Any, evaluator: Evaluator) -> dict[str, Any]:
    """Trainer.run of the spec's configuration, no storage, no callbacks."""
    config = dataclasses.replace(spec.base, seed=seed)
    started = time.perf_counter()
    trainer = Trainer(config, data=data, evaluator=evaluator)
    result = trainer.run()
    wall = time.perf_counter() - started
    evals = [r.eval_seconds for r in result.history]
    return {"wall": wall, "eval": result.eval_seconds, "train": result.train_seconds,
            "steps": result.steps, "db": 0.0, "evals": evals}  # fmt: skip


def worker_run(
    url: str, spec: StudySpec, data_dir: Path, artifacts: str
) -> tuple[dict[str, Any], int, dict[str, list[float]], list[float]]:
    """One trial of a real worker (``n_trials = 1``), as ``ganhpo worker`` sets it up."""
    study, _, storage = open_worker_study(
        spec.name, lambda **heartbeat: open_storage(url, **heartbeat)
    )
    options = WorkerOptions(n_trials=1, data_dir=data_dir, artifacts=artifacts)
    worker = TimedWorker(study, spec, options, storage=storage)
    # Built once per worker (classifier, real statistics from the disk cache): not per trial.
    evaluator = worker.evaluator(spec.base)
    for n in (spec.base.eval.samples, spec.base.eval.final_samples):
        evaluator.real_stats(n)
    beats: list[float] = []
    record_heartbeat = storage.record_heartbeat

    def timed_heartbeat(trial_id: int) -> None:
        t0 = time.perf_counter()
        record_heartbeat(trial_id)
        beats.append(time.perf_counter() - t0)

    storage.record_heartbeat = timed_heartbeat  # type: ignore[method-assign]
    started = time.perf_counter()
    summary = worker.run()
    wall = time.perf_counter() - started
    number = summary.trials[0]
    trial = study.get_trials(deepcopy=False)[number]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("status")
    db = sum(sum(v) for v in worker.db_calls.values())
    storage.engine.dispose()
    out = {
        "wall": wall,
        "eval": float(trial.user_attrs["eval_seconds"]),
        "train": float(trial.user_attrs["train_seconds"]),
        "steps": int(trial.user_attrs["steps"]),
        "db": db,
    }
    return out, number, dict(worker.db_calls), beats


def _other(run: dict[str, Any]) -> float:
    """Wall time outside training steps and evaluations (setup, callbacks, database, files)."""
    return float(run["wall"] - run["train"] - run["eval"])


def images_per_s(run: dict[str, float], batch: int) -> float:
    """Real images per second of wall time, evaluation taken out."""
    return run["steps"] * batch / (run["wall"] - run["eval"])


def kid_share(
    generator: torch.nn.Module, data: Any, spec: StudySpec, reps: int
) -> dict[str, float]:
    """Seconds of one evaluation at the spec's sample count with KID (100 subsets) and without."""
    ev = spec.base.eval
    evaluator = Evaluator(
        data, extractor=ev.extractor, seed=ev.seed, latent_dim=spec.base.model.latent_dim
    )
    times: dict[str, list[float]] = {"fid_and_kid": [], "fid_only": []}
    for i in range(reps + 1):
        for label, with_kid in (("fid_and_kid", True), ("fid_only", False)):
            t0 = time.perf_counter()
            evaluator.evaluate(generator, ev.samples, batch_size=ev.batch_size, kid=with_kid)
            if i:  # the first round loads the real statistics
                times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short trials, fewer rounds")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="PostgreSQL server URL")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    off_steps, off_rounds = (300, 2) if args.quick else (1000, 3)
    on_steps, on_rounds = (600, 1) if args.quick else (1500, 1)

    print("loading MNIST and warming the real-statistics cache ...", file=sys.stderr)
    data = load_dataset("mnist", data_dir=args.data_dir, download=False)
    spec_off = make_spec(off_steps, eval_on=False, name="overhead-eval-off")
    spec_on = make_spec(on_steps, eval_on=True, name="overhead-eval-on")
    batch = spec_off.base.train.batch_size
    ev = spec_on.base.eval

    def evaluator() -> Evaluator:
        e = Evaluator(
            data, extractor=ev.extractor, seed=ev.seed, latent_dim=spec_on.base.model.latent_dim
        )
        for n in (ev.samples, ev.final_samples):
            e.real_stats(n)
        return e

    bare_eval = evaluator()  # also fills the disk cache the workers' evaluators load
    # Warm-up (oneDNN kernels, allocator): the first run of a process pays for them.
    bare_run(make_spec(20, eval_on=False, name="warm-up"), 0, data, bare_eval)
    parts: dict[str, dict[str, Any]] = {}
    db_calls: dict[str, list[float]] = defaultdict(list)
    heartbeats: list[float] = []
    with (
        scratch_database(args.storage, "bench_overhead") as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        storage = open_storage(url, create_schema=True)
        for spec in (spec_off, spec_on):
            create_study(spec, storage)
        storage.engine.dispose()
        for spec, rounds in ((spec_off, off_rounds), (spec_on, on_rounds)):
            runs: dict[str, list[dict[str, float]]] = {"bare": [], "worker": []}
            for r in range(rounds):
                # A fresh study's trial r has this seed; the bare run uses the same one.
                seed = trial_seed(spec, r)
                order = ("bare", "worker") if r % 2 == 0 else ("worker", "bare")
                for side in order:
                    print(f"{spec.name} round {r}: {side} ...", file=sys.stderr, flush=True)
                    if side == "bare":
                        runs["bare"].append(bare_run(spec, seed, data, bare_eval))
                    else:
                        store = Path(tmp) / "artifacts"  # made, as 'study create' makes it
                        store.mkdir(exist_ok=True)
                        run, number, calls, beats = worker_run(url, spec, args.data_dir, str(store))
                        assert number == r, (number, r)
                        runs["worker"].append(run)
                        for k, v in calls.items():
                            db_calls[k] += v
                        heartbeats += beats
                    last = runs[side][-1]
                    print(
                        f"  {last['wall']:.1f} s: train {last['train']:.1f} s, eval "
                        f"{last['eval']:.1f} s, db {last['db']:.3f} s, "
                        f"{images_per_s(last, batch):.0f} img/s",
                        file=sys.stderr,
                    )
            parts[spec.name] = runs

    off = parts[spec_off.name]
    ratios = [
        images_per_s(w, batch) / images_per_s(b, batch)
        for w, b in zip(off["worker"], off["bare"], strict=True)
    ]
    # The same ratio with the training steps' time taken from the bare run for both: only the
    # seconds the worker adds outside training and evaluation count (immune to the noise of a
    # shared machine, which slows one run's steps but not the other's).
    overhead_ratios = [
        (b["train"] + _other(b)) / (b["train"] + _other(w))
        for w, b in zip(off["worker"], off["bare"], strict=True)
    ]
    on = parts[spec_on.name]
    w_on, b_on = on["worker"][0], on["bare"][0]
    eval_share = w_on["eval"] / w_on["wall"]
    db_share_on = w_on["db"] / w_on["wall"]
    db_share_off = statistics.median(w["db"] / w["wall"] for w in off["worker"])
    # Extrapolate to the spec's 5000-step trial: the cost of a step from the bare eval-off
    # runs, of an intermediate and of the final evaluation from the bare eval-on run, and
    # the worker's own overhead as measured in part 1.
    step_s = statistics.median((b["wall"] - b["eval"]) / b["steps"] for b in off["bare"])
    step_s /= statistics.median(ratios)
    t_int = statistics.median(b_on["evals"][:-1])
    t_final = b_on["evals"][-1]
    print("timing one evaluation with and without KID ...", file=sys.stderr)
    trainer = Trainer(spec_on.base, data=data, evaluator=bare_eval)
    for _ in range(200):  # a generator that draws something, not the initial noise
        trainer.train_step()
    kid = kid_share(trainer.generator, data, spec_on, reps=1 if args.quick else 3)
    kid_cost = max(kid["fid_and_kid"] - kid["fid_only"], 0.0)  # subsets of 1000: any n >= 1000
    spec_int = (SPEC_TRIAL_STEPS - 1) // ev.every
    spec_train = SPEC_TRIAL_STEPS * step_s
    spec_eval = spec_int * t_int + t_final
    # [eval] kid = "final" (the default): only the final evaluation computes KID.
    kid_evals = {"final": 1, "every": spec_int + 1, "off": 0}[ev.kid]
    spec_eval_fid = spec_eval - kid_evals * kid_cost
    extrapolated = spec_eval / (spec_train + spec_eval)
    extrapolated_fid = spec_eval_fid / (spec_train + spec_eval_fid)

    call_stats = {
        k: {"calls": len(v), "median_ms": 1000 * statistics.median(v), "total_s": sum(v)}
        for k, v in sorted(db_calls.items())
    }
    result = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
            "host": platform.node(),
        },
        "config": {
            "width": spec_off.base.model.width,
            "latent_dim": spec_off.base.model.latent_dim,
            "batch_size": batch,
            "checkpoint_every": spec_off.base.train.checkpoint_every,
            "eval_off_steps": off_steps,
            "eval_on_steps": on_steps,
            "eval_every": ev.every,
            "eval_samples": ev.samples,
            "final_samples": ev.final_samples,
        },
        "eval_off": {
            "bare_img_s": [images_per_s(b, batch) for b in off["bare"]],
            "worker_img_s": [images_per_s(w, batch) for w in off["worker"]],
            "ratios": ratios,
            "ratio_median": statistics.median(ratios),
            "overhead_ratios": overhead_ratios,
            "overhead_ratio_median": statistics.median(overhead_ratios),
            "db_share": db_share_off,
        },
        "eval_on": {
            "worker": w_on,
            "bare": b_on,
            "ratio": images_per_s(w_on, batch) / images_per_s(b_on, batch),
            "eval_share": eval_share,
            "bare_eval_share": b_on["eval"] / b_on["wall"],
            "db_share": db_share_on,
            "extrapolated_eval_share_5000": extrapolated,
            "extrapolated_eval_share_5000_kid_off": extrapolated_fid,
            "one_eval_s": kid,
            "intermediate_eval_s": t_int,
            "final_eval_s": t_final,
            "step_ms": 1000 * step_s,
        },
        "db_calls": call_stats,
        "heartbeats": {"calls": len(heartbeats), "total_s": sum(heartbeats)},
    }
    save_results("overhead" + ("_quick" if args.quick else ""), result)
    if args.json:
        print(json.dumps(result))
        return 0
    c = result["config"]
    m = result["machine"]
    print(
        f"{m['cpu']}, {m['cores']} cores, device cpu, {m['torch_threads']} torch thread(s); "
        f"DCGAN width {c['width']}, latent {c['latent_dim']}, batch {c['batch_size']}, full "
        f"MNIST, checkpoint every {c['checkpoint_every']} steps; PostgreSQL"
    )
    eo = result["eval_off"]
    print(
        f"\n1. evaluation off, {off_steps} steps, {off_rounds} rounds "
        "(images/s end to end, final evaluation excluded)"
    )
    print(
        f"{'round':>6} {'bare img/s':>11} {'worker img/s':>13} {'ratio':>7}   seconds outside "
        "training steps and evaluation: bare, worker (of which database)"
    )
    for i, (b, w, r) in enumerate(
        zip(eo["bare_img_s"], eo["worker_img_s"], eo["ratios"], strict=True)
    ):
        rb, rw = off["bare"][i], off["worker"][i]
        print(
            f"{i:>6} {b:>11.0f} {w:>13.0f} {r:>7.3f}   {_other(rb):.2f} s, {_other(rw):.2f} s "
            f"({rw['db']:.2f} s)"
        )
    verdict = "met" if eo["ratio_median"] >= 0.95 else "NOT met"
    print(f"median ratio {eo['ratio_median']:.3f} (target >= 0.95: {verdict})")
    verdict = "met" if eo["overhead_ratio_median"] >= 0.95 else "NOT met"
    print(
        f"median ratio counting only the seconds the worker adds (training time of the bare "
        f"run on both sides): {eo['overhead_ratio_median']:.3f} (target >= 0.95: {verdict})"
    )
    print(f"share of the worker's wall time in database calls: {100 * eo['db_share']:.2f} %")
    e = result["eval_on"]
    print(
        f"\n2. evaluation every {ev.every} steps on {ev.samples} samples, final on "
        f"{ev.final_samples}; {on_steps}-step trial"
    )
    print(
        f"{'':8} {'wall s':>8} {'train s':>8} {'eval s':>8} {'db s':>8} {'other s':>8} "
        f"{'eval %':>7} {'db %':>6}"
    )
    for side in ("bare", "worker"):
        run = e[side]
        print(
            f"{side:8} {run['wall']:>8.1f} {run['train']:>8.1f} {run['eval']:>8.1f} "
            f"{run['db']:>8.3f} {_other(run):>8.2f} {100 * run['eval'] / run['wall']:>7.1f} "
            f"{100 * run['db'] / run['wall']:>6.2f}"
        )
    print(f"worker/bare images/s (evaluation excluded): {e['ratio']:.3f}")
    print(
        f"evaluation share of this {on_steps}-step worker trial: {100 * e['eval_share']:.1f} % "
        f"(its final evaluation of {ev.final_samples} samples weighs more than in the spec's trial)"
    )
    # The target is about the spec's trial at the spec's cadence, which this script does not
    # run in full: its share comes from the measured costs of a step and of each evaluation.
    verdict = "met" if extrapolated <= 0.10 else "NOT met"
    print(
        f"extrapolated to the spec's {SPEC_TRIAL_STEPS}-step trial ({spec_int} evaluations + "
        f"final, {e['step_ms']:.1f} ms/step, KID {ev.kid!r}): {100 * extrapolated:.1f} % "
        f"(target <= 10 %: {verdict}); with KID off: {100 * extrapolated_fid:.1f} %"
    )
    print(
        f"one evaluation of {ev.samples} samples: {kid['fid_and_kid']:.2f} s with KID "
        f"(100 subsets), {kid['fid_only']:.2f} s with FID only "
        f"(KID = {100 * (1 - kid['fid_only'] / kid['fid_and_kid']):.0f} %)"
    )
    print("\ndatabase calls of the worker (main thread), all trials of both parts:")
    print(f"{'call':24} {'calls':>6} {'median ms':>10} {'total s':>8}")
    for k, v in call_stats.items():
        print(f"{k:24} {v['calls']:>6} {v['median_ms']:>10.2f} {v['total_s']:>8.3f}")
    hb = result["heartbeats"]
    print(f"heartbeat thread: {hb['calls']} beats, {hb['total_s']:.3f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
