"""``ganhpo study create`` on specs and options that can never train: each ends in one line
naming the problem and the fix, a non-zero exit code, no traceback, and nothing written.

Each case is ``studies/quick.toml`` with some text replaced (or added after a table's header),
plus command-line options.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import QUICK

from ganhpo.cli import main

BIG = str(2**63 - 1)  # TOML's largest integer

# (id, {old text: new text}, extra options). "[table]\n" as old text adds lines after it.
CASES: list[tuple[str, dict[str, str], list[str]]] = []


def case(name: str, replacements: dict[str, str], *options: str) -> None:
    CASES.append((name, replacements, list(options)))


def set_key(table: str, line: str) -> dict[str, str]:
    """Add ``line`` at the top of ``[table]`` ([train]: below its first line)."""
    if table == "train":
        return {"steps = 240\n": f"steps = 240\n{line}\n"}
    return {f"[{table}]\n": f"[{table}]\n{line}\n"}


# -- [study] -------------------------------------------------------------------------------------
for value in ['""', "5", '"' + "x" * 600 + '"', '"tab\\there"', '"nul\\u0000"']:
    case(f"study.name={value[:12]}", {'name = "quick"': f"name = {value}"})
for value in ['"lpips"', "5", '["fid", "fid"]', '["fid", "flops"]', "[]"]:
    case(f"study.objective={value}", {'objective = "fid"': f"objective = {value}"})
case("study.direction", set_key("study", 'direction = "maximize"'))
for value in ["-1", str(2**32), "1.5", '"0"', BIG]:
    case(f"study.seed={value}", {"seed = 0\n": f"seed = {value}\n"})
for value in ["0", "-1", BIG, "1_000_001", "1.5", '"6"', "true", "inf", "nan"]:
    case(f"study.max_trials={value}", {"max_trials = 6 ": f"max_trials = {value} "})
for value in ["0", "-5", BIG, "1.5", '"1000"', "inf"]:
    case(f"study.max_steps={value}", set_key("study", f"max_steps = {value}"))
for value in ["0", "-1", "inf", "nan", "1e308", '"1"', "true"]:
    case(f"study.max_device_hours={value}", set_key("study", f"max_device_hours = {value}"))
for value in ["{a = 1}", "5", "[1, 2]", "true"]:
    description = (
        'description = "Tiny DCGAN on the shipped MNIST subset: a smoke test of the whole service."'
    )
    case(f"study.description={value}", {description: f"description = {value}"})
for line in [
    "heartbeat_interval = 0",
    "heartbeat_interval = 1e9",
    f"heartbeat_interval = {BIG}",
    "grace_period = 1",
    "max_retry = -1",
    "max_retry = 1.5",
    "maxtrials = 5",
]:
    case(f"study.{line}", set_key("study", line))
case("no [study]", {"[study]\n": "[studies]\n"})
case("study is a value", {"[study]\n": "study = 5\n[unused]\n"})

# -- [dataset] -----------------------------------------------------------------------------------
for line in [
    'name = "imagenet"',
    'split = "val"',
    "resolution = 30",
    "resolution = 4",
    "resolution = 4096",
    "resolution = 28.0",
    "channels = 2",
    "channels = -1",
    "limit = 0",
    "limit = -1",
    "limit = 10",  # smaller than train.batch_size = 32
    'nme = "mnist"',
    "path = 5",
]:
    table = {"[dataset]\n": "[dataset]\n" + line + "\n"}
    if line.startswith("name"):
        table = {'name = "mnist-subset"': line}
    case(f"dataset.{line}", table)

# -- [model] -------------------------------------------------------------------------------------
for line in [
    'arch = "vgg"',
    'arch = "not a path:"',
    "width = 2",
    "width = 100000",
    "latent_dim = 0",
    "latent_dim = 1_000_000_000",
    "depth = 9",
    "depth = -1",
    'spectral_norm = "yes"',
    "width_g = 3",
    "hidden = 128",
]:
    key = line.split(" = ")[0]
    existing = {"arch": 'arch = "dcgan"', "width": "width = 16", "latent_dim": "latent_dim = 32"}
    table = {existing[key]: line} if key in existing else set_key("model", line)
    case(f"model.{line}", table)

# -- [train] -------------------------------------------------------------------------------------
for value in ["0", "-1", BIG, "1_000_000_001", "1.5", '"240"', "inf", "nan"]:
    case(f"train.steps={value}", {"steps = 240": f"steps = {value}"})
for value in ["1", "0", "1_000_000", '"32"']:
    case(f"train.batch_size={value}", {"batch_size = 32": f"batch_size = {value}"})
for line in [
    "lr_g = 0",
    "lr_g = 1",
    "lr_g = -1e-3",
    "lr_g = nan",
    "lr_g = inf",
    'lr_g = "0.001"',
    "lr_d = 2",
    "beta1 = 1.0",
    "beta1 = -0.1",
    "beta1 = nan",
    "beta2 = 1",
    "n_disc = 0",
    "n_disc = 1000",
    'loss = "lsgan"',
    'penalty = "wgan"',
    "gp_weight = inf",
    "gp_weight = -1",
    "gp_weight = nan",
    "gp_weight = 1e308",
    "r1_gamma = 1e308",
    "r1_gamma = inf",
    "fm_weight = 1e308",
    "cr_weight = inf",
    "rotation_weight = -1",
    "ema_decay = 1",
    "ema_decay = 0",
    "ema_decay = nan",
    'ema = "true"',
    "checkpoint_every = -1",
    f"checkpoint_every = {BIG}",
    "lr = 0.001",
]:
    case(f"train.{line}", set_key("train", line))

# -- [eval] --------------------------------------------------------------------------------------
for line in [
    "every = -1",
    f"every = {BIG}",
    "samples = 1",
    "samples = 10_000_000",
    "final_samples = 0",
    "batch_size = 0",
    "batch_size = 1e11",
    "batch_size = 100_000_000_000",
    "seed = -1",
    f"seed = {2**40}",
    'kid = "sometimes"',
    'final_reference = "all"',
    'grid = "yes"',
    'extractr = "classifier"',
]:
    key = line.split(" = ")[0]
    existing = {"every": "every = 80 ", "samples": "samples = 500"}
    table = {existing[key]: line + " "} if key in existing else set_key("eval", line)
    case(f"eval.{line}", table)
case("eval.extractor", {'extractor = "classifier"': 'extractor = "vgg"'})

# -- the top level -------------------------------------------------------------------------------
case("device", {"[study]\n": 'device = "tpu"\n[study]\n'})
case("unknown table", {"[study]\n": "[foo]\nx = 1\n[study]\n"})
case("train is a value", {"[train]  ": "[unused]  "} | {"[study]\n": "train = 5\n[study]\n"})
case("seed at the top", {"[study]\n": "seed = 1\n[study]\n"})

# -- [search] ------------------------------------------------------------------------------------
SEARCH = (
    "lr_g = { low = 5e-5, high = 5e-3, log = true }\n"
    "lr_d = { low = 5e-5, high = 5e-3, log = true }\n"
    'beta1 = { choices = [0.0, 0.5] }\nloss = { choices = ["ns", "hinge"] }\n'
)
case("search empty", {SEARCH: ""}, "--name", "empty")
case("search is a value", {"[search]\n" + SEARCH: "", "[study]\n": "search = 5\n[study]\n"})
for line in [
    "lr_gg = { low = 1e-4, high = 1e-2 }",
    "steps = { low = 100, high = 200 }",
    "gp_weight = { low = 1, high = 10 }",  # never used: penalty is none
    "width = 0.5",
    "lr_g = 0.001",
    "batch_size = { choices = [] }",
    "batch_size = { choices = [16, 16] }",
    'batch_size = { choices = [16, "a"] }',
    "batch_size = { choices = [1, 16] }",
    "batch_size = { choices = 16 }",
    f"batch_size = {{ low = 8, high = {BIG} }}",
    "n_disc = { low = 1, high = 2, step = -1 }",
    "n_disc = { low = 1, high = 2, lo = 1 }",
    "n_disc = { low = 1 }",
    "width = { low = 2, high = 64 }",
]:
    case(f"search.{line}", set_key("search", line), "--name", "s")
for line in [
    "lr_g = { low = 1e-2, high = 1e-4 }",
    "lr_g = { low = 0, high = 1e-2, log = true }",
    "lr_g = { low = 1e-4, high = inf }",
    "lr_g = { low = nan, high = 1e-2 }",
    "lr_g = { low = 1e-4, high = 1e-2, log = true, step = 1e-4 }",
    "lr_g = { low = 1e-4, high = 1e-2, step = 0.0 }",
    'lr_g = { low = "1e-4", high = 1e-2 }',
]:
    case(f"search.{line}", {"lr_g = { low = 5e-5, high = 5e-3, log = true }": line})
for line in [
    "gp_weight = { low = 1, high = inf }",
    "gp_weight = { low = 1, high = 1e308 }",
    "gp_weight = { low = -1, high = 10 }",
]:
    case(
        f"search.{line}",
        set_key("search", line) | {"batch_size = 32": 'batch_size = 32\npenalty = "gp"'},
    )

# -- [sampler] and [pruner] ----------------------------------------------------------------------
for line in [
    "n_startup_trials = -5",
    'n_startup_trials = "ten"',
    "n_startup_trials = 1.5",
    f"n_startup_trials = {BIG}",
    "n_startup_trials = true",
    "n_startups = 3",
    "seed = -1",
    "n_ei_candidates = -1",
    'multivariate = "yes"',
]:
    key = line.split(" = ")[0]
    table = (
        {"n_startup_trials = 3": line} if key == "n_startup_trials" else set_key("sampler", line)
    )
    case(f"sampler.{line}", table)
case("sampler.name", {'name = "tpe"': 'name = "bogus"'})
case("sampler.name=5", {'name = "tpe"': "name = 5"})
for line in [
    "n_startup_trials = -5",
    'n_warmup_steps = "0"',
    "percentile = 200.0",
    "percentile = nan",
    "percentile = inf",
    "noise_margin = -1",
    "noise_margin = inf",
    'noise_margin = "2"',
    "interval_steps = 0",
    "bogus = 1",
]:
    key = line.split(" = ")[0]
    existing = {
        "n_startup_trials": "n_startup_trials = 2 ",
        "n_warmup_steps": "n_warmup_steps = 0",
        "percentile": "percentile = 33.0",
    }
    table = {existing[key]: line + " "} if key in existing else set_key("pruner", line)
    case(f"pruner.{line}", table)
case("pruner.name", {'name = "percentile"': 'name = "bogus"'})
case(
    "pruner.patient without patience",
    {'name = "percentile"': 'name = "patient"'},
)
case(
    "pruner.threshold upper nan",
    {
        'name = "percentile"     # keep only trials in the best third at each evaluation\n'
        "percentile = 33.0\n": 'name = "threshold"\nupper = nan\n'
    },
)

# -- [[baselines]] -------------------------------------------------------------------------------
for old, new in [
    ("lr_g = 5e-4\n", "lr_g = 2.0\n"),
    ("lr_g = 5e-4\n", 'lr_g = "x"\n'),
    ("lr_g = 5e-4\n", "lr_g = 1e-2\n"),  # outside search.lr_g
    ("lr_g = 5e-4\n", "lr_g = nan\n"),
    ("lr_g = 5e-4\n", "lrg = 5e-4\n"),
    ('loss = "ns"\n\n[end]', 'loss = "lsgan"\n\n[end]'),
]:
    case(f"baselines.{new.strip()}", {old: new})
case("baselines is a value", {"[[baselines]]": "[unused]", "[study]\n": "baselines = 5\n[study]\n"})

# -- [strategy] ----------------------------------------------------------------------------------
case("strategy.name", {"[sampler]\n": '[strategy]\nname = "bogus"\n\n[sampler]\n'})

# -- the command line ----------------------------------------------------------------------------
for url in [
    "",
    " ",
    "foo://x/y",
    "postgres://u@127.0.0.1/db",
    "not a url",
    "postgresql://u@127.0.0.1:notaport/db",
    "postgresql://u:p@ss@127.0.0.1/db",
    "mssql://u@127.0.0.1/db",
]:
    case(f"--storage={url!r}", {}, "--storage", url)
case("--storage-file missing", {}, "--storage-file", "missing-file")
case("--storage and --storage-file", {}, "--storage", "sqlite:///x.db", "--storage-file", "f")
case("--connect-timeout nan", {}, "--connect-timeout", "nan")
case("--name empty", {}, "--name", "")
case("--name tab", {}, "--name", "a\tb")


def write_spec(work: Path, replacements: dict[str, str]) -> Path:
    text = QUICK.read_text() + "\n[end]\n"
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = work / "spec.toml"
    path.write_text(text.replace("\n[end]\n", "\n"))
    return path


def test_there_are_at_least_a_hundred_cases() -> None:
    assert len(CASES) >= 100
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("replacements", "options"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_and_writes_nothing(
    replacements: dict[str, str],
    options: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for variable in ("GANHPO_STORAGE", "GANHPO_ARTIFACTS"):
        monkeypatch.delenv(variable, raising=False)
    spec = write_spec(work, replacements)
    try:
        code = main(["study", "create", spec.name, *options])
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert code != 0, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganhpo: error: "), err
    assert sorted(p.name for p in work.iterdir()) == ["spec.toml"]  # no database, no artifacts
