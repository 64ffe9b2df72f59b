"""A worker uses the study's own artifact store or none: it never makes one of its own.

``ganhpo study create`` makes the store and marks it as the study's; a worker on a machine
where the study's path is missing, or holds another folder, is refused with one line before it
takes a trial (it used to create an empty folder there and keep its checkpoints on its own
disk, where a trial handed over to another machine could not find them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from faults import TINY
from optuna.trial import TrialState
from procs import ganhpo, spec_variant, worker_env

from ganhpo.artifacts import STORE_MARKER_ATTR, open_artifact_store
from ganhpo.errors import ConfigError
from ganhpo.storage import open_storage, study_attr


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")


def create(tmp_path: Path, env: dict[str, str], store: Path) -> str:
    """The TINY study of one trial at a SQLite file, its store at ``store``; its URL."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = spec_variant(tmp_path, {**TINY, "max_trials = 6 ": "max_trials = 1 "})
    argv = ["study", "create", str(spec), "--storage", url, "--artifacts", str(store)]
    done = ganhpo(*argv, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    return url


def study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="quick", storage=open_storage(url))


def worker(tmp_path: Path, env: dict[str, str], url: str, *args: str) -> tuple[int, str]:
    done = ganhpo("worker", "--study", "quick", "--storage", url, *args, cwd=tmp_path, env=env)
    return done.returncode, done.stderr


def nothing_taken(url: str) -> bool:
    return all(t.state == TrialState.WAITING for t in study(url).get_trials(deepcopy=False))


def test_study_create_makes_the_store_and_marks_it(tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "shared" / "store"
    url = create(tmp_path, env, store)
    marker = study_attr(study(url), STORE_MARKER_ATTR)
    assert [p.name for p in store.iterdir()] == [marker]
    body = json.loads((store / marker).read_text())
    assert body["study"] == "quick" and body["location"] == str(store)


def test_a_worker_refuses_a_store_missing_on_its_machine(
    tmp_path: Path, env: dict[str, str]
) -> None:
    store = tmp_path / "shared" / "store"
    url = create(tmp_path, env, store)
    shutil.rmtree(tmp_path / "shared")  # this machine does not mount the shared folder
    code, err = worker(tmp_path, env, url)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line == (
        f"ganhpo: error: artifact store {store} does not exist on this machine; mount the "
        f"study's shared folder at {store} (or pass --artifacts with where it is mounted here), "
        "or give the study a store every machine reaches ('ganhpo study set-store NAME "
        "--artifacts s3://BUCKET/PREFIX')"
    )
    assert not (tmp_path / "shared").exists()  # not created
    assert nothing_taken(url)


def test_a_folder_that_is_not_the_study_s_store_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    store = tmp_path / "shared" / "store"
    url = create(tmp_path, env, store)
    shutil.rmtree(store)
    store.mkdir()  # another folder at the study's path (a local one, or another study's)
    (store / "checkpoint-of-someone-else").write_bytes(b"x")
    code, err = worker(tmp_path, env, url)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    marker = study_attr(study(url), STORE_MARKER_ATTR)
    assert line.startswith(
        f"ganhpo: error: the artifact store {store} is not the one study 'quick' was created "
        f"with (its marker {marker} is not there); mount the study's store there"
    ), line
    assert "ganhpo study set-store quick --artifacts" in line
    assert nothing_taken(url)


def test_the_store_mounted_at_another_path_is_found_by_its_marker(
    tmp_path: Path, env: dict[str, str]
) -> None:
    store = tmp_path / "shared" / "store"
    url = create(tmp_path, env, store)
    elsewhere = tmp_path / "mnt" / "store"
    elsewhere.parent.mkdir()
    store.rename(elsewhere)  # the same folder, mounted at another path on this machine
    code, err = worker(tmp_path, env, url, "--artifacts", str(elsewhere))
    assert code == 0, err
    (trial,) = study(url).get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    assert (elsewhere / trial.user_attrs["generator"]).is_file()
    assert not store.exists()


def test_set_store_makes_a_new_store_the_study_s(tmp_path: Path, env: dict[str, str]) -> None:
    url = create(tmp_path, env, tmp_path / "lost")
    shutil.rmtree(tmp_path / "lost")
    new = tmp_path / "new-store"
    argv = ["study", "set-store", "quick", "--artifacts", str(new), "--storage", url]
    done = ganhpo(*argv, cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(new), done.stderr
    attrs = study(url).user_attrs
    assert attrs["ganhpo:artifacts"] == str(new)
    assert (new / study_attr(study(url), STORE_MARKER_ATTR)).is_file()


def test_a_store_that_cannot_be_made_leaves_no_study(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = spec_variant(tmp_path, TINY)
    store = tmp_path / "a-file" / "store"
    argv = ["study", "create", str(spec), "--storage", url, "--artifacts", str(store)]
    done = ganhpo(*argv, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"ganhpo: error: artifact directory {store} cannot be created"), line
    assert optuna.get_all_study_names(open_storage(url)) == []


def test_open_artifact_store_creates_a_directory_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist on this machine"):
        open_artifact_store(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
    open_artifact_store(str(tmp_path / "made"), create=True)
    assert (tmp_path / "made").is_dir()
