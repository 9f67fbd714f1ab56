"""Scale-out configs that have run: recipes/accelerate/fsdp.yaml launched on 2 CPU processes (gloo), with a save and
an exact resume (``@slow``: ~3 minutes on 2 cores; ``pytest -m slow tests/test_scale_out.py``).

What this shows on a CPU: accelerate 1.15 turns the FSDP config (``distributed_type: FSDP``) plus ``use_cpu: true``
into a MULTI_CPU (DDP) run — torch's FSDP1 refuses CPU devices — so the run is DDP, the trainer warns about it,
and the checkpoint records ``distributed_type: MULTI_CPU``. Save, resume and the final export are exact under it.
A real FSDP run needs CUDA devices (see benchmarks/README.md, "Scale-out").
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_complete_train import REPO, SMALL, TINY_RECIPE  # the same test-size overrides as the trainer tests

ACCELERATE = Path(sys.executable).parent / "accelerate"


def cpu_fsdp_config(path: Path) -> Path:
    """recipes/accelerate/fsdp.yaml with the CPU overrides: 2 processes, use_cpu, no mixed precision, and no
    ``sync_module_states`` (accelerate needs an accelerator device for it; every rank builds the same seeded model)."""
    text = (REPO / "recipes" / "accelerate" / "fsdp.yaml").read_text()
    for old, new in (("num_processes: 8", "num_processes: 2"), ("mixed_precision: bf16", 'mixed_precision: "no"'),
                     ("use_cpu: false", "use_cpu: true"),
                     ("fsdp_sync_module_states: true", "fsdp_sync_module_states: false")):
        assert old in text, old  # the shipped config changed: update the overrides
        text = text.replace(old, new)
    path.write_text(text)
    return path


def _launch(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--config_file", str(config), "-m", "depthkit.cli", "train", str(TINY_RECIPE),
           *SMALL, "train.max_steps=4", "train.save_every=2", "train.eval_every=0", f"output.output_dir={out}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_fsdp_config_on_two_cpu_processes_saves_and_resumes_exactly(tmp_path):
    config = cpu_fsdp_config(tmp_path / "fsdp_cpu.yaml")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = _launch(config, a)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "asks for FSDP but this run is MULTI_CPU" in proc.stdout + proc.stderr
    meta = json.loads((a / "checkpoints" / "step_0000002" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["distributed_type"] == "MULTI_CPU"
    # "Killed" after the step-2 save: a copy of the run folder as it was then; --resume continues to step 4.
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "step_0000002", b / "checkpoints" / "step_0000002")
    proc = _launch(config, b, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 2" in proc.stdout + proc.stderr
    for name in ("model.safetensors", "depth_modules.safetensors", "residual_head.safetensors"):
        wa, wb = load_file(a / "final" / "complete" / name), load_file(b / "final" / "complete" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    la = [r for r in _rows(a) if "loss" in r]
    lb = [r for r in _rows(b) if "loss" in r]
    assert [r["step"] for r in lb] == [3, 4]
    assert [(r["loss"], r["lr"]) for r in la[2:]] == [(r["loss"], r["lr"]) for r in lb]
    sa = torch.load(a / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)
    assert sa["model"].keys() == sb["model"].keys()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])
    # The exported weights are the trained ones (the state's model), not a stale or sharded copy.
    exported = load_file(a / "final" / "complete" / "residual_head.safetensors")
    head = {k[len("head."):]: v for k, v in sa["model"].items() if k.startswith("head.")}
    assert head.keys() == exported.keys() and all(torch.equal(head[k], exported[k]) for k in head)
