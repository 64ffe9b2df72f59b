"""Study spec files: every shipped spec parses; bad input is named with its fix."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ganhpo.errors import ConfigError, UnknownNameError
from ganhpo.spec import (
    DEFAULT_PRUNER,
    STUDY_NAME_MAX_LENGTH,
    Choice,
    ComponentSpec,
    FloatRange,
    IntRange,
    StrategySpec,
    check_study_name,
    load_study_spec,
    load_toml,
    parse_study_spec,
    study_spec_to_dict,
)

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.toml"))


def test_the_shipped_specs_exist() -> None:
    names = {p.name for p in STUDIES}
    assert {"quick.toml", "mnist-dcgan.toml", "mnist-wgan-gp.toml"} <= names
    assert any("inception" in p.read_text() for p in STUDIES)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_spec_round_trips(path: Path) -> None:
    spec = load_study_spec(path)
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    assert spec.search and spec.baselines


def base(**extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "study": {"name": "t"},
        "train": {"steps": 10},
        "search": {"lr_g": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    data.update(extra)
    return data


def test_parsed_space_types() -> None:
    spec = parse_study_spec(
        base(
            search={
                "lr_g": {"low": 1e-4, "high": 1e-2, "log": True},
                "n_disc": {"low": 1, "high": 5},
                "batch_size": {"choices": [32, 64]},
                "penalty": {"choices": ["none", "gp"]},
                "gp_weight": {"low": 1, "high": 100, "log": True},
            }
        )
    )
    space = spec.space
    assert space["lr_g"] == FloatRange(1e-4, 1e-2, log=True)
    assert space["n_disc"] == IntRange(1, 5)
    assert space["batch_size"] == Choice((32, 64))
    assert space["gp_weight"] == FloatRange(1.0, 100.0, log=True)
    # A conditional parameter comes after its parent.
    names = [n for n, _ in spec.search]
    assert names.index("gp_weight") > names.index("penalty")
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            base(study={"name": "t", "nmae": 1}),
            r"unknown key 'nmae' in \[study\]; did you mean 'name'",
        ),
        (base(serach={}), r"unknown key 'serach' in the top level; did you mean 'search'"),
        (
            base(search={"lr_gg": {"low": 1, "high": 2}}),
            r"unknown search parameter 'lr_gg'; did you mean 'lr_g'",
        ),
        (
            base(search={"lr_g": {"low": 1e-2, "high": 1e-4}}),
            r"low = 0.01 is greater than high = 0.0001; swap them",
        ),
        (
            base(search={"gp_weight": {"low": 0.0, "high": 10.0, "log": True}}),
            r"a log range needs low > 0",
        ),
        (
            base(search={"lr_g": {"low": 1e-4, "high": 2.0}}),
            r"search.lr_g.high = 2.0 is invalid; use a value in \(0, 1\)",
        ),
        (base(search={"lr_g": {"low": 1e-4}}), r"search.lr_g needs high"),
        (base(search={"lr_g": 1e-3}), r"must be a table .* put fixed values in \[train\]"),
        (base(search={"steps": {"low": 1, "high": 9}}), r"search.steps cannot be searched"),
        (base(search={"loss": {"choices": []}}), r"choices must be a non-empty list"),
        (base(search={"loss": {"low": 0, "high": 1}}), r"search.loss is a str: give \{ choices"),
        (
            base(search={"gp_weight": {"low": 1, "high": 10}}),
            r"search.gp_weight is never used: it needs penalty = 'gp'",
        ),
        (
            base(study={"name": "t", "objective": "is"}),
            r"study.objective = 'is' is invalid; use \"fid\", \"kid\", or a metric and a cost",
        ),
        (base(study={"name": "t", "max_trials": 0}), r"max_trials = 0 must be at least 1"),
        (
            base(sampler={"name": "tpe", "n_startup": 3}),
            r"sampler 'tpe' has no argument 'n_startup'; did you mean 'n_startup_trials'",
        ),
        (base(pruner={"name": "patient"}), r"pruner \"patient\" wraps another"),
        (
            base(baselines=[{"lr_gg": 1e-3}]),
            r"unknown key 'baselines\[0\].lr_gg' in \[baselines\[0\]\]; did you mean 'lr_g'",
        ),
        ({"train": {}}, r"a \[study\] table is needed"),
        (base(baselines=[{"lr_g": 0.5}]), r"baselines\[0\].lr_g = 0.5 is outside search.lr_g"),
    ],
)
def test_bad_specs_name_the_problem_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study_spec(data)


def error(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_study_spec(data)
    return str(e.value)


def test_a_bad_searched_value_is_named_as_written_with_a_fix_that_works() -> None:
    """A log range with a negative low advised log = false, which then failed as well, naming
    train.lr_g where the user wrote search.lr_g: now the value's own range comes first."""
    for log in (True, False):
        lr = {"low": -1e-4, "high": 1e-2, "log": log}
        assert error(base(search={"lr_g": lr})) == (
            "spec: search.lr_g.low = -0.0001 is invalid; use a value in (0, 1)"
        )
    assert error(base(search={"lr_g": {"low": 0.0, "high": 1e-2, "log": True}})) == (
        "spec: search.lr_g.low = 0.0 is invalid; use a value in (0, 1)"
    )
    # Where log = false is the advice, it works.
    beta1 = {"low": 0.0, "high": 0.9, "log": True}
    assert error(base(search={"beta1": beta1})) == (
        "spec: search.beta1: a log range needs low > 0, got low = 0.0; use a positive low or "
        "log = false"
    )
    spec = parse_study_spec(base(search={"beta1": {**beta1, "log": False}}))
    assert spec.space["beta1"] == FloatRange(0.0, 0.9)
    # Choices are named as written too.
    assert error(base(search={"beta1": {"choices": [0.5, 1.5]}})) == (
        "spec: search.beta1.choices: 1.5 is invalid; use a value in [0, 1)"
    )
    assert error(base(search={"loss": {"choices": ["ns", "lsgan"]}})) == (
        "spec: search.loss.choices: unknown loss 'lsgan'; choose one of: hinge, ns, wasserstein"
    )
    assert error(base(search={"batch_size": {"low": 1, "high": 64}})) == (
        "spec: search.batch_size.low = 1 is invalid; use at least 2"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            base(sampler={"name": "tpee"}),
            r"unknown sampler 'tpee' \(did you mean 'tpe'\?\); "
            r"choose one of: cmaes, gp, nsga2, qmc, random, tpe",
        ),
        (base(pruner={"name": "medain"}), r"unknown pruner 'medain' \(did you mean 'median'\?\)"),
        (base(dataset={"name": "cifar"}), r"unknown dataset 'cifar'"),
    ],
)
def test_unknown_names_list_the_valid_ones(data: dict, message: str) -> None:
    with pytest.raises(UnknownNameError, match=message):
        parse_study_spec(data)


