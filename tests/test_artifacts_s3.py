"""An ``s3://bucket/prefix`` artifact store, for real: moto's S3 server on loopback.

The store is reached as a user's would be (``open_artifact_store("s3://...")``, the endpoint
from ``AWS_ENDPOINT_URL``); a store that is down raises :class:`StoreUnavailable`, an
``OSError``, from every operation; real workers keep their checkpoints in the bucket, and one
whose store goes down mid-trial hands the trial back (no budget spent) instead of failing it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest
from faults import TINY, load, retry_of
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState
from procs import finish, ganhpo, spec_variant, start, wait_for, worker_env
from s3 import BUCKET, MotoS3

from ganhpo.artifacts import (
    StoreUnavailable,
    list_artifacts,
    open_artifact_store,
    read_artifact,
    remove_artifact,
    write_artifact,
)
from ganhpo.chains import HANDOVER_ATTR, checkpoint_of, counted_trials

STORE = f"s3://{BUCKET}/studies/one"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    with MotoS3() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


def test_write_read_list_remove_through_an_s3_url(s3: MotoS3) -> None:
    store = open_artifact_store(STORE)
    first = write_artifact(store, b"first", kind="checkpoint")
    second = write_artifact(store, b"\x00" * 100_000, kind="checkpoint")
    write_artifact(store, b"grid", kind="grid")
    # Under the prefix, in the bucket the URL names.
    assert f"studies/one/{first}" in s3.objects("studies/one/")
    assert read_artifact(store, first) == b"first"
    assert read_artifact(store, second) == b"\x00" * 100_000
    assert sorted(list_artifacts(store, "checkpoint-")) == sorted([first, second])
    remove_artifact(store, first)
    remove_artifact(store, first)  # already gone: fine
    assert list_artifacts(store, "checkpoint-") == [second]
    with pytest.raises(ArtifactNotFound):
        read_artifact(store, first)
    # Without a prefix: keys at the bucket's top.
    top = open_artifact_store(f"s3://{BUCKET}")
    key = write_artifact(top, b"top", kind="probe")
    assert key in s3.objects() and read_artifact(top, key) == b"top"


def test_every_operation_of_a_store_that_is_down_raises_an_oserror(s3: MotoS3) -> None:
    store = open_artifact_store(STORE)
    kept = write_artifact(store, b"kept", kind="checkpoint")
    s3.stop()
    operations = {
        "write": lambda: write_artifact(store, b"x", kind="checkpoint"),
        "read": lambda: read_artifact(store, kept),
        "list": lambda: list_artifacts(store, "checkpoint-"),
        "remove": lambda: remove_artifact(store, kept),
    }
    for what, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        assert isinstance(caught.value, OSError), what  # what the worker hands back for
        assert isinstance(caught.value.__cause__, botocore.exceptions.EndpointConnectionError)
        assert f"s3://{BUCKET}" in str(caught.value)
        assert time.monotonic() - started < 30, what  # refused connections: no long hang
    s3.start()  # back, with what it held
    assert read_artifact(store, kept) == b"kept"


def test_a_missing_bucket_is_the_store_s_fault_not_a_missing_object(s3: MotoS3) -> None:
    store = open_artifact_store("s3://no-such-bucket/x")
    for operation in (
        lambda: read_artifact(store, "checkpoint-1"),
        lambda: write_artifact(store, b"x", kind="checkpoint"),
        lambda: list_artifacts(store, ""),
    ):
        with pytest.raises(StoreUnavailable, match="no-such-bucket"):
            operation()


# Trials of a few seconds with a checkpoint at every evaluation (every 10 steps).
def s3_study(tmp_path: Path, env: dict[str, str], budget: int, steps: int) -> None:
    spec = spec_variant(
        tmp_path,
        {**TINY, "max_trials = 6 ": f"max_trials = {budget} ", "steps = 20": f"steps = {steps}"},
    )
    argv = ["study", "create", str(spec), "--storage", env["GANHPO_STORAGE"], "--artifacts", STORE]
    created = ganhpo(*argv, cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr


@pytest.fixture
def env(s3: MotoS3, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache"),
        **s3.env(),
        "GANHPO_STORAGE": postgres_url,
    }


def test_a_worker_keeps_its_checkpoints_in_the_bucket(
    s3: MotoS3, env: dict[str, str], tmp_path: Path
) -> None:
    s3_study(tmp_path, env, budget=2, steps=40)
    worker = start("worker", "--study", "quick", cwd=tmp_path, env=env, log=tmp_path / "w.log")
    seen = wait_for(
        lambda: s3.objects("studies/one/checkpoint-"), 300, "a checkpoint in the bucket"
    )
    assert finish(worker) == 0, (tmp_path / "w.log").read_text()
    trials = load(env["GANHPO_STORAGE"]).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    keys = s3.objects("studies/one/")
    for t in trials:
        assert f"studies/one/{t.user_attrs['generator']}" in keys  # the final generator
    # The checkpoints were there while trials ran; none is left once every trial ended.
    assert seen and not [k for k in keys if k.startswith("studies/one/checkpoint-")], keys
    assert not (tmp_path / "ganhpo-artifacts").exists()  # nothing on this machine's disk


def test_the_store_down_mid_trial_hands_the_trial_back(
    s3: MotoS3, env: dict[str, str], tmp_path: Path
) -> None:
    url = env["GANHPO_STORAGE"]
    s3_study(tmp_path, env, budget=1, steps=400)
    argv = ["worker", "--study", "quick", "--store-retry-timeout", "5"]
    a = start(*argv, cwd=tmp_path, env=env, log=tmp_path / "a.log")
    wait_for(lambda: _checkpoint_step(url), 300, "trial 0's first checkpoint")
    s3.stop()  # the network to the store is cut, for longer than the worker waits
    assert finish(a, timeout=300) == 1, (tmp_path / "a.log").read_text()
    line = (tmp_path / "a.log").read_text().strip().splitlines()[-1]
    assert line.startswith("ganhpo: error: trial 0 failed: StoreUnavailable: S3 store s3://"), line
    assert "no budget spent" in line and "Traceback" not in (tmp_path / "a.log").read_text()
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert HANDOVER_ATTR in trials[0].system_attrs and counted_trials(trials) == 0
    recorded = checkpoint_of(trials[0])

    s3.start()  # the store is back: the retry resumes from the checkpoint in the bucket
    assert f"studies/one/{recorded['id']}" in s3.objects("studies/one/")  # kept, not deleted
    b = start("worker", "--study", "quick", cwd=tmp_path, env=env, log=tmp_path / "b.log")
    assert finish(b) == 0, (tmp_path / "b.log").read_text()
    trials = load(url).get_trials(deepcopy=False)
    retry = retry_of(trials, 0)
    assert retry.state == TrialState.COMPLETE and counted_trials(trials) == 1
    assert retry.user_attrs["resumed_at_step"] == recorded["step"] > 0
    assert not s3.objects("studies/one/checkpoint-")


@pytest.mark.slow  # started first (tests/conftest.py)
def test_the_store_down_for_a_minute_is_waited_for(
    s3: MotoS3, env: dict[str, str], tmp_path: Path
) -> None:
    """The store goes away for 60 s mid-trial: the worker waits for it (its heartbeats going
    on), and the trial goes on where it was, neither handed back nor failed."""
    url = env["GANHPO_STORAGE"]
    s3_study(tmp_path, env, budget=1, steps=400)
    log = tmp_path / "a.log"
    a = start("worker", "--study", "quick", cwd=tmp_path, env=env, log=log)
    wait_for(lambda: _checkpoint_step(url), 300, "trial 0's first checkpoint")
    s3.stop()
    time.sleep(60)
    s3.start()
    assert finish(a, timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert "is unavailable" in text and "retrying for up to 300 s" in text, text
    assert "the artifact store is back after" in text, text
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE], text  # one trial, never handed
    assert trials[0].user_attrs["steps"] == 400 and "resumed_at_step" not in trials[0].user_attrs
    assert not s3.objects("studies/one/checkpoint-")


def _checkpoint_step(url: str) -> int | None:
    trials = load(url).get_trials(deepcopy=False)
    ckpt = checkpoint_of(trials[0]) if trials else None
    return int(ckpt["step"]) if ckpt and ckpt["step"] > 0 else None
