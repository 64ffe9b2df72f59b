"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from pg import PrivateServer
from sqlalchemy.engine import make_url

# Where a user keeps the full MNIST besides $GANHPO_DATA_DIR: ../shared/data/mnist next to the
# clone (this project's workplace; see README.md).
BESIDE_THE_REPO = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The directory holding the full MNIST's four IDX files, found where a user keeps it.

    ``$GANHPO_DATA_DIR``, then ``../shared/data/mnist`` next to the repository (either holding
    the files directly or in torchvision's ``MNIST/raw``), then ganhpo's own verified download
    into its data directory (``$GANHPO_DATA_DIR``, else the user data directory); fails with
    one message saying how to provide it when none works. Tests that do not need all 70000
    images use ``ganhpo.data.shipped_mnist_subset_dir()``.
    """
    from ganhpo.data import locate_idx_dataset, resolve_data_dir
    from ganhpo.data._paths import DATA_DIR_ENV
    from ganhpo.errors import DataError

    local = [Path(os.environ[DATA_DIR_ENV])] if os.environ.get(DATA_DIR_ENV) else []
    for directory in [*local, BESIDE_THE_REPO]:
        try:
            return locate_idx_dataset("mnist", directory, download=False)
        except DataError:
            continue
    try:
        return locate_idx_dataset("mnist", download=True)
    except DataError as e:
        reason = e.__cause__ or e  # the mirrors' answers
    searched = " and ".join(str(d) for d in [*local, BESIDE_THE_REPO])
    pytest.fail(
        f"the full MNIST is needed and is not in {searched}, and downloading it into "
        f"{resolve_data_dir()} failed; set {DATA_DIR_ENV} to a folder holding the four IDX "
        "files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or run the tests once with "
        f"network access so ganhpo downloads them ({reason})",
        pytrace=False,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first: in two test processes (pytest-xdist) they then overlap the
    many short tests instead of running last, side by side, while the other process idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


_GANHPO_LOGGER = logging.getLogger("ganhpo")
_PRISTINE_LOGGING = (_GANHPO_LOGGER.handlers[:], _GANHPO_LOGGER.level, _GANHPO_LOGGER.propagate)


@pytest.fixture(autouse=True)
def _restore_ganhpo_logging() -> Iterator[None]:
    """Undo what an in-process ``ganhpo.cli.main`` (in a test or a module fixture) does to the
    "ganhpo" logger, a handler on the then-captured stderr and no propagation, so that later
    tests' caplog sees ganhpo's records."""
    yield
    handlers, level, propagate = _PRISTINE_LOGGING
    _GANHPO_LOGGER.handlers[:] = handlers
    _GANHPO_LOGGER.setLevel(level)
    _GANHPO_LOGGER.propagate = propagate


# -- PostgreSQL ---------------------------------------------------------------------------------
# Tests run against a real server: $GANHPO_TEST_POSTGRES_URL when set (CI points it at its
# service container), else a throwaway server the session starts itself (tests/pg.py).

PRIVATE_PASSWORD = "p@ss:w/rd-42"  # special characters on purpose: they must be URL-encoded


def _admin_engine(url: str) -> sqlalchemy.Engine:
    from ganhpo.storage import _with_driver

    return sqlalchemy.create_engine(
        _with_driver(url),
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE cannot run in a transaction
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": 5},
    )


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server on which the tests may create and drop databases."""
    url = os.environ.get("GANHPO_TEST_POSTGRES_URL")
    if url:
        from ganhpo.storage import redact

        engine = _admin_engine(url)
        reason = None
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except sqlalchemy.exc.SQLAlchemyError as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        finally:
            engine.dispose()
        if reason is not None:
            pytest.fail(
                f"GANHPO_TEST_POSTGRES_URL={redact(url)} does not connect ({reason}); "
                "start that server or unset the variable to let the tests start their own",
                pytrace=False,
            )
        yield url
        return
    with PrivateServer() as server:
        yield server.url()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    name = f"ganhpo_test_{secrets.token_hex(6)}"
    engine = _admin_engine(postgres_admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh study database: a test that takes it runs on PostgreSQL, then on SQLite."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivateServer]:
    """A server of the tests' own with password ``PRIVATE_PASSWORD``; tests may restart it."""
    with PrivateServer(password=PRIVATE_PASSWORD) as server:
        yield server


# -- A real finished study ----------------------------------------------------------------------


def _finished_study(work: Path, spec: Path) -> dict[str, str]:
    """``ganhpo study create SPEC`` and one ``ganhpo worker`` to the end, in ``work`` (SQLite
    and artifacts there): ``dir``, ``name``, ``storage`` (URL) and ``artifacts`` (the store)."""
    from procs import ganhpo, worker_env

    env = worker_env(work / "cache")
    for argv in (["study", "create", str(spec)], ["worker", "--study", "quick"]):
        done = ganhpo(*argv, cwd=work, env=env)
        if done.returncode != 0:
            pytest.fail(f"ganhpo {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return {
        "dir": str(work),
        "name": "quick",
        "storage": f"sqlite:///{work / 'ganhpo.db'}",
        "artifacts": str(work / "ganhpo-artifacts"),
    }


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The quickstart, run once per session: ``studies/quick.toml`` by a real worker process
    (about a minute on 2 cores)."""
    from procs import QUICK

    return _finished_study(tmp_path_factory.mktemp("quick-study"), QUICK)


# The quickstart as a study that weighs FID against the generator's size: no pruner (a study
# with two objectives has none), the generator's width searched so that sizes differ.
PARETO = {
    'objective = "fid"': 'objective = ["fid", "g_params"]',
    "max_trials = 6 ": "max_trials = 5 ",
    "steps = 240": "steps = 160",
    "[search]\n": "[search]\nwidth_g = { choices = [8, 16, 32] }\n",
    "[pruner]": "[unused]",
}


@pytest.fixture(scope="session")
def pareto_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished multi-objective study (FID and G's parameter count) by a real worker."""
    from procs import spec_variant

    work = tmp_path_factory.mktemp("pareto-study")
    spec = spec_variant(work, PARETO)
    text = spec.read_text()  # the quick spec's [pruner] table goes: none in such a study
    spec.write_text(text[: text.index("[unused]")] + text[text.index("[[baselines]]") :])
    return _finished_study(work, spec)
