"""``ganhpo study ...``: bad input gets one line, a non-zero exit and nothing written."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from ganhpo.cli import main
from ganhpo.storage import open_storage, study_attr
from ganhpo.study import SPEC_ATTR

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "studies" / "quick.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ganhpo: error: ")
    return lines[0]


def spec_with(tmp_path: Path, old: str, new: str) -> Path:
    text = QUICK.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[study]", "[study", "is not valid TOML"),
        ("lr_g = {", "lr_gg = {", "unknown search parameter 'lr_gg'; did you mean 'lr_g'?"),
        ("seed = 0", "sed = 0", "unknown key 'sed' in [study]; did you mean 'seed'?"),
        ("low = 5e-5, high = 5e-3", "low = 5e-3, high = 5e-5", "is greater than high"),
        ("low = 5e-5, high = 5e-3", "low = 0.0, high = 5e-3", "search.lr_g.low = 0.0 is invalid"),
        (
            "beta1 = { choices = [0.0, 0.5] }",
            "beta1 = { low = 0.0, high = 0.5, log = true }",
            "search.beta1: a log range needs low > 0, got low = 0.0; use a positive low or "
            "log = false",
        ),
        ('name = "tpe"', 'name = "tpee"', "unknown sampler 'tpee' (did you mean 'tpe'?)"),
        ('name = "percentile"', 'name = "mediun"', "unknown pruner 'mediun'"),
        ('name = "mnist-subset"', 'name = "cifar"', "unknown dataset 'cifar'"),
        ("batch_size = 32", "batch_size = 4096", "train.batch_size = 4096 is larger than the"),
        ("samples = 500", "samples = 1000000000000", "eval.samples = 1000000000000 is invalid"),
        ("seed = 0", "max_retry = 1000000", "study.max_retry = 1000000 is invalid; use 0 to 100"),
        ('name = "quick"', 'name = "q\\u0000"', "study.name = 'q\\x00' contains '\\x00'"),
    ],
)
def test_bad_spec_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    code, out, err = run(capsys, "study", "create", str(spec_with(tmp_path, old, new)))
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""
    assert not (tmp_path / "ganhpo.db").exists()  # nothing written


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            'name = "mnist-subset"',
            'name = "image-folder"\npath = "faces"',
            "the classifier extractor needs labels to train on, and dataset 'image-folder' "
            "(faces) has none; use extractor 'inception' (pip install 'ganhpo[inception]')",
            id="classifier-without-labels",
        ),
        pytest.param(
            'extractor = "classifier"',
            'extractor = "inception"',
            "the 'inception' feature extractor cannot be used here: pytorch-fid is not installed; "
            "run: pip install 'ganhpo[inception]', or use extractor 'classifier'",
            id="inception-not-installed",
        ),
    ],
)
def test_an_extractor_that_cannot_work_is_refused_at_create(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    message: str,
) -> None:
    """Every trial would fail on it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()  # a folder that is here: the extractor is the mistake
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    for name in ("pytorch_fid", "pytorch_fid.inception"):  # not importable, installed or not
        monkeypatch.setitem(sys.modules, name, None)
    code, out, err = run(capsys, "study", "create", str(spec_with(tmp_path, old, new)))
    assert code == 1 and out == ""
    assert one_line_error(err) == f"ganhpo: error: {message}"
    assert not (tmp_path / "ganhpo.db").exists()  # nothing written


