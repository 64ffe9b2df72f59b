"""The contract with Optuna's internals (``ganhpo/_optuna.py``): every private name ganhpo uses
is there, as used, in the installed Optuna; and no other module of ganhpo reaches into them.

pyproject.toml pins Optuna to the versions these tests passed on. A new Optuna that breaks one
fails here, naming the version and the internal, rather than in a worker on a user's cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from ganhpo import _optuna
from ganhpo._optuna import INTERNALS

PACKAGE = Path(_optuna.__file__).parent


@pytest.mark.parametrize("internal", sorted(INTERNALS))
def test_the_internal_is_there_as_used(internal: str) -> None:
    try:
        INTERNALS[internal]()
    except Exception as e:  # any failure is the contract broken
        pytest.fail(
            f"Optuna {optuna.__version__}: {internal} is not as ganhpo/_optuna.py uses it "
            f"({type(e).__name__}: {e}); adapt that module, or pin Optuna below this version"
        )


def test_a_broken_internal_fails_its_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: an Optuna without ``RDBStorage._get_trials`` fails its check."""
    monkeypatch.delattr(optuna.storages.RDBStorage, "_get_trials")
    name = next(n for n in INTERNALS if n.startswith("optuna.storages.RDBStorage._get_trials"))
    with pytest.raises(AttributeError):
        INTERNALS[name]()


# What reaching into Optuna looks like: its private modules, and the private attributes of its
# studies, trials and storages that ganhpo/_optuna.py wraps.
PRIVATE = re.compile(
    r"optuna(\.\w+)*\._(?!_)\w+"
    r"|\b(?!self\b)\w+(\.\w+)*\.(_storage|_study_id|_trial_id|_cached_frozen_trial"
    r"|_thread_local|_backend|_version_manager|_get_trials|_studies|_add_trials_to_cache)\b"
    r"|\bscoped_session\b"
)


def test_no_other_module_reaches_into_optuna() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_optuna.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if PRIVATE.search(code) and not code.lstrip().startswith(('"', "'")):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "use ganhpo._optuna instead:\n" + "\n".join(found)
