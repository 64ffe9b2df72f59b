"""The shipped default study, scaled down, on a simulated cluster of 3 machines: one lost, one
cut off, the object store down for a minute (BENCHMARKS.md section 9).

    python bench/cluster.py --data-dir /path/to/mnist [--steps 300] [--max-steps 6000]

The machines are Linux network namespaces (tests/machines.py, what tests/test_machines.py
runs): each its own hostname, working directory, HOME, caches and copy of the data, sharing
only a network with the host, which runs PostgreSQL (passwords, verified TLS) behind PgBouncer
in transaction mode and an S3 server (moto) as the artifact store. ``studies/mnist-dcgan.toml``
is created as shipped except for its scale: trials of ``--steps`` steps (an evaluation and a
checkpoint every ``--steps``/3, 500 samples, 1,000 at the end) and a compute budget of
``--max-steps`` training steps; a heartbeat every 2 s and a grace of ``--grace`` s. Two workers
run on each machine, each with one torch thread (6 processes on this host's cores).

The faults, in order, each once a trial of that machine has recorded a checkpoint:
1. machine m1 lost: every process of it SIGKILLed at once;
2. machine m2 cut off: its link down for 2 x grace while its workers run on, then back;
3. the object store down for 60 s.

Recorded (``bench/results/cluster.json``): trials by state, hand-overs, the steps the study
spent against its budget, for each fault's trial its retry, the step the retry resumed at,
the steps its predecessor reserved beyond that step (compute redone), the seconds from the
fault until the retry started, and the wall time of the whole study; then, for each resumed
trial that trained on, its FID at its last evaluation against an uninterrupted ``ganhpo
train`` of the same configuration to the same step, on the third machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the simulated cluster the tests run

from _common import cpu_model  # noqa: E402  (bench/, beside this)
from machines import Cluster, Machine, running_on  # noqa: E402
from procs import wait_for  # noqa: E402
from s3 import BUCKET  # noqa: E402

STUDY = "mnist-dcgan"
DATA_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def scaled_spec(steps: int, max_steps: int, grace: int) -> str:
    """The shipped default study at a smaller scale (what changes, and nothing else)."""
    every = steps // 3
    text = (ROOT / "studies" / f"{STUDY}.toml").read_text()
    changes = {
        "max_steps = 150000 ": f"max_steps = {max_steps} ",
        'description = "': f'heartbeat_interval = 2\ngrace_period = {grace}\ndescription = "',
        "steps = 5000\n": f"steps = {steps}\n",
        "checkpoint_every = 1000\n": f"checkpoint_every = {every}\n",
        "every = 500\n": f"every = {every}\n",
        "samples = 2000\n": "samples = 500\n",
        "final_samples = 10000\n": "final_samples = 1000\n",
    }
    for old, new in changes.items():
        if old not in text:
            raise SystemExit(f"studies/{STUDY}.toml changed: {old.strip()!r} is not in it")
        text = text.replace(old, new, 1)
    return text


def load(url: str) -> Any:
    import optuna

    from ganhpo.storage import open_storage

    return optuna.load_study(study_name=STUDY, storage=open_storage(url))


def epoch(value: datetime.datetime | None) -> float | None:
    """Seconds since the epoch of one of Optuna's times (naive, in local time)."""
    return None if value is None else value.timestamp()


def fault_record(url: str, trial: Any, at: float, what: str) -> dict[str, Any]:
    """What a fault cost the trial it hit: its retry, where that resumed, the compute redone,
    the seconds until the retry started."""
    from ganhpo.chains import retry_history

    trials = load(url).get_trials(deepcopy=False)
    ended = trials[trial.number]
    retries = [t for t in trials if retry_history(t)[-1:] == [trial.number]]
    record: dict[str, Any] = {
        "fault": what,
        "trial": trial.number,
        "host": trial.user_attrs.get("host"),
        "ended": ended.state.name,
        "status": ended.user_attrs.get("status"),
    }
    if not retries:
        return record | {"retry": None}
    (retry,) = retries
    start = int(ended.user_attrs.get("resumed_at_step", 0))
    reached = start + int(ended.user_attrs.get("steps_reserved", 0))
    resumed = int(retry.user_attrs.get("resumed_at_step", 0))
    started = epoch(retry.datetime_start)
    return record | {
        "retry": retry.number,
        "retry_host": retry.user_attrs.get("host"),
        "retry_state": retry.state.name,
        "resumed_at_step": resumed,
        "predecessor_reserved_to_step": reached,
        "steps_redone": max(0, reached - resumed),
        "seconds_to_retry_start": None if started is None else round(started - at, 1),
    }