@pytest.mark.parametrize(
    ("max_trials", "startup"), [(None, 10), (6, 5), (20, 5), (70, 7), (100, 10), (1000, 10)]
)
def test_default_sampler_start_up_follows_the_budget(max_trials: int | None, startup: int) -> None:
    study = {"name": "t"} if max_trials is None else {"name": "t", "max_trials": max_trials}
    spec = parse_study_spec(base(study=study))
    assert spec.sampler == ComponentSpec(
        "tpe", (("multivariate", True), ("n_startup_trials", startup))
    )
    assert spec.pruner == DEFAULT_PRUNER
    assert spec.pruner.kwargs == {"n_startup_trials": 3, "n_warmup_steps": 0}


def test_a_named_sampler_or_pruner_keeps_optunas_defaults() -> None:
    spec = parse_study_spec(
        base(study={"name": "t", "max_trials": 20}, sampler={"name": "tpe"}, pruner="median")
    )
    assert spec.sampler == ComponentSpec("tpe") and spec.pruner == ComponentSpec("median")


def test_kid_objective_computes_kid_at_every_evaluation() -> None:
    spec = parse_study_spec(base(study={"name": "t", "objective": "kid"}))
    assert spec.base.eval.kid == "every"
    assert parse_study_spec(base()).base.eval.kid == "final"
    with pytest.raises(ConfigError, match=r"eval.kid = 'final' cannot score a study whose "):
        parse_study_spec(base(study={"name": "t", "objective": "kid"}, eval={"kid": "final"}))


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[study\nname = 'x'")
    with pytest.raises(ConfigError, match=r"s.toml is not valid TOML"):
        load_study_spec(path)


# -- values that could never work are refused when the spec is read ---------------------------


def subset(**dataset: object) -> dict[str, object]:
    """[dataset] of the shipped MNIST subset (2000 train, 1000 test images)."""
    return {"name": "mnist-subset", **dataset}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            base(dataset=subset(), train={"batch_size": 4096}),
            r"train.batch_size = 4096 is larger than the dataset \(mnist-subset, train split: "
            r"2000 images\); use a batch size of at most 2000$",
        ),
        (
            base(dataset=subset(split="test"), search={"batch_size": {"choices": [64, 1024]}}),
            r"search.batch_size \(up to 1024\) is larger than the dataset \(mnist-subset, "
            r"test split: 1000 images\)",
        ),
        (
            base(dataset={"limit": 100}, search={"batch_size": {"low": 16, "high": 128}}),
            r"search.batch_size \(up to 128\) is larger than the dataset \(mnist, train split: "
            r"100 images\); use a batch size of at most 100 or raise dataset.limit",
        ),
        (
            base(dataset=subset(), baselines=[{"batch_size": 2048}]),
            r"baselines\[0\].batch_size = 2048 is larger than the dataset",
        ),
        (
            # Not on this machine: the limit alone is known.
            base(dataset={"name": "npz", "path": "/nowhere/x.npz", "limit": 10}),
            r"train.batch_size = 64 is larger than dataset.limit = 10; use a batch size of at "
            r"most 10 or raise dataset.limit",
        ),
        (base(dataset={"name": "image-folder"}), r"dataset 'image-folder' needs a path"),
        (
            base(study={"name": "t", "heartbeat_interval": 10**12}),
            r"study.heartbeat_interval = 1000000000000 is invalid; use 1 to 3600 s",
        ),
        (
            base(study={"name": "t", "heartbeat_interval": 0}),
            r"study.heartbeat_interval = 0 is invalid; use 1 to 3600 s",
        ),
        (
            base(study={"name": "t", "grace_period": 10**9}),
            r"study.grace_period = 1000000000 is invalid; use 2 to 604800 s \(a week\)",
        ),
        (
            base(study={"name": "t", "max_retry": 10**6}),
            r"study.max_retry = 1000000 is invalid; use 0 to 100",
        ),
        (
            base(eval={"samples": 10**12}),
            r"eval.samples = 1000000000000 is invalid; use 2 to 1000000 images",
        ),
        (
            base(eval={"final_samples": 1_000_001}),
            r"eval.final_samples = 1000001 is invalid; use 2 to 1000000 images",
        ),
        (
            base(study={"name": "x" * (STUDY_NAME_MAX_LENGTH + 1)}),
            r"study.name = 'x{40}'... has 513 characters; the study database holds at most "
            r"512: use a shorter name",
        ),
        (
            base(study={"name": "a\x00b"}),
            r"study.name = 'a\\x00b' contains '\\x00', a control character; use printable",
        ),
        (base(study={"name": "two\nlines"}), r"contains '\\n', a control character"),
        (base(study={"name": "  "}), r"study.name must be a non-empty string .*; got '  '"),
        (base(study={"name": 3}), r"study.name must be a non-empty string .*; got 3"),
        (base(study={"name": "t", "max_steps": 0}), r"study.max_steps = 0 must be at least 1"),
        (base(study={"name": "t", "max_steps": 1.5}), r"study.max_steps = 1.5 must be an integer"),
        *(
            (
                base(study={"name": "t", "max_device_hours": v}),
                rf"study.max_device_hours = {v} must be a positive number \(device-hours of "
                r"training and evaluation over all trials, e.g. 0.5\); drop it",
            )
            for v in (0, -1, math.inf, math.nan)
        ),
        (
            base(study={"name": "t", "max_device_hours": "2h"}),
            r"study.max_device_hours = '2h' must be a number",
        ),
    ],
)
def test_values_that_can_never_work_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_study_spec(data, source="s.toml")
    assert str(info.value).startswith("s.toml: ") and "\n" not in str(info.value)


