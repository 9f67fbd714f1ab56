"""Full-size readiness (benchmarks/full_size_readiness.py): a hub-style bf16 snapshot of random Qwen2.5-VL weights,
loaded through the path a downloaded snapshot takes, SDIM + LoRA attached, one training step of the 3B recipe and
engine queries, in float32 on a CPU (``model.dtype=float32``) and, at toy widths, also in the recipe's bf16. The
default test runs the code at toy widths (151,936-token vocabulary kept); the ``@slow`` one at the real 3B sizes
(7 GiB of disk, ~18 GiB of RAM, ~10 minutes on one CPU core)."""

import json
import math
from pathlib import Path

import pytest
import torch
from repo_scripts import load_script
from safetensors import safe_open

REPO = Path(__file__).resolve().parent.parent


def _bench():
    return load_script("benchmarks/full_size_readiness.py")


def _check_run(run: dict, dtype: str) -> None:
    assert run["status"] == "done"
    assert run["weights_dtype"] == dtype and run["loaded_dtype"] == f"torch.{dtype}"  # model.dtype override applied
    assert run["mixed_precision"] == ("no" if dtype == "float32" else "bf16")
    assert 0 < run["params_trainable"] < run["params_total"]  # LoRA + depth modules only
    assert run["image_tokens"] == 64  # 224x224 → 16x16 patches → 8x8 merged tokens
    assert run["train_step_s"] > 0 and math.isfinite(run["train_loss"]) and run["train_loss"] > 0
    assert 0 < run["lora_tensors_changed"] <= run["lora_tensors"] and run["lora_max_abs_change"] > 0
    assert run["engine_queries"] == 16 and run["engine_readable"] == 16
    assert run["peak_rss_gib"] > 0


def _check(result: dict, params_at_least: int, dtype: str = "float32") -> None:
    snap = result["phases"]["snapshot"]
    assert snap["params"] >= params_at_least and snap["dtype"] == "torch.bfloat16"
    assert {"config.json", "preprocessor_config.json", "tokenizer.json"} <= set(snap["files"])
    _check_run(result["phases"]["run"], dtype)


def test_full_size_script_at_toy_widths(tmp_path):
    out, snap = tmp_path / "r.json", tmp_path / "snap"
    assert _bench().main(["--small", "--snapshot", str(snap), "--out", str(out)]) == 0  # CPU: float32 compute
    result = json.loads(out.read_text())
    _check(result, 19_000_000)  # the 151,936 x 128 tied embedding dominates
    config = json.loads((snap / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 151936 and config["tie_word_embeddings"]
    shards = list(snap.glob("*.safetensors"))
    with safe_open(str(shards[0]), "pt") as f:  # the hub layout: bf16 tensors under the checkpoint's key names
        keys = set(f.keys())
        assert {"model.embed_tokens.weight", "model.norm.weight", "visual.merger.ln_q.weight"} <= keys
        assert "lm_head.weight" not in keys and f.get_tensor("model.norm.weight").dtype == torch.bfloat16
        embed = f.get_tensor("model.embed_tokens.weight").float()
        assert torch.isfinite(embed).all() and 0.01 < embed.std() < 0.03  # the stock init's scale (0.02)
    # the recipe as written (bf16 weights) on the same snapshot
    assert _bench().main(["--small", "--snapshot", str(snap), "--out", str(tmp_path / "b.json"),
                          "--compute-dtype", "bfloat16"]) == 0
    _check_run(json.loads((tmp_path / "b.json").read_text())["phases"]["run"], "bfloat16")


@pytest.mark.slow
def test_full_size_3b_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    assert _bench().main(["--snapshot", str(tmp_path / "snap"), "--out", str(out)]) == 0  # as in benchmarks/README
    result = json.loads(out.read_text())
    _check(result, 3_500_000_000)
    config = json.loads((tmp_path / "snap" / "config.json").read_text())
    text = config["text_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"],
            text["num_key_value_heads"]) == (2048, 36, 16, 2)
    assert text["rope_parameters"]["mrope_section"] == [16, 24, 24]
    assert (config["vision_config"]["depth"], config["vision_config"]["hidden_size"]) == (32, 1280)