@pytest.mark.parametrize("extractor", ["classifier", "inception"])
def test_a_missing_image_folder_is_named_before_the_extractor(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extractor: str,
) -> None:
    """A mistyped folder was reported as "the classifier extractor needs labels" or
    "pytorch-fid is not installed"; the folder comes first now."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    for name in ("pytorch_fid", "pytorch_fid.inception"):  # not importable, installed or not
        monkeypatch.setitem(sys.modules, name, None)
    spec = spec_with(tmp_path, 'name = "mnist-subset"', 'name = "image-folder"\npath = "facse"')
    spec.write_text(spec.read_text().replace('"classifier"', f'"{extractor}"'))
    code, out, err = run(capsys, "study", "create", str(spec))
    assert code == 1 and out == ""
    line = one_line_error(err)
    assert line.startswith("ganhpo: error: image folder facse does not exist: fix [dataset] path")
    assert not (tmp_path / "ganhpo.db").exists()  # nothing written


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        pytest.param(
            np.zeros(60, dtype=np.int64),
            "dataset 'npz' has one class (60 images labelled 0); a classifier needs at least two",
            id="one-class",
        ),
        pytest.param(
            np.arange(60),
            "class 0 of dataset 'npz' has only 1 image(s); training a classifier needs at least "
            "10 per class",
            id="an-id-per-image",
        ),
    ],
)
def test_labels_that_are_not_classes_are_refused_at_create(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    labels: np.ndarray,
    message: str,
) -> None:
    """Such labels gave "accuracy 1.0000" (all zeros) and an FID of 10.9 for black images; the
    .npz's labels are read at create, in well under a second, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    np.savez(tmp_path / "mine.npz", images=np.zeros((60, 28, 28), np.uint8), labels=labels)
    spec = spec_with(tmp_path, 'name = "mnist-subset"', 'name = "npz"\npath = "mine.npz"')
    started = time.monotonic()
    code, out, err = run(capsys, "study", "create", str(spec))
    assert time.monotonic() - started < 1.0
    assert code == 1 and out == ""
    assert message in one_line_error(err) and "use extractor 'inception'" in err
    assert not (tmp_path / "ganhpo.db").exists()