def test_values_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    import numpy as np

    images = tmp_path / "d.npz"
    np.savez(images, images=np.zeros((40, 8, 8), dtype=np.uint8))
    specs = [
        base(dataset=subset(split="test"), search={"batch_size": {"choices": [64, 1000]}}),
        base(dataset={"limit": 128}, train={"batch_size": 128}),
        base(dataset={"name": "npz", "path": str(images)}, train={"batch_size": 40}),
        # A path that is only where the workers run: nothing to check here.
        base(dataset={"name": "npz", "path": str(tmp_path / "elsewhere.npz")}),
        base(
            study={"name": "é" * STUDY_NAME_MAX_LENGTH, "heartbeat_interval": 3600},
            eval={"samples": 1_000_000, "final_samples": 1_000_000},
        ),
        base(study={"name": "t", "grace_period": 7 * 24 * 3600, "max_retry": 100}),
    ]
    for data in specs:
        assert parse_study_spec(data).name
    with pytest.raises(ConfigError, match=r"train.batch_size = 41 is larger than the dataset"):
        parse_study_spec(
            base(dataset={"name": "npz", "path": str(images)}, train={"batch_size": 41})
        )


def test_study_name_bound_is_optunas_column() -> None:
    from optuna.storages._rdb.models import MAX_INDEXED_STRING_LENGTH, StudyModel

    assert STUDY_NAME_MAX_LENGTH == MAX_INDEXED_STRING_LENGTH
    assert StudyModel.__table__.c.study_name.type.length == STUDY_NAME_MAX_LENGTH
    assert check_study_name("mnist-dcgan", "--name") == "mnist-dcgan"
    with pytest.raises(ConfigError, match=r"--name = 'a\\udcffb' contains '\\udcff', a byte"):
        check_study_name("a\udcffb", "--name")  # an undecodable byte on a command line


