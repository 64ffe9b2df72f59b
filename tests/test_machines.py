"""Three machines that share nothing but a network (tests/machines.py): a study created on one,
checked by ``ganhpo doctor`` on another, worked on by two workers on each, through PgBouncer,
with passwords and verified TLS, the artifact store an S3 bucket. One machine is lost (every
process SIGKILLed mid-trial), another cut off for twice the heartbeat grace while its workers
keep training. The trials of both are resumed elsewhere from their checkpoints in the bucket;
the cut-off workers, back on the network, drop what was taken from them and go on; the compute
budget is spent exactly, no trial is left running or waiting, no object is left over."""

from __future__ import annotations

import json
import re
import time

import pytest
from faults import FAST, load
from machines import (
    HBA,
    PGBOUNCER_CONF,
    PGBOUNCER_KEYS,
    POSTGRES_CONF,
    POSTGRES_KEYS,
    URL_TLS,
    Cluster,
    running_on,
)
from optuna.trial import FrozenTrial, TrialState
from procs import QUICK, ROOT, wait_for
from s3 import BUCKET

from ganhpo.artifacts import STORE_MARKER_ATTR
from ganhpo.chains import checkpoint_of, steps_spent
from ganhpo.spec import load_study_spec
from ganhpo.storage import study_attr

GRACE = 6
MAX_STEPS = 1440  # six trials of 240 steps
STORE = f"s3://{BUCKET}/studies/quick"
SPEC = {
    **FAST,
    "max_trials = 6 ": f"max_steps = {MAX_STEPS} ",
    'description = "': (
        f'heartbeat_interval = 1\ngrace_period = {GRACE}\nmax_retry = 20\ndescription = "'
    ),
    # Trials of a fixed length (grow, the default of a compute budget, has tests of its own).
    "[pruner]": '[strategy]\nname = "optuna"\nguard = false\n\n[pruner]',
}