def handed_over(trials: list[Any]) -> list[dict[str, Any]]:
    """Every trial handed over (its worker lost, cut off, or stopped), with its retry."""
    from ganhpo.chains import HANDOVER_ATTR, retry_history

    rows = []
    for t in trials:
        if HANDOVER_ATTR not in t.system_attrs:
            continue
        retries = [r for r in trials if retry_history(r)[-1:] == [t.number]]
        start = int(t.user_attrs.get("resumed_at_step", 0))
        reached = start + int(t.user_attrs.get("steps_reserved", 0))
        row: dict[str, Any] = {
            "trial": t.number,
            "host": t.user_attrs.get("host"),
            "reason": t.user_attrs.get("status"),
            "reserved_to_step": reached,
        }
        if retries:
            resumed = int(retries[0].user_attrs.get("resumed_at_step", 0))
            row |= {
                "retry": retries[0].number,
                "retry_host": retries[0].user_attrs.get("host"),
                "resumed_at_step": resumed,
                "steps_redone": max(0, reached - resumed),
            }
        rows.append(row)
    return rows


def reproduce(machine: Machine, study: Any, trial: Any, step: int) -> float:
    """The FID at ``step`` of an uninterrupted ``ganhpo train`` of the trial's configuration
    (what it ran: its parameters and seed) on ``machine``: its final FID where ``step`` is the
    trial's last, else the progress line's (3 decimals)."""
    import tomli_w

    from ganhpo.study import study_spec, trial_config
    from ganhpo.train import config_to_dict

    config = machine.root / "work" / f"trial-{trial.number}.toml"
    config.write_text(tomli_w.dumps(config_to_dict(trial_config(study_spec(study), trial))))
    done = machine.run("train", str(config), "--json", timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"train of trial {trial.number}: {done.stderr}")
    (run,) = json.loads(done.stdout)["runs"]
    if run["step"] == step:
        return float(run["fid"])
    for line in done.stderr.splitlines():
        found = re.search(rf"step {step}/\d+\s+FID (\S+)", line)
        if found:
            return float(found.group(1))
    raise RuntimeError(f"train of trial {trial.number} printed no evaluation at step {step}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="full MNIST (the IDX files)")
    parser.add_argument("--steps", type=int, default=300, help="a trial's length")
    parser.add_argument("--max-steps", type=int, default=6000, help="the compute budget")
    parser.add_argument("--grace", type=int, default=20, help="heartbeat grace period, s")
    parser.add_argument("--store-down", type=int, default=60, help="store outage, s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster.json")
    args = parser.parse_args()

    import optuna
    from optuna.trial import TrialState

    from ganhpo.chains import HANDOVER_ATTR, steps_spent

    every = args.steps // 3
    events: dict[str, float] = {}
    with Cluster(machines=3) as cluster:
        m1, m2, m3 = cluster.machines
        for m in cluster.machines:  # each machine its own copy, as each would download it
            data = m.root / "data"
            data.mkdir()
            for name in DATA_FILES:
                shutil.copy(Path(args.data_dir) / name, data / name)
            m.extra_env = {"GANHPO_DATA_DIR": str(data)}
        spec = m1.root / "work" / f"{STUDY}.toml"
        spec.write_text(scaled_spec(args.steps, args.max_steps, args.grace))
        url = cluster.storage_url
        store = f"s3://{BUCKET}/studies/{STUDY}"
        created = m1.run("study", "create", str(spec), "--artifacts", store, timeout=900)
        if created.returncode != 0:
            raise SystemExit(f"study create: {created.stderr}")
        checked = m2.run("doctor", "--study", STUDY, timeout=900)
        print(checked.stdout, file=sys.stderr)
        if checked.returncode != 0:
            raise SystemExit("ganhpo doctor failed on m2")
        started = time.time()
        workers = {
            (m.name, j): m.start("worker", "--study", STUDY, log=f"w{j}.log")
            for m in cluster.machines
            for j in range(2)
        }
        lost = wait_for(
            lambda: running_on(load(url), "ganhpo-m1", every), 1800, "a checkpoint on m1"
        )
        events["lost"] = time.time()
        m1.lose()
        print(f"[{events['lost'] - started:.0f} s] m1 lost (trial {lost.number})", file=sys.stderr)
        cut = wait_for(
            lambda: running_on(load(url), "ganhpo-m2", every), 1800, "a checkpoint on m2"
        )
        events["cut"] = time.time()
        m2.cut()
        print(f"[{events['cut'] - started:.0f} s] m2 cut (trial {cut.number})", file=sys.stderr)
        time.sleep(2 * args.grace)
        # Held until the trial is taken over: the other workers look for silent trials
        # before each trial they take, so a takeover waits for one of them to end a trial.
        wait_for(
            lambda: load(url).trials[cut.number].state == TrialState.FAIL,
            1800,
            f"trial {cut.number} of cut-off m2 to be handed over",
        )
        events["taken_over"] = time.time()
        m2.reconnect()
        events["reconnected"] = time.time()
        print(f"[{events['reconnected'] - started:.0f} s] m2 back", file=sys.stderr)
        wait_for(lambda: running_on(load(url), "ganhpo-m3", every), 1800, "a checkpoint on m3")
        events["store_down"] = time.time()
        cluster.store.stop()
        print(f"[{events['store_down'] - started:.0f} s] store down", file=sys.stderr)
        time.sleep(args.store_down)
        cluster.store.start()
        events["store_up"] = time.time()
        print(f"[{events['store_up'] - started:.0f} s] store up", file=sys.stderr)
        codes = {
            f"{k[0]}/w{k[1]}": w.wait(timeout=7200) for k, w in workers.items() if k[0] != "m1"
        }
        finished = time.time()
        logs = {m.name: "".join(m.log(f"w{j}.log") for j in range(2)) for m in (m2, m3)}
        every_log = "".join(logs.values())

        study = load(url)
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        listed = json.loads(m3.run("study", "trials", STUDY, "--json").stdout)
        faults = [
            fault_record(url, lost, events["lost"], "machine lost (SIGKILL of every process)"),
            fault_record(url, cut, events["cut"], f"network cut for {2 * args.grace} s"),
        ]
        # Every object in the bucket belongs to a trial or to the study.
        objects = [k.rsplit("/", 1)[-1] for k in cluster.store.objects(f"studies/{STUDY}/")]
        checkpoints_left = [o for o in objects if o.startswith("checkpoint-")]
        # The resumed trials that trained on, against an uninterrupted run to the same step.
        equal: list[dict[str, Any]] = []
        for record in faults:
            if record.get("retry") is None:
                continue
            retry = trials[record["retry"]]
            if not retry.intermediate_values:
                continue
            step = max(retry.intermediate_values)
            if step <= record["resumed_at_step"]:
                continue  # it did not train past its resume point
            try:
                fresh = reproduce(m3, study, retry, step)
            except RuntimeError as e:
                equal.append({"trial": retry.number, "step": step, "error": str(e)})
                continue
            final = retry.state == TrialState.COMPLETE
            resumed_fid = retry.intermediate_values[step]
            equal.append(
                {
                    "trial": retry.number,
                    "step": step,
                    "compared": "final FID" if final else "FID to 3 decimals (progress line)",
                    "fid_resumed": resumed_fid,
                    "fid_uninterrupted": fresh,
                    "equal": abs(fresh - resumed_fid) < (1e-6 if final else 5e-4),
                }
            )
        best = study.best_trial
        result = {
            "command": "python bench/cluster.py " + " ".join(sys.argv[1:]),
            "cpu": cpu_model(),
            "date": datetime.date.today().isoformat(),
            "optuna": optuna.__version__,
            "spec": {
                "study": STUDY,
                "steps": args.steps,
                "max_steps": args.max_steps,
                "grace_period": args.grace,
                "store_down_s": args.store_down,
                "machines": 3,
                "workers_per_machine": 2,
            },
            "wall_s": round(finished - started, 1),
            "events_s": {k: round(v - started, 1) for k, v in events.items()},
            "worker_exit_codes": codes,
            "tracebacks_in_logs": sum(log.count("Traceback") for log in logs.values()),
            "dropped_taken_copy": "dropping my copy" in logs["m2"],
            "trials": len(trials),
            "states": states,
            "handovers": sum(1 for t in trials if HANDOVER_ATTR in t.system_attrs),
            "resumed_trials": sum(1 for r in listed if r.get("resumed_from") is not None),
            "steps_spent": steps_spent(trials),
            "running_or_waiting_left": sum(
                t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials
            ),
            "checkpoints_left_in_store": len(checkpoints_left),
            "objects_in_store": len(objects),
            "faults": faults,
            "handed_over": handed_over(trials),
            # The store outage as the workers saw it (PatientStore's lines).
            "store_waits_logged": len(re.findall(r"artifact store \S+ is unavailable", every_log)),
            "store_back_logged": every_log.count("the artifact store is back"),
            "resumed_fid_equal_to_uninterrupted": equal,
            "best": {"trial": best.number, "fid": best.value, "steps": best.user_attrs["steps"]},
            "lineage": [
                {k: r.get(k) for k in ("number", "state", "status", "resumed_from", "resumed_as")}
                for r in listed
                if r.get("resumed_from") is not None or r.get("resumed_as") is not None
            ],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "lineage"}, indent=2))


if __name__ == "__main__":
    main()
