"""recipes/default/gpu_lotus.sh, the one-command GPU run of recipes/default/lotus_gpu.yaml, run here on the CPU with
tiny overrides: a finished run is exported and packed, a run stopped by its time limit exports its newest checkpoint,
one stopped where its checkpoint cannot be exported still brings its resumable state back (exit 3), a failing run
exports nothing, and an override that would move the run folder is refused."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "default" / "gpu_lotus.sh"
TINY = ["loss.vae_steps=1", "train.batch_size=1", "train.num_workers=0", "train.save_every=1", "train.eval_every=0",
        "val.n_images=1"]


def _script(tmp_path, *overrides, limit_s=600):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "RUN": str(tmp_path / "run" / "lg"),
           "LIMIT_S": str(limit_s), "HF_HUB_OFFLINE": "1", "WHEELS": str(tmp_path / "no_wheels"),
           "SITE": str(tmp_path / "site")}  # this environment's packages, whatever .whl/ the checkout holds
    return subprocess.run(["bash", str(SCRIPT), *TINY, *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _load(path):
    return OmegaConf.to_container(OmegaConf.load(path))


def _clear(folder):
    """Empty an exported folder as if the export had never been made."""
    for f in folder.rglob("*"):
        if f.is_file():
            f.unlink()


def _members(path):
    with tarfile.open(path) as tar:
        return set(tar.getnames())


def test_gpu_recipe_keeps_the_shipped_lotus_architecture():
    # the CPU's speed budget fixes the model: the GPU recipe may change how long and on how much it learns, not what
    gpu = _load(ROOT / "recipes" / "default" / "lotus_gpu.yaml")
    native = _load(ROOT / "recipes" / "default" / "lotus_native.yaml")
    assert gpu["model"] == native["model"] and gpu["data"] == native["data"] and gpu["val"] == native["val"]
    assert {k: v for k, v in gpu["loss"].items() if k != "vae_steps"} == \
        {k: v for k, v in native["loss"].items() if k != "vae_steps"}
    samples = gpu["train"]["max_steps"] * gpu["train"]["batch_size"]
    assert samples >= 10 * native["train"]["max_steps"] * native["train"]["batch_size"]


def test_gpu_lotus_script_exports_finished_and_time_limited_runs(tmp_path):
    done = _script(tmp_path, "train.max_steps=2")
    assert done.returncode == 0, done.stdout + done.stderr
    out, run = tmp_path / "out", tmp_path / "run" / "lg"
    assert (run / "final" / "unet" / "config.json").is_file()
    assert {"lg/final/unet/diffusion_pytorch_model.safetensors", "lg/log.jsonl"} <= _members(out / "lotus_final.tgz")
    assert "lg/checkpoints/step_0000002/state.pt" in _members(out / "lotus_state.tgz")
    assert "torch" in (out / "gpu.txt").read_text()

    # stopped by its limit before it could do anything: the newest checkpoint (step 2) becomes the final weights
    _clear(run / "final")
    stopped = _script(tmp_path, "train.max_steps=50", limit_s=1)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "exporting the checkpoint of step 2" in stopped.stdout
    assert (run / "final" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert _load(run / "final" / "recipe.yaml")["train"]["max_steps"] == 2
    assert "exporting the checkpoint of step 2" in (out / "train.log").read_text()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 2

    # stopped where its checkpoint cannot be exported (here: an export whose VAE-only phase would leave no UNet step):
    # the resumable state still comes back, and the status says only it did
    _clear(run / "final")
    (out / "lotus_state.tgz").unlink()
    (out / "lotus_final.tgz").unlink()
    vae_only = _script(tmp_path, "train.max_steps=50", "loss.vae_steps=10", limit_s=1)
    assert vae_only.returncode == 3, vae_only.stdout + vae_only.stderr
    assert "only lotus_state.tgz came back" in vae_only.stderr
    assert "lg/checkpoints/step_0000002/state.pt" in _members(out / "lotus_state.tgz")
    assert not (out / "lotus_final.tgz").exists()

    # a run that fails before any checkpoint exports nothing and says so; the run folder is RUN, not an override
    failed = _script(tmp_path / "bad", "train.schedule=sideways")
    assert failed.returncode == 1
    assert "depthkit train failed" in failed.stderr
    assert not (tmp_path / "bad" / "out" / "lotus_final.tgz").exists()
    refused = _script(tmp_path / "bad", f"output.output_dir={tmp_path / 'elsewhere'}", limit_s=5)
    assert refused.returncode == 2 and "RUN=" in refused.stderr
