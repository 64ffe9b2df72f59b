from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganhpo.data import ImageDataset, load_dataset
from ganhpo.errors import CheckpointError, ConfigError, DivergenceError
from ganhpo.train import (
    DatasetConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    Trainer,
    TrainParams,
    parse_checkpoint,
)


@pytest.fixture(scope="module")
def mnist_small(mnist_dir: Path) -> ImageDataset:
    return load_dataset("mnist", data_dir=mnist_dir, limit=1000)


def tiny_config(**train: object) -> TrainConfig:
    """A 20-step run on 1000 MNIST images; ``train`` may set [train] and [model] keys."""
    model = {k: train.pop(k) for k in ("arch", "depth") if k in train}
    params = {"steps": 20, "batch_size": 16, **train}
    return TrainConfig(
        dataset=DatasetConfig(name="mnist", limit=1000),
        model=ModelConfig(width=8, latent_dim=16, **model),  # type: ignore[arg-type]
        train=TrainParams(**params),  # type: ignore[arg-type]
        eval=EvalConfig(every=10, samples=200, final_samples=300, batch_size=100),
        seed=3,
        device="cpu",
    )


def state_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v for k, v in trainer.G.state_dict().items()}
    out |= {f"D.{k}": v for k, v in trainer.D.state_dict().items()}
    if trainer.G_ema is not None:
        out |= {f"E.{k}": v for k, v in trainer.G_ema.state_dict().items()}
    for name, opt in (("og", trainer.opt_g), ("od", trainer.opt_d)):
        for i, s in opt.state_dict()["state"].items():
            out |= {f"{name}.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)}
    return out


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"loss": "wasserstein", "penalty": "gp", "n_disc": 2, "ema": True},
        {"loss": "hinge", "penalty": "r1"},
        {"loss": "hinge", "arch": "resnet"},
        {"feature_matching": True, "fm_weight": 0.5},
        {"consistency": True, "penalty": "r1"},
        {"rotation": True, "loss": "hinge", "arch": "resnet"},
        {"depth": 1},
        {"depth": 1, "arch": "resnet", "loss": "hinge"},
    ],
    ids=[
        "ns",
        "wgan-gp-ema",
        "hinge-r1",
        "resnet",
        "feature-matching",
        "bcr-r1",
        "ss-rotation",
        "dcgan-depth",
        "resnet-depth",
    ],
)
def test_checkpoint_resume_is_bit_exact(
    mnist_small: ImageDataset, tmp_path: Path, params: dict[str, object]
) -> None:
    config = tiny_config(**params)
    straight = Trainer(config, data=mnist_small)
    for _ in range(20):
        straight.train_step()

    first = Trainer(config, data=mnist_small)
    for _ in range(10):
        first.train_step()
    first.save(tmp_path / "ckpt.pt")
    resumed = Trainer(config, data=mnist_small)
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.step == 10
    for _ in range(10):
        resumed.train_step()

    a, b = state_tensors(straight), state_tensors(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The RNG streams continue too: the next batch is the same.
    assert torch.equal(straight.batcher.next(), resumed.batcher.next())


def test_same_seed_same_run_and_other_seed_differs(mnist_small: ImageDataset) -> None:
    runs = []
    for seed in (3, 3, 4):
        t = Trainer(replace(tiny_config(), seed=seed), data=mnist_small)
        for _ in range(5):
            t.train_step()
        runs.append(torch.cat([p.flatten() for p in t.G.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_resume_with_another_configuration_is_refused(
    mnist_small: ImageDataset, tmp_path: Path
) -> None:
    t = Trainer(tiny_config(), data=mnist_small)
    t.train_step()
    t.save(tmp_path / "c.pt")
    other = Trainer(tiny_config(lr_g=1e-3), data=mnist_small)
    with pytest.raises(CheckpointError, match=r"train\.lr_g"):
        other.load(tmp_path / "c.pt")
    # A longer budget is allowed: that is how a run is extended.
    Trainer(tiny_config(steps=50), data=mnist_small).load(tmp_path / "c.pt")


def test_a_checkpoint_from_before_a_model_key_existed_resumes(
    mnist_small: ImageDataset, tmp_path: Path
) -> None:
    """A checkpoint made before ``model.depth`` existed has no such key: it means the default
    (an upgraded worker resumes a study's trials; the state is the same network)."""
    from ganhpo.train.checkpoint import load_checkpoint, save_checkpoint

    t = Trainer(tiny_config(), data=mnist_small)
    t.train_step()
    state = t.state_dict()
    del state["config"]["model"]["depth"]
    save_checkpoint(state, tmp_path / "old.pt")
    resumed = Trainer(tiny_config(), data=mnist_small)
    resumed.load(tmp_path / "old.pt")
    assert resumed.step == 1
    assert "depth" not in load_checkpoint(tmp_path / "old.pt")["config"]["model"]
    with pytest.raises(CheckpointError, match=r"model\.depth"):  # but not another network
        Trainer(tiny_config(depth=1), data=mnist_small).load(tmp_path / "old.pt")


def test_adopted_hyperparameters_continue_the_state_bit_exactly(
    mnist_small: ImageDataset,
) -> None:
    """What a PBT member does when it exploits another: the other's full state, loaded
    bit-exactly, trained on with this trainer's learning rates and penalty weight."""
    donor = Trainer(tiny_config(penalty="r1", r1_gamma=1.0), data=mnist_small)
    for _ in range(10):
        donor.train_step()
    saved = donor.checkpoint_bytes()  # as the artifact store holds it
    state = parse_checkpoint(saved, source="test")
    explored = tiny_config(penalty="r1", r1_gamma=0.5, lr_g=1.6e-4, lr_d=2.4e-4)
    member = Trainer(explored, data=mnist_small)
    with pytest.raises(CheckpointError, match=r"train\.lr_d, train\.lr_g, train\.r1_gamma"):
        member.load_state_dict(state)
    member.load_state_dict(state, adopt=("lr_g", "lr_d", "r1_gamma"))
    a, b = state_tensors(donor), state_tensors(member)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact
    assert member.step == 10
    assert [g["lr"] for g in member.opt_g.param_groups] == [1.6e-4]
    assert [g["lr"] for g in member.opt_d.param_groups] == [2.4e-4]
    # From here on it trains as its own configuration says, and deterministically so.
    twin = Trainer(explored, data=mnist_small)
    twin.load_state_dict(parse_checkpoint(saved, source="test"), adopt=("lr_g", "lr_d", "r1_gamma"))
    for trainer in (member, twin, donor):
        for _ in range(5):
            trainer.train_step()
    after, twin_after = state_tensors(member), state_tensors(twin)
    assert all(torch.equal(after[k], twin_after[k]) for k in after)
    assert not torch.equal(after["G.net.0.weight"], state_tensors(donor)["G.net.0.weight"])
    with pytest.raises(ValueError, match="cannot adopt \\['width'\\]"):
        member.load_state_dict(state, adopt=("width",))


def test_corrupt_checkpoint_is_a_clear_error(mnist_small: ImageDataset, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(tiny_config(), data=mnist_small).load(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny_config(), data=mnist_small).load(tmp_path / "missing.pt")


def test_divergence_stops_at_once_with_the_step() -> None:
    # Huge learning rates with beta2 = 0 (no second-moment damping) blow WGAN up in a few steps.
    config = TrainConfig(
        dataset=DatasetConfig(name="mnist-subset"),
        model=ModelConfig(width=8, latent_dim=16),
        train=TrainParams(
            steps=300, batch_size=16, loss="wasserstein", lr_d=0.5, lr_g=0.5, beta1=0.9, beta2=0.0
        ),
        eval=EvalConfig(every=0),
        device="cpu",
    )
    t = Trainer(config)
    with pytest.raises(DivergenceError) as info:
        t.run()
    err = info.value
    assert err.step == t.step  # detected at the step it happened (CPU checks every step)
    assert 1 < err.step < 300
    assert not math.isfinite(err.value)
    assert f"diverged at step {err.step}" in str(err) and "loss" in err.what


def test_run_evaluates_on_schedule_and_writes_grids(
    mnist_small: ImageDataset, tmp_path: Path
) -> None:
    seen = []
    t = Trainer(tiny_config(), data=mnist_small, out_dir=tmp_path)
    result = t.run(on_eval=seen.append)
    assert [r.step for r in seen] == [10, 20]
    assert [r.num_samples for r in seen] == [200, 300]
    assert [r.final for r in seen] == [False, True]
    assert result.final is seen[-1] or result.final == seen[-1]
    assert result.steps == 20 and not result.stopped_early
    assert all(math.isfinite(r.fid) and r.fid > 0 for r in seen)
    assert result.images_per_sec > 0
    grid = Image.open(seen[0].grid)
    assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 8 x 8 images of 28 px, 2 px padding
    assert (tmp_path / "samples" / "final.png").is_file()


@pytest.mark.parametrize(
    ("mode", "with_kid"),
    [("final", [False, True]), ("every", [True, True]), ("off", [False, False])],
)
def test_kid_is_computed_where_eval_kid_says(
    mnist_small: ImageDataset, mode: str, with_kid: list[bool]
) -> None:
    config = tiny_config()
    config = replace(config, eval=replace(config.eval, kid=mode, grid=False))
    seen = Trainer(config, data=mnist_small).run().history
    assert [math.isfinite(r.kid) for r in seen] == with_kid
    assert [math.isnan(r.kid) for r in seen] == [not k for k in with_kid]
    assert all(math.isfinite(r.fid) for r in seen)
    assert ("KID" in seen[0].describe(20)) == with_kid[0]


def test_eval_kid_must_be_a_known_mode() -> None:
    with pytest.raises(ConfigError, match=r"eval.kid = 'sometimes' is invalid; use final, every"):
        EvalConfig(kid="sometimes")


def test_full_final_reference_compares_with_the_whole_split(
    mnist_small: ImageDataset, tmp_path: Path
) -> None:
    """eval.final_reference = "full" (the FID-50k protocol's reference): the final evaluation
    against the statistics of all 1000 images; the intermediate ones against 200 as before."""
    config = tiny_config()
    config = replace(config, eval=replace(config.eval, final_reference="full", grid=False))
    trainer = Trainer(config, data=mnist_small, cache_dir=tmp_path)
    history = trainer.run().history
    evaluator = trainer.evaluator
    final = evaluator.evaluate(trainer.generator, 300, batch_size=100, kid=False, real_samples=1000)
    assert history[-1].final and history[-1].fid == final.fid
    assert {p.name.split("-")[3] for p in (tmp_path / "stats").glob("*.npz")} == {"200", "1000"}
    assert history[-1].fid != evaluator.evaluate(trainer.generator, 300, kid=False).fid
    with pytest.raises(ConfigError, match=r"eval.final_reference = 'all' is invalid; use sample"):
        EvalConfig(final_reference="all")


def test_a_shared_evaluator_scores_generators_of_any_latent_size(
    mnist_small: ImageDataset, tmp_path: Path
) -> None:
    """A worker builds one evaluator for the study; a study that searches latent_dim gives it
    generators of other latent sizes (this failed with a matrix-shape error in every trial
    after the first)."""
    from ganhpo.metrics import Evaluator

    shared = Evaluator(mnist_small, cache_dir=tmp_path, latent_dim=16)
    config = replace(tiny_config(), model=ModelConfig(width=8, latent_dim=32))
    trainer = Trainer(config, data=mnist_small, evaluator=shared)
    record = trainer.evaluate(100)
    assert math.isfinite(record.fid)


def test_should_stop_ends_the_run_early(mnist_small: ImageDataset) -> None:
    t = Trainer(tiny_config(steps=100), data=mnist_small)
    evals = []
    result = t.run(on_eval=evals.append, should_stop=lambda: len(evals) >= 1)
    assert result.stopped_early and result.steps == 10
    assert result.final is None and [r.step for r in evals] == [10]


def test_checkpoint_callback_cadence(mnist_small: ImageDataset) -> None:
    steps: list[int] = []
    t = Trainer(tiny_config(checkpoint_every=7), data=mnist_small)
    t.run(on_checkpoint=steps.append)
    assert steps == [7, 14]


def test_checkpoints_at_every_evaluation_by_default(mnist_small: ImageDataset) -> None:
    # train.checkpoint_every unset: a killed trial resumes where it was last scored.
    steps: list[int] = []
    t = Trainer(tiny_config(), data=mnist_small)  # eval.every = 10, 20 steps
    t.run(on_checkpoint=steps.append)
    assert steps == [10, 20]
    assert replace(tiny_config(), eval=EvalConfig(every=0)).checkpoint_interval == 2  # steps // 10
    assert tiny_config(checkpoint_every=0).checkpoint_interval == 0  # never


def test_batch_larger_than_dataset(mnist_dir: Path) -> None:
    data = load_dataset("mnist", data_dir=mnist_dir, limit=10)
    with pytest.raises(ConfigError, match="batch_size = 16 is larger than the dataset"):
        Trainer(tiny_config(), data=data)


def test_cuda_unavailable_is_a_clear_error(mnist_small: ImageDataset) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the message only exists without it
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Trainer(replace(tiny_config(), device="cuda"), data=mnist_small)