def test_a_compute_budget_round_trips_through_the_stored_spec() -> None:
    spec = parse_study_spec(base(study={"name": "t", "max_steps": 50_000}))
    assert spec.max_steps == 50_000 and spec.max_trials is None
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    hours = parse_study_spec(base(study={"name": "t", "max_device_hours": 2}))
    assert hours.max_device_hours == 2.0 and hours.max_steps is None
    assert parse_study_spec(study_spec_to_dict(hours)) == hours


def pbt(**strategy: object) -> dict[str, object]:
    """A valid PBT spec: 4 members, evaluations (and PBT decisions) every 5 of 20 steps."""
    return base(
        study={"name": "t", "max_trials": 4},
        train={"steps": 20},
        eval={"every": 5},
        search={
            "lr_g": {"low": 1e-4, "high": 1e-2, "log": True},
            "lr_d": {"low": 1e-4, "high": 1e-2, "log": True},
            "loss": {"choices": ["ns", "hinge"]},
        },
        strategy={"name": "pbt", **strategy},
    )


def test_pbt_strategy_parses_round_trips_and_does_not_prune() -> None:
    spec = parse_study_spec(pbt(quantile=0.5))
    assert spec.strategy.name == "pbt" and spec.strategy.quantile == 0.5
    assert spec.strategy.hyperparams == ("lr_g", "lr_d")  # the searched adoptable floats
    assert spec.strategy.perturbation_factors == (0.8, 1.2)
    assert spec.pruner == ComponentSpec("none")
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    # A spec without [strategy] or compute budget keeps the Optuna strategy, stored as such.
    plain = parse_study_spec(base())
    assert plain.strategy.name == "optuna"
    assert study_spec_to_dict(plain)["strategy"] == {"name": "optuna", "guard": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**pbt(), "study": {"name": "t"}},
            r"strategy pbt trains a population of study.max_trials members; set study.max_trials",
        ),
        ({**pbt(), "eval": {"every": 0}}, r"set eval.every to fewer steps than train.steps"),
        ({**pbt(), "pruner": {"name": "median"}}, r"strategy pbt does not prune.*drop \[pruner\]"),
        (pbt(hyperparams=["loss"]), r"strategy.hyperparams names 'loss', which PBT cannot"),
        (pbt(quantile=0.9), r"strategy.quantile = 0.9 is invalid; use \(0, 0.5\]"),
        (pbt(quantlie=0.2), r"unknown key 'strategy.quantlie'; did you mean 'quantile'"),
        (pbt(perturbation_factors=[0.8, -1]), r"perturbation_factors must be positive numbers"),
        (
            {**base(), "strategy": {"name": "optuna", "quantile": 0.2}},
            r'strategy.quantile belongs to strategy "pbt"',
        ),
        (
            {**base(), "strategy": {"name": "asha"}},
            r"strategy.name = 'asha' is invalid; use 'optuna', 'grow', 'pbt'",
        ),
        (
            {**pbt(), "search": {"loss": {"choices": ["ns", "hinge"]}}},
            r"strategy pbt perturbs searched float ranges of lr_g, lr_d",
        ),
    ],
)
def test_bad_pbt_specs_name_the_problem_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study_spec(data)