def database_tables(url: str) -> list[str]:
    """The tables in the database at ``url`` (none until a study was created there)."""
    import sqlalchemy

    from ganhpo.storage import _with_driver

    engine = sqlalchemy.create_engine(_with_driver(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# Values that fail every trial, or the database, are refused before the database is touched.
NEVER_WORK = [
    pytest.param(
        {"batch_size = 32": "batch_size = 4096"},
        [],
        "train.batch_size = 4096 is larger than the dataset (mnist-subset, train split: 2000 "
        "images); use a batch size of at most 2000",
        id="batch",
    ),
    pytest.param(
        {"beta1 = {": "batch_size = { choices = [64, 2048] }\nbeta1 = {"},
        [],
        "search.batch_size (up to 2048) is larger than the dataset",
        id="search-batch",
    ),
    pytest.param(
        {"samples = 500": "samples = 1000000000000"},
        [],
        "eval.samples = 1000000000000 is invalid; use 2 to 1000000 images",
        id="eval-samples",
    ),
    pytest.param(
        {"seed = 0": "seed = 0\nheartbeat_interval = 1000000000000"},
        [],
        "study.heartbeat_interval = 1000000000000 is invalid; use 1 to 3600 s",
        id="heartbeat",
    ),
    pytest.param(
        {"seed = 0": "seed = 0\ngrace_period = 1000000000"},
        [],
        "study.grace_period = 1000000000 is invalid; use 2 to 604800 s (a week)",
        id="grace",
    ),
    pytest.param(
        {"seed = 0": "seed = 0\nmax_retry = 1000000"},
        [],
        "study.max_retry = 1000000 is invalid; use 0 to 100",
        id="retry",
    ),
    pytest.param(
        {'name = "quick"': f'name = "{"q" * 513}"'},
        [],
        "study.name = 'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq'... has 513 characters; the "
        "study database holds at most 512: use a shorter name",
        id="long-name",
    ),
    pytest.param(
        {'name = "quick"': 'name = "q\\u0000"'},
        [],
        "study.name = 'q\\x00' contains '\\x00', a control character",
        id="nul-name",
    ),
    pytest.param(
        {},
        ["--name", "q" * 513],
        f"--name = '{'q' * 40}'... has 513 characters; the study database holds at most 512",
        id="long-cli-name",
    ),
    pytest.param(
        {},
        ["--name", "a\x1bb"],
        "--name = 'a\\x1bb' contains '\\x1b', a control character",
        id="escape-cli-name",
    ),
]


@pytest.mark.parametrize(("replacements", "args", "message"), NEVER_WORK)
def test_values_that_never_work_are_refused_by_the_real_command(
    tmp_path: Path, postgres_url: str, replacements: dict[str, str], args: list[str], message: str
) -> None:
    from procs import ganhpo, spec_variant, worker_env

    spec = spec_variant(tmp_path, replacements)
    argv = ["study", "create", str(spec), "--storage", postgres_url, *args]
    done = ganhpo(*argv, cwd=tmp_path, env=worker_env(tmp_path / "cache"))
    assert done.returncode == 2, done.stderr
    assert message in one_line_error(done.stderr) and done.stdout == ""
    assert database_tables(postgres_url) == []  # not even Optuna's schema was created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # no file, no artifacts


def test_the_longest_name_the_database_holds_is_accepted(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    name = "q" * 512
    code, out, _ = run(
        capsys, "study", "create", str(QUICK), "--storage", postgres_url, "--name", name
    )
    assert (code, out) == (0, f"{name}\n")
    study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
    assert study_attr(study, SPEC_ATTR)["study"]["name"] == name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    code, _, err = run(
        capsys, "study", "create", str(QUICK), "--storage", url, "--connect-timeout", "1"
    )
    line = one_line_error(err.splitlines()[-1] + "\n")  # retries log warnings first
    assert code == 1 and "server running" in line
    assert "hunter2" not in err


def test_wrong_password(capsys: pytest.CaptureFixture[str], private_postgres) -> None:
    url = private_postgres.url("postgres", password="not-the-password")
    code, _, err = run(capsys, "study", "create", str(QUICK), "--storage", url)
    line = one_line_error(err)
    assert code == 1 and "check the user name and password" in line
    assert "not-the-password" not in err


def test_the_default_study_has_a_compute_budget(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    default = ROOT / "studies" / "mnist-dcgan.toml"
    assert run(capsys, "study", "create", str(default))[:2] == (0, "mnist-dcgan\n")
    code, out, _ = run(capsys, "study", "show", "mnist-dcgan")
    assert code == 0
    assert "compute    0 of 150000 training steps spent (0 %), 150000 left" in out.splitlines()
    # Trials that grow: Hyperband over the 5000 steps, its first rung the first evaluation.
    pruner = "pruner     hyperband(max_resource=5000, min_resource=500, reduction_factor=3)"
    assert pruner in out.splitlines()


def test_create_show_list_trials_delete(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    code, out, _ = run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    assert (code, out) == (0, "quick\n")
    # Creating it again is refused and leaves the study as it was ...
    code, _, err = run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    assert code == 1 and "already exists" in one_line_error(err) and "--load-if-exists" in err
    # ... unless asked to load it.
    code, out, _ = run(
        capsys, "study", "create", str(QUICK), "--storage", postgres_url, "--load-if-exists"
    )
    assert (code, out) == (0, "quick\n")
    # The baseline was enqueued exactly once.
    study = optuna.load_study(study_name="quick", storage=open_storage(postgres_url))
    assert [t.state.name for t in study.get_trials()] == ["WAITING"]
    assert study_attr(study, SPEC_ATTR)["study"]["name"] == "quick"
    # Another name, same spec.
    code, out, _ = run(
        capsys, "study", "create", str(QUICK), "--storage", postgres_url, "--name", "q2"
    )
    assert (code, out) == (0, "q2\n")

    code, out, _ = run(capsys, "study", "list", "--storage", postgres_url, "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["q2", "quick"]
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", postgres_url, "--json")
    info = json.loads(out)
    assert code == 0 and info["states"] == {"WAITING": 1} and info["best"] is None
    assert info["sampler"] == "tpe(n_startup_trials=3)" and info["max_trials"] == 6
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", postgres_url)
    assert code == 0 and out.splitlines()[1:] == [
        "strategy   optuna (the sampler proposes, the pruner stops)",
        "sampler    tpe(n_startup_trials=3)",
        "pruner     percentile(n_startup_trials=2, n_warmup_steps=0, percentile=33.0)",
        "trials     0 of 6: waiting 1",
        "best       none yet",
    ]
    code, out, _ = run(capsys, "study", "trials", "quick", "--storage", postgres_url, "--csv")
    assert code == 0 and out.splitlines()[0].startswith("number,state,value")

    code, _, err = run(capsys, "study", "show", "quik", "--storage", postgres_url)
    line = one_line_error(err)
    assert code == 1 and "study 'quik' does not exist (did you mean 'quick'?)" in line

    code, out, _ = run(capsys, "study", "delete", "q2", "--storage", postgres_url, "--yes")
    assert (code, out) == (0, "deleted q2\n")
    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(postgres_url))] == [
        "quick"
    ]


def test_worker_on_a_missing_study(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    run(capsys, "study", "create", str(QUICK), "--storage", postgres_url)
    code, _, err = run(capsys, "worker", "--study", "nope", "--storage", postgres_url)
    assert code == 1 and "study 'nope' does not exist" in one_line_error(err)


def test_worker_without_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GANHPO_STORAGE", raising=False)
    code, _, err = run(capsys, "worker", "--study", "quick")
    assert code == 1 and "ganhpo study create" in one_line_error(err)
    assert not (tmp_path / "ganhpo.db").exists()


def test_password_never_printed_by_the_real_command(private_postgres) -> None:
    url = private_postgres.url("postgres", password="s3cret-Pa55")
    proc = subprocess.run(
        [sys.executable, "-m", "ganhpo", "study", "create", str(QUICK), "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "s3cret-Pa55" not in proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1


def forget_metric_names(url: str) -> None:
    """Make the studies at ``url`` look created before ganhpo named their objective."""
    import sqlalchemy

    from ganhpo.storage import _with_driver

    engine = sqlalchemy.create_engine(_with_driver(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "DELETE FROM study_system_attributes WHERE key = 'study:metric_names'"
                )
            )
    finally:
        engine.dispose()


def metric_names(url: str, name: str) -> list[str] | None:
    return optuna.load_study(study_name=name, storage=open_storage(url)).metric_names


def test_the_objective_is_named_at_create_and_when_an_old_study_is_opened(
    tmp_path: Path, postgres_url: str
) -> None:
    """Optuna's metric name is what optuna-dashboard and Optuna's plots label the values with."""
    from procs import ganhpo, spec_variant, worker_env

    env = worker_env(tmp_path / "cache")
    kid = spec_variant(
        tmp_path, {'name = "quick"': 'name = "kid"', 'objective = "fid"': 'objective = "kid"'}
    )
    for spec in (QUICK, kid):
        done = ganhpo(
            "study", "create", str(spec), "--storage", postgres_url, cwd=tmp_path, env=env
        )
        assert done.returncode == 0, done.stderr
    assert metric_names(postgres_url, "quick") == ["FID"]
    assert metric_names(postgres_url, "kid") == ["KID"]

    forget_metric_names(postgres_url)
    assert metric_names(postgres_url, "quick") is None
    done = ganhpo("study", "show", "quick", "--storage", postgres_url, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert metric_names(postgres_url, "quick") == ["FID"]
    # A worker names it too (one trial of the tiny study, about 10 s).
    argv = ["worker", "--study", "kid", "--storage", postgres_url, "--n-trials", "1"]
    done = ganhpo(*argv, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert metric_names(postgres_url, "kid") == ["KID"]


def test_study_without_an_action_lists_and_storage_goes_anywhere(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    """The storage options work before the command (as in Optuna's CLI), before the action and
    after it; ``ganhpo study`` alone is ``ganhpo study list``."""
    assert run(capsys, "--storage", postgres_url, "study", "create", str(QUICK))[:2] == (
        0,
        "quick\n",
    )
    listing = run(capsys, "study", "list", "--storage", postgres_url)
    assert listing[0] == 0 and listing[1].startswith("quick\t1 trials\t")
    for argv in (
        ["--storage", postgres_url, "study", "list"],
        ["study", "--storage", postgres_url, "list"],
        ["study", "--storage", postgres_url],
        ["--storage", postgres_url, "study"],
        ["-q", "--storage", postgres_url, "--connect-timeout", "5", "study"],
        # The one given last wins.
        ["--storage", "sqlite:///nowhere.db", "study", "list", "--storage", postgres_url],
    ):
        assert run(capsys, *argv) == listing, argv
    code, out, _ = run(capsys, "--storage", postgres_url, "study", "list", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["quick"]


def test_json_outputs_are_alike_and_trials_carry_their_curve_and_baseline_as_data(
    capsys: pytest.CaptureFixture[str], quick_study: dict[str, str]
) -> None:
    storage = quick_study["storage"]
    outputs = {}
    for argv in (["list"], ["show", "quick"], ["trials", "quick"], ["best", "quick"]):
        code, out, _ = run(capsys, "study", *argv, "--json", "--storage", storage)
        assert code == 0
        data = json.loads(out)
        assert out == json.dumps(data, indent=2) + "\n", argv  # every --json output alike
        outputs[argv[0]] = data
    study = optuna.load_study(study_name="quick", storage=storage)
    trials = study.get_trials(deepcopy=False)
    rows = outputs["trials"]
    assert [r["number"] for r in rows] == [t.number for t in trials]
    for row, trial in zip(rows, trials, strict=True):
        stds = trial.user_attrs["fid_std"]  # each evaluation's sampling std, by step
        curve = [
            {"step": s, "value": v, "std": stds[str(s)]}
            for s, v in sorted(trial.intermediate_values.items())
        ]
        assert row["intermediate"] == curve and len(curve) >= 1
        assert row["value_std"] == curve[-1]["std"] > 0
    # Trial 0 is the spec's [[baselines]] entry; nothing else is.
    assert [r["baseline"] for r in rows] == [True] + [False] * (len(rows) - 1)
    assert outputs["best"]["number"] == study.best_trial.number
    # What real images the search never saw score, recorded by the worker: a trial's floor.
    real = outputs["show"]["real_images"]
    assert (real["split"], real["samples"]) == ("test", 1000) and 0 < real["fid"] < 30, real
    assert study.user_attrs["fid_of_real_images"] == real  # on the dashboard's study page
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", storage)
    assert f"lower is better; real images the search never saw score {real['fid']:.4g}" in out

    code, out, _ = run(capsys, "study", "trials", "quick", "--csv", "--storage", storage)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [int(r["number"]) for r in table] == [t.number for t in trials]
    # What a person reads: no artifact ids nor compute ledger (--json has them), no column
    # that repeats the value, numbers to 6 significant digits.
    columns = list(table[0])
    assert "generator" in rows[0], "--json keeps the bookkeeping"
    hidden = {"generator", "grid", "steps_reserved", "seconds_reserved", "fid", "checkpoint"}
    assert not hidden & set(columns), columns
    assert columns[:3] == ["number", "state", "value"] and columns[-1] == "intermediate"
    assert [c for c in columns if c.startswith("params_")] == [
        f"params_{k}" for k in trials[0].params
    ]
    for cells, trial in zip(table, trials, strict=True):
        if trial.value is not None:
            assert cells["value"] == f"{trial.value:.6g}"
        if "kid" in trial.user_attrs:  # measured at the final evaluation
            assert cells["kid"] == f"{trial.user_attrs['kid']:.6g}", cells
    assert [r["baseline"] for r in table] == ["True"] + ["False"] * (len(rows) - 1)
    for cells, row in zip(table, rows, strict=True):
        pairs = [p.split(":") for p in cells["intermediate"].split()]  # step:value±std
        assert [int(s) for s, _ in pairs] == [p["step"] for p in row["intermediate"]]
        assert [float(v.split("±")[0]) for _, v in pairs] == pytest.approx(
            [p["value"] for p in row["intermediate"]], rel=1e-5
        )
        assert [float(v.split("±")[1]) for _, v in pairs] == pytest.approx(
            [p["std"] for p in row["intermediate"]], rel=0.05
        )


def test_a_reader_that_stops_early_ends_the_output_without_a_traceback(tmp_path: Path) -> None:
    """'ganhpo study trials NAME --csv | head -1': the pipe closed under the writer ends the
    command quietly (exit 141, as a shell reports SIGPIPE), not with a BrokenPipeError."""
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["study", "create", str(QUICK), "--storage", storage, "-q"]) == 0
    study = optuna.load_study(study_name="quick", storage=storage)
    dist = {"lr_g": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}
    study.add_trials(  # more rows than a pipe's buffer holds
        optuna.create_trial(value=100.0 + i, params={"lr_g": 1e-3}, distributions=dist)
        for i in range(3000)
    )
    done = subprocess.run(
        f"{sys.executable} -m ganhpo study trials quick --csv --storage {storage} | head -1; "
        "exit ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.startswith("number,state,value,") and done.stdout.count("\n") == 1
    assert (done.returncode, done.stderr) == (141, ""), done.stderr


def _dominated(t: optuna.trial.FrozenTrial, others: list[optuna.trial.FrozenTrial]) -> bool:
    return any(
        all(a <= b for a, b in zip(o.values, t.values, strict=True)) and o.values != t.values
        for o in others
    )


def test_a_study_of_fid_and_size_has_a_pareto_front_and_best_asks_which(
    capsys: pytest.CaptureFixture[str], pareto_study: dict[str, str]
) -> None:
    storage = pareto_study["storage"]
    study = optuna.load_study(study_name="quick", storage=storage)
    assert study.metric_names == ["FID", "G parameters"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) >= 3, [(t.number, t.state, t.user_attrs.get("status")) for t in study.trials]
    for t in done:  # the values are the final FID and the generator's parameter count
        assert t.values == [t.user_attrs["fid"], t.user_attrs["g_params"]]
        assert sorted(t.intermediate_values) == [80, 160]  # its curve, though never pruned
    assert len({t.values[1] for t in done}) > 1  # the widths differ: a real trade-off
    front = sorted((t for t in done if not _dominated(t, done)), key=lambda t: (t.values, t.number))
    assert {t.number for t in front} == {t.number for t in study.best_trials}  # Optuna's

    code, out, _ = run(capsys, "study", "show", "quick", "--json", "--storage", storage)
    info = json.loads(out)
    assert code == 0 and info["objectives"] == ["fid", "g_params"]
    assert [p["number"] for p in info["pareto_front"]] == [t.number for t in front]
    assert info["pareto_front"][0]["values"] == {"fid": front[0].values[0],
                                                 "g_params": front[0].values[1]}  # fmt: skip
    assert info["best"]["number"] == front[0].number  # the best FID
    assert info["pruner"] == "none()"
    code, out, _ = run(capsys, "study", "show", "quick", "--storage", storage)
    assert f"pareto     {len(front)} trade-offs of fid and g_params" in out
    for t in front:
        assert f"trial {t.number:<5} fid {t.values[0]:.4f}  g_params {t.values[1]:.6g}" in out

    def best(*extra: str) -> int:
        code, out, err = run(capsys, "study", "best", "quick", "--json", "--storage", storage,
                             *extra)  # fmt: skip
        assert code == 0, err
        return int(json.loads(out)["number"])

    assert best() == front[0].number  # by default: the best FID
    smallest = min(front, key=lambda t: (t.values[1], t.number))
    assert best("--fid-within", "1e9") == smallest.number  # any FID: the smallest generator
    assert best("--fid-within", "0") == front[0].number
    within = [t for t in front if t.values[0] <= front[0].values[0] * 1.25]
    assert best("--fid-within", "25") == min(within, key=lambda t: t.values[1]).number
    other = next(t for t in done if t.number != front[0].number)
    assert best("--trial", str(other.number)) == other.number

    code, _, err = run(capsys, "study", "best", "quick", "--trial", "99", "--storage", storage)
    assert code != 0 and "trial 99 of study 'quick' is not a completed trial" in one_line_error(err)
    code, _, err = run(capsys, "study", "best", "quick", "--fid-within", "-5", "--storage", storage)
    assert code != 0 and "--fid-within -5 is invalid" in one_line_error(err)


def test_fid_within_needs_a_study_with_a_cost(
    capsys: pytest.CaptureFixture[str], quick_study: dict[str, str]
) -> None:
    code, _, err = run(capsys, "study", "best", "quick", "--fid-within", "10",
                       "--storage", quick_study["storage"])  # fmt: skip
    assert code != 0
    assert "--fid-within needs a study that weighs a cost against fid" in one_line_error(err)
