"""ganhpo.study on studies built trial by trial: the Pareto front and the trade-off chosen."""

from __future__ import annotations

import optuna
import pytest

from ganhpo.errors import StorageError
from ganhpo.spec import parse_study_spec
from ganhpo.study import best_config, create_study, pareto_front, summarize

# (FID, G parameters) of trials 0..5: the front is trials 1, 2 and 4 (3 is beaten by 2 on both,
# 0 by 1, 5 by 4).
VALUES = [(120.0, 9000), (100.0, 8000), (80.0, 20000), (90.0, 30000), (60.0, 50000),
          (61.0, 60000)]  # fmt: skip


def study_of(values: list[tuple[float, int]]) -> optuna.Study:
    spec = parse_study_spec(
        {
            "study": {"name": "pareto", "objective": ["fid", "g_params"]},
            "train": {"steps": 10},
            "search": {"lr_g": {"low": 1e-4, "high": 1e-2, "log": True}},
        }
    )
    study = create_study(spec, optuna.storages.InMemoryStorage())
    dist = {"lr_g": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i, (fid, size) in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                values=[fid, size], params={"lr_g": 1e-3 * (i + 1)}, distributions=dist
            )
        )
    return study


def test_the_pareto_front_and_the_trade_off_asked_for() -> None:
    study = study_of(VALUES)
    assert [t.number for t in pareto_front(study)] == [4, 2, 1]  # best FID first
    info = summarize(study)
    assert [p["number"] for p in info["pareto_front"]] == [4, 2, 1]
    assert info["pareto_front"][1]["values"] == {"fid": 80.0, "g_params": 20000}
    assert info["best"]["number"] == 4
    assert best_config(study)[:2] == (4, 60.0)  # by default: the best FID
    assert best_config(study, fid_within=0)[0] == 4
    assert best_config(study, fid_within=40)[0] == 2  # FID <= 84: the smaller of 4 and 2
    assert best_config(study, fid_within=70)[0] == 1  # FID <= 102: the smallest
    assert best_config(study, trial=5)[:2] == (5, 61.0)  # any completed trial by number
    with pytest.raises(StorageError, match=r"trial 9 of study 'pareto' is not a completed trial"):
        best_config(study, trial=9)