def test_network_keys_are_searchable_and_reach_the_networks() -> None:
    from ganhpo.study import apply_params
    from ganhpo.train.models import build_models, count_params

    spec = parse_study_spec(
        base(
            search={
                "width_g": {"choices": [8, 16]},
                "width_d": {"low": 8, "high": 32, "step": 8},
                "latent_dim": {"choices": [16, 64]},
                "spectral_norm": {"choices": [False, True]},
            }
        )
    )
    assert spec.space["width_d"] == IntRange(8, 32, step=8)
    config = apply_params(
        spec, {"width_g": 8, "width_d": 32, "latent_dim": 16, "spectral_norm": True}, {},
        default_seed=0,
    )  # fmt: skip
    model = config.model
    assert (model.width_g, model.width_d, model.latent_dim, model.spectral_norm) == (
        8,
        32,
        16,
        True,
    )
    g, d = build_models(
        "dcgan", latent_dim=16, channels=1, resolution=28, width=model.width,
        spectral_norm=True, width_g=model.width_g, width_d=model.width_d,
    )  # fmt: skip
    wide_g, _ = build_models("dcgan", latent_dim=16, channels=1, resolution=28, width=32)
    assert count_params(g) < count_params(wide_g)
    assert d.net[0].weight.shape[0] == 32  # D's first layer: width_d channels
    with pytest.raises(ConfigError, match=r"search.width_g.choices: 2 is invalid; use 4 to 1024"):
        parse_study_spec(base(search={"width_g": {"choices": [2, 16]}}))


def test_regulariser_weights_exist_only_when_their_regulariser_is_on() -> None:
    spec = parse_study_spec(
        base(
            search={
                "feature_matching": {"choices": [False, True]},
                "fm_weight": {"low": 0.1, "high": 10.0, "log": True},
                "consistency": {"choices": [False, True]},
                "cr_weight": {"low": 1.0, "high": 20.0},
                "rotation": {"choices": [False, True]},
                "rotation_weight": {"low": 0.1, "high": 2.0},
            }
        )
    )
    assert {"fm_weight", "cr_weight", "rotation_weight"} <= set(spec.space)
    with pytest.raises(ConfigError, match=r"search.cr_weight is never used: it needs consistency"):
        parse_study_spec(base(search={"cr_weight": {"low": 1.0, "high": 20.0}}))


def test_spectral_norm_exists_only_where_the_architecture_lets_it_choose() -> None:
    """resnet's D always has spectral normalisation: a trial of it samples no spectral_norm
    (that choice would be noise for the sampler), a dcgan trial does."""
    import optuna

    from ganhpo.study import suggest_params

    search = {"arch": {"choices": ["dcgan", "resnet"]}, "spectral_norm": {"choices": [False, True]}}
    spec = parse_study_spec(base(search=search))
    assert [name for name, _ in spec.search] == ["arch", "spectral_norm"]  # the parent first
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"arch": "resnet", "spectral_norm": True})
    study.enqueue_trial({"arch": "dcgan", "spectral_norm": True})
    resnet, dcgan = (suggest_params(study.ask(), spec) for _ in range(2))
    assert resnet == {"arch": "resnet"}
    assert dcgan == {"arch": "dcgan", "spectral_norm": True}

    fixed_resnet = base(search={"spectral_norm": {"choices": [False, True]}})
    fixed_resnet["model"] = {"arch": "resnet", "width": 8, "latent_dim": 8}
    with pytest.raises(
        ConfigError,
        match=r"search.spectral_norm is never used: it needs arch != 'resnet', which is not set; "
        r"add another arch or drop search.spectral_norm",
    ):
        parse_study_spec(fixed_resnet)