@pytest.mark.slow  # started first (tests/conftest.py)
def test_three_machines_one_lost_one_cut_off() -> None:
    with Cluster(machines=3) as cluster:
        m1, m2, m3 = cluster.machines
        spec = m1.root / "work" / "quick.toml"
        text = QUICK.read_text()
        for old, new in SPEC.items():
            assert old in text, old
            text = text.replace(old, new, 1)
        spec.write_text(text)
        assert load_study_spec(spec).max_steps == MAX_STEPS
        url = cluster.storage_url
        created = m1.run("study", "create", str(spec), "--storage", url, "--artifacts", STORE)
        assert created.returncode == 0, created.stderr
        checked = m2.run("doctor", "--study", "quick")  # GANHPO_STORAGE set on every machine
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "ok    store      the study's own" in checked.stdout, checked.stdout
        assert "ok    pgbouncer  in front of the server" in checked.stdout, checked.stdout

        workers = {
            (m.name, j): m.start("worker", "--study", "quick", log=f"w{j}.log")
            for m in cluster.machines
            for j in range(2)
        }
        lost = wait_for(lambda: running_on(load(url), "ganhpo-m1", 40), 300, "a checkpoint on m1")
        m1.lose()
        cut = wait_for(lambda: running_on(load(url), "ganhpo-m2", 40), 300, "a checkpoint on m2")
        m2.cut()
        cut_at = time.monotonic()

        def taken_from_m2() -> bool:
            return load(url).trials[cut.number].state == TrialState.FAIL

        # Its workers train on, their heartbeats lost; past the grace, the next worker that
        # looks (before its next trial) hands the trial over. Then the cable is back.
        wait_for(taken_from_m2, 600, f"trial {cut.number} of cut-off m2 to be handed over")
        cut_for = time.monotonic() - cut_at
        assert cut_for > GRACE
        m2.reconnect()

        codes = {key: w.wait(timeout=900) for key, w in workers.items() if key[0] != "m1"}
        logs = {m.name: "".join(m.log(f"w{j}.log") for j in range(2)) for m in (m2, m3)}
        assert all(code == 0 for code in codes.values()), (codes, logs)
        assert "Traceback" not in logs["m2"] + logs["m3"], logs
        # Back on the network, m2's workers found the trial taken from them and dropped it.
        assert "was taken over by another worker; dropping my copy" in logs["m2"], logs["m2"]

        trials = load(url).get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        states = [t.state for t in trials]
        assert TrialState.RUNNING not in states and TrialState.WAITING not in states
        spent = steps_spent(trials)
        assert MAX_STEPS - 80 < spent <= MAX_STEPS, spent  # up to what no interval fits in

        def retry_of(number: int) -> FrozenTrial:
            (retry,) = [
                t for t in trials if t.system_attrs.get("retry_history", [])[-1:] == [number]
            ]
            return retry

        for trial, step in ((lost, checkpoint_of(lost)["step"]), (cut, None)):
            ended = by_number[trial.number]
            assert ended.state == TrialState.FAIL, (trial.number, ended.state)  # handed over
            retry = retry_of(trial.number)
            # Resumed elsewhere from a checkpoint in the bucket, at a step > 0.
            assert retry.user_attrs.get("resumed_at_step", 0) > 0, retry.user_attrs
            if step is not None:
                assert retry.user_attrs["resumed_at_step"] >= step
            assert retry.user_attrs["host"] != trial.user_attrs["host"] or trial is cut
            assert retry.params == trial.params
        # Every object in the bucket belongs to a trial or to the study; no checkpoint is left.
        study = load(url)
        owned = {
            k.removeprefix("artifacts:") for t in trials for k in t.system_attrs
            if k.startswith("artifacts:")
        }  # fmt: skip
        owned.add(study_attr(study, STORE_MARKER_ATTR) or "")
        objects = [key.rsplit("/", 1)[-1] for key in cluster.store.objects("studies/quick/")]
        assert not [o for o in objects if o.startswith("checkpoint-")], objects
        assert not [o for o in objects if o not in owned], (objects, owned)

        listed = m3.run("study", "trials", "quick", "--json")
        rows = {r["number"]: r for r in json.loads(listed.stdout)}
        for trial in (lost, cut):
            assert rows[trial.number]["resumed_as"] == retry_of(trial.number).number
        shown = m3.run("study", "show", "quick")
        assert f"of {MAX_STEPS} training steps spent" in shown.stdout, shown.stdout
        print(
            f"cluster: {len(trials)} trials, {spent} of {MAX_STEPS} steps, lost trial "
            f"{lost.number} resumed at {retry_of(lost.number).user_attrs['resumed_at_step']}, "
            f"cut-off trial {cut.number} (cut for {cut_for:.0f} s) at "
            f"{retry_of(cut.number).user_attrs['resumed_at_step']}"
        )


def test_the_readme_recipe_is_what_the_cluster_runs() -> None:
    """docs/machines.md "Run on several machines" (where the README sends a reader) configures
    the database machine, and starts the worker machines, as the simulated cluster does."""
    readme = (ROOT / "docs" / "machines.md").read_text()
    section = readme.split("## Run on several machines", 1)[1].split("\n## ", 1)[0]
    settings = dict(re.findall(r"^\s*(\w+) = '?([^'#\n]*?)'?\s*(?:#.*)?$", section, re.M))
    for key, value in {**POSTGRES_CONF, **PGBOUNCER_CONF}.items():
        assert settings.get(key) == value, (key, settings.get(key))
    for key in (*POSTGRES_KEYS, *PGBOUNCER_KEYS):
        assert key in settings, key
    hba = re.search(r"^\s*(hostssl) (all) (all) \S+/\d+ (scram-sha-256)$", section, re.M)
    assert hba is not None and hba.groups() == HBA
    url = re.search(r"export GANHPO_STORAGE='(postgresql://[^']+)'", section)
    assert url is not None and f"?{URL_TLS}" in url.group(1), section
    for command in ("ganhpo study create ", "ganhpo doctor --study ", "ganhpo worker --study "):
        assert command in section, command
