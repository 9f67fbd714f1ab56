"""Full-size readiness (benchmarks/full_size_readiness.py): a hub-style snapshot of random Qwen2.5-VL weights, loaded
through the path a downloaded snapshot takes, SDIM + LoRA attached, one training step of the 3B recipe and engine
queries. The default test runs the same code at toy widths (151,936-token vocabulary kept); the ``@slow`` one at
the real 3B sizes (~8 GB of disk, ~12 GB of RAM, tens of minutes on 2 CPU cores)."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("full_size_readiness", REPO / "benchmarks" / "full_size_readiness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result: dict, params_at_least: int) -> None:
    snap, run = result["phases"]["snapshot"], result["phases"]["run"]
    assert snap["params"] >= params_at_least and snap["dtype"] == "torch.bfloat16"
    assert {"config.json", "preprocessor_config.json", "tokenizer.json"} <= set(snap["files"])
    assert run["status"] == "done" and run["weights_dtype"] == "bfloat16"
    assert 0 < run["params_trainable"] < run["params_total"]  # LoRA + depth modules only
    assert run["image_tokens"] == 64  # 224x224 → 16x16 patches → 8x8 merged tokens
    assert run["train_step_s"] > 0 and run["train_loss"] > 0
    assert run["engine_queries"] == 16 and run["engine_readable"] == 16
    assert run["peak_rss_gib"] > 0


def test_full_size_script_at_toy_widths(tmp_path):
    out = tmp_path / "r.json"
    assert _bench().main(["--small", "--snapshot", str(tmp_path / "snap"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    _check(result, 19_000_000)  # the 151,936 x 128 tied embedding dominates
    config = json.loads((tmp_path / "snap" / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 151936 and config["tie_word_embeddings"]


@pytest.mark.slow
def test_full_size_3b_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    assert _bench().main(["--snapshot", str(tmp_path / "snap"), "--out", str(out), "--threads", "2"]) == 0
    result = json.loads(out.read_text())
    _check(result, 3_500_000_000)
    config = json.loads((tmp_path / "snap" / "config.json").read_text())
    text = config["text_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"],
            text["num_key_value_heads"]) == (2048, 36, 16, 2)
    assert text["rope_parameters"]["mrope_section"] == [16, 24, 24]
    assert (config["vision_config"]["depth"], config["vision_config"]["hidden_size"]) == (32, 1280)