def test_a_study_may_weigh_fid_against_a_cost() -> None:
    spec = parse_study_spec(base(study={"name": "t", "objective": ["fid", "g_params"]}))
    assert spec.objectives == ("fid", "g_params") and spec.cost == "g_params"
    assert spec.pruner == ComponentSpec("none")  # two objectives: trials are never pruned
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    seconds = parse_study_spec(base(study={"name": "t", "objective": ["kid", "train_seconds"]}))
    assert seconds.objectives == ("kid", "train_seconds")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            base(study={"name": "t", "objective": ["fid", "size"]}),
            r"study.objective = \['fid', 'size'\] is invalid; use \"fid\", \"kid\", or a metric "
            r"and a cost to minimise together, e.g. \[\"fid\", \"g_params\"\] \(costs: g_params, "
            r"train_seconds\)",
        ),
        (
            base(study={"name": "t", "objective": ["g_params", "fid"]}),
            r"study.objective = \['g_params', 'fid'\] is invalid",
        ),
        (
            base(study={"name": "t", "objective": ["fid", "g_params"]}, pruner={"name": "median"}),
            r"pruner 'median' cannot prune a study with two objectives \(Optuna's pruners rank "
            r"one\); drop \[pruner\]",
        ),
        (
            base(study={"name": "t", "objective": ["fid", "g_params"]}, sampler={"name": "cmaes"}),
            r"sampler 'cmaes' optimises one objective; use tpe, nsga2, gp, random or qmc",
        ),
        (
            base(
                study={"name": "t", "objective": ["fid", "g_params"], "max_trials": 4},
                strategy={"name": "pbt", "hyperparams": ["lr_g"]},
                train={"steps": 100},
                eval={"every": 10},
            ),
            r"strategy pbt ranks trials by one objective",
        ),
    ],
)
def test_bad_multi_objective_specs_name_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study_spec(data)


def test_a_compute_budget_gets_hyperband_over_the_full_length_by_default() -> None:
    spec = parse_study_spec(
        base(study={"name": "t", "max_steps": 10000}, train={"steps": 1000}, eval={"every": 100})
    )
    assert spec.pruner == ComponentSpec(
        "hyperband", (("max_resource", 1000), ("min_resource", 100), ("reduction_factor", 3))
    )
    assert parse_study_spec(study_spec_to_dict(spec)) == spec  # stored as resolved
    # A trial budget, or no evaluation before the end: the median rule.
    trials = parse_study_spec(base(study={"name": "t", "max_trials": 10}, eval={"every": 5}))
    assert trials.pruner == DEFAULT_PRUNER
    at_end = base(study={"name": "t", "max_steps": 100}, train={"steps": 10}, eval={"every": 10})
    assert parse_study_spec(at_end).pruner == DEFAULT_PRUNER
    hours = base(
        study={"name": "t", "max_device_hours": 1}, train={"steps": 1000}, eval={"every": 100}
    )
    assert parse_study_spec(hours).pruner == spec.pruner  # a budget in device time too
    named = base(study={"name": "t", "max_steps": 100}, pruner={"name": "median"})
    assert parse_study_spec(named).pruner == ComponentSpec("median")


def grow(**strategy: object) -> dict[str, object]:
    """A valid grow spec: a compute budget of 10 trials of 100 steps."""
    return base(
        study={"name": "t", "max_steps": 1000},
        train={"steps": 100},
        eval={"every": 10},
        strategy={"name": "grow", **strategy},
    )


