"""The Lotus trainer's two phases (``loss.vae_steps``): VAE alone, then a unit-std scaling factor, then the UNet on the
frozen VAE; and an exact resume across the phase boundary. Tiny sizes (16 x 24 crops, batch 2): ~1 s per step."""

import json
import shutil

import pytest
import torch

from depthkit.config import RecipeError, load_recipe
from depthkit.run_state import CHECKPOINTS
from depthkit.sharpen import train_lotus

UNET = {"block_out_channels": [16, 32], "norm_num_groups": 8}
VAE = {"block_out_channels": [8, 16], "norm_num_groups": 4,
       "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}  # 2x
VAE_STEPS, STEPS = 2, 4
DEFAULT_FACTOR = 0.18215  # diffusers' AutoencoderKL default


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def recipe(out, **loss):
    return load_recipe({
        "kind": "lotus",
        "model": {"init": "tiny", "tiny_unet": UNET, "tiny_vae": VAE},
        "loss": {"latent": 1.0, "pixel": 1.0, "vae_depth": 1.0, "train_vae": True, "vae_steps": VAE_STEPS, **loss},
        "data": {"sources": [{"name": "synthetic", "split": "train",
                              "options": {"length": 6, "height": 20, "width": 28, "kind": "indoor"}}],
                 "resolution": [16, 24], "random_flip": True},
        "train": {"max_steps": STEPS, "batch_size": 2, "lr": 3e-3, "warmup_steps": 1, "schedule": "cosine",
                  "log_every": 1, "eval_every": 0, "save_every": 1, "keep_last": 10},
        "output": {"output_dir": str(out)}})


def _state(run, step):
    return torch.load(run / CHECKPOINTS / f"step_{step:07d}" / "state.pt", weights_only=True)


def _meta(run, step):
    return json.loads((run / CHECKPOINTS / f"step_{step:07d}" / "meta.json").read_text())


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted two-phase run: ``(run folder, final folder)``."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("phases") / "a"
    return out, train_lotus.train(recipe(out))


def test_phase_one_trains_the_vae_alone_then_calibrates_to_unit_std(straight):
    from depthkit.sharpen.normalize import normalize_depth, replicate3
    from depthkit.sharpen.train_common import build_training_data
    from depthkit.sharpen.train_lotus import CALIBRATION_BATCHES, LotusBatches, build_lotus
    from depthkit.training import StepSampler

    run, final = straight
    r = recipe(run)
    init = build_lotus(r.model, seed=r.train.seed)
    # phase 1 moved the VAE and not the UNet
    at_boundary = _state(run, VAE_STEPS)
    assert _equal(at_boundary["unet"], init.unet.state_dict())
    assert not _equal(at_boundary["vae"], init.vae.state_dict())
    assert at_boundary["vae_scaling_factor"] == DEFAULT_FACTOR  # calibrated at the start of step VAE_STEPS
    # the calibrated factor: in the checkpoints after the boundary and in the exported folder
    factor = _meta(run, STEPS)["vae_scaling_factor"]
    assert factor == _state(run, VAE_STEPS + 1)["vae_scaling_factor"] and factor != DEFAULT_FACTOR
    assert json.loads((final / "vae" / "config.json").read_text())["scaling_factor"] == factor
    # independently: posterior means x factor of the calibration batches' GT have unit std over fully valid cells
    vae = init.vae
    vae.load_state_dict(at_boundary["vae"])
    data = build_training_data(r.data.sources, seed=r.train.seed)
    batches = LotusBatches(data, StepSampler(len(data), 2, seed=r.train.seed, rank=0, world=1), (16, 24), True,
                           r.train.seed, 0)
    values, all_cells = [], []
    with torch.no_grad():
        for k in range(CALIBRATION_BATCHES):
            b = batches[k]
            depth = torch.from_numpy(b["depth"])[:, None]
            valid = torch.from_numpy(b["valid"])[:, None]
            gt, _ = normalize_depth(depth, "depth", "quantile", valid_mask=valid, quantiles=(0.02, 0.98))
            z = vae.encode(replicate3(gt)).latent_dist.mean * factor
            cells = valid.view(valid.shape[0], 1, 8, 2, 12, 2).all(dim=5).all(dim=3).expand_as(z)
            values.append(z[cells])
            all_cells.append(z.flatten())
    std = float(torch.cat(values).std())
    assert std == pytest.approx(1.0, abs=1e-4)
    assert float(torch.cat(all_cells).std()) == pytest.approx(1.0, abs=0.1)  # valid cells are typical
    # and the default factor was far from unit std (why the calibration exists)
    assert abs(std * DEFAULT_FACTOR / factor - 1.0) > 0.3


def test_phase_two_leaves_the_vae_unchanged(straight):
    run, _ = straight
    boundary = _state(run, VAE_STEPS)
    for step in range(VAE_STEPS + 1, STEPS + 1):
        later = _state(run, step)
        assert _equal(boundary["vae"], later["vae"]), step
        assert not _equal(boundary["unet"], later["unet"]), step
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    phases = [row.get("phase") for row in rows if "loss" in row]
    assert phases == ["vae"] * VAE_STEPS + ["unet"] * (STEPS - VAE_STEPS)
    assert all(row["vae_depth"] == 0.0 and row["latent"] > 0 for row in rows if row.get("phase") == "unet")


@pytest.mark.parametrize("crash_after", [VAE_STEPS, VAE_STEPS + 1])
def test_resume_across_the_phase_boundary_is_exact(straight, tmp_path, crash_after):
    run, _ = straight
    crashed = tmp_path / "b"
    shutil.copytree(run, crashed)
    for ck in (crashed / CHECKPOINTS).glob("step_*"):
        if int(ck.name.split("_")[1]) > crash_after:
            shutil.rmtree(ck)
    shutil.rmtree(crashed / "final")
    final = train_lotus.train(recipe(crashed), resume=True)
    a, b = _state(run, STEPS), _state(crashed, STEPS)
    assert a["vae_scaling_factor"] == b["vae_scaling_factor"]
    for key in ("unet", "vae"):
        assert _equal(a[key], b[key]), key
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert json.loads((final / "vae" / "config.json").read_text())["scaling_factor"] == a["vae_scaling_factor"]


def test_vae_steps_errors(tmp_path):
    with pytest.raises(RecipeError, match="train_vae=true"):
        load_recipe({"kind": "lotus", "loss": {"vae_steps": 5}})
    with pytest.raises(RecipeError, match="vae_steps must be >= 0"):
        load_recipe({"kind": "lotus", "loss": {"vae_steps": -1, "train_vae": True}})
    with pytest.raises(RecipeError, match="UNet phase"):
        load_recipe({"kind": "lotus", "loss": {"vae_steps": 5, "train_vae": True, "vae_depth": 1.0, "latent": 0.0}})
    with pytest.raises(ValueError, match="leaves no UNet steps"):
        train_lotus.train(recipe(tmp_path / "r", vae_steps=STEPS))
    with pytest.raises(ValueError, match="phase="):
        train_lotus.lotus_losses(None, None, None, None, None, phase="both")