def test_grow_strategy_parses_round_trips_and_keeps_the_pruner() -> None:
    spec = parse_study_spec(grow(search_fraction=0.25, top=2))
    assert (spec.strategy.name, spec.strategy.search_fraction, spec.strategy.top) == (
        "grow",
        0.25,
        2,
    )
    assert spec.strategy.guard and spec.pruner.name == "hyperband"
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    # Only grow's own keys are stored (none of PBT's).
    assert set(study_spec_to_dict(spec)["strategy"]) == {"name", "guard", "search_fraction", "top"}
    off = parse_study_spec({**base(), "strategy": {"name": "optuna", "guard": False}})
    assert not off.strategy.guard
    assert parse_study_spec(study_spec_to_dict(off)) == off  # the guard's switch is kept
    hours = grow()
    hours["study"] = {"name": "t", "max_device_hours": 1}
    assert parse_study_spec(hours).strategy.name == "grow"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**grow(), "study": {"name": "t", "max_trials": 10}},
            r"strategy grow splits a compute budget between searching and growing; set "
            r"study.max_steps or study.max_device_hours",
        ),
        (grow(search_fraction=0), r"strategy.search_fraction = 0 is invalid; use a number between"),
        (grow(search_fraction=1), r"strategy.search_fraction = 1 is invalid"),
        (grow(search_fraction="half"), r"strategy.search_fraction = 'half' must be a number"),
        (grow(search_fraction=float("nan")), r"strategy.search_fraction = nan is invalid"),
        (grow(top=0), r"strategy.top = 0 is invalid; use 1 to 64"),
        (grow(top=1.5), r"strategy.top = 1.5 must be an integer"),
        (grow(quantile=0.2), r'strategy.quantile belongs to strategy "pbt", not "grow"'),
        (grow(guard="yes"), r"strategy.guard = 'yes' must be true or false"),
        (grow(serach_fraction=0.5), r"unknown key 'strategy.serach_fraction'; did you mean"),
        (
            {**base(), "strategy": {"name": "optuna", "top": 2}},
            r'strategy.top belongs to strategy "grow", not "optuna"',
        ),
        (
            {**grow(), "study": {"name": "t", "max_steps": 1000, "objective": ["fid", "g_params"]}},
            r"strategy grow ranks trials by one objective",
        ),
    ],
)
def test_bad_grow_specs_name_the_problem_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study_spec(data)


def test_a_compute_budget_grows_by_default_and_old_studies_keep_their_strategy() -> None:
    from ganhpo.spec import DEFAULT_SEARCH_FRACTION
    from ganhpo.study import SPEC_ATTR, _spec_from_attrs

    budget = base(study={"name": "t", "max_steps": 1000}, eval={"every": 5})
    spec = parse_study_spec(budget)
    assert spec.strategy == StrategySpec(name="grow", search_fraction=DEFAULT_SEARCH_FRACTION)
    stored = study_spec_to_dict(spec)
    assert stored["strategy"]["name"] == "grow"
    assert _spec_from_attrs("t", {SPEC_ATTR: stored}) == spec
    # Two objectives: no growth (grow ranks one), the Optuna strategy.
    pareto = base(study={"name": "t", "max_steps": 1000, "objective": ["fid", "g_params"]})
    assert parse_study_spec(pareto).strategy.name == "optuna"
    # A [strategy] table without a name changes the default's keys.
    unnamed = parse_study_spec({**budget, "strategy": {"guard": False}})
    assert (unnamed.strategy.name, unnamed.strategy.guard) == ("grow", False)
    assert parse_study_spec({**base(), "strategy": {"guard": False}}).strategy.name == "optuna"
    # A study stored before grow was a default (no [strategy] stored) ran the Optuna
    # strategy, and its workers go on with it.
    old = {k: v for k, v in stored.items() if k != "strategy"}
    assert _spec_from_attrs("t", {SPEC_ATTR: old}).strategy == StrategySpec()


def test_a_spec_without_search_round_trips_and_its_study_is_read(tmp_path: Path) -> None:
    """A spec with nothing to search (one configuration, its seeds or baselines alone) is
    valid, and the study made of it must be readable: its stored spec once had an empty
    [search], which the parser refuses, so no worker could open the study."""
    from ganhpo.storage import open_storage, set_study_attr
    from ganhpo.study import SPEC_ATTR, create_study, load_study, study_spec

    raw = load_toml(STUDIES[0].parent / "quick.toml")
    raw.pop("search")
    raw.pop("baselines")
    spec = parse_study_spec(raw)
    assert spec.search == ()
    assert parse_study_spec(study_spec_to_dict(spec)) == spec
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", create_schema=True)
    study = create_study(spec, storage)
    assert study_spec(load_study(spec.name, storage)) == spec
    # A study created before this was fixed: its stored spec has search = {}.
    set_study_attr(study, SPEC_ATTR, {**study_spec_to_dict(spec), "search": {}})
    assert study_spec(load_study(spec.name, storage)) == spec
