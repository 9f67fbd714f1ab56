"""How well a tiny completer can tell pixel positions apart, by M-RoPE ``rope_theta``.

Usage (from the repository root; seconds)::

    python benchmarks/rope_positions.py            # writes results/rope_positions.{json,md}
    python benchmarks/rope_positions.py --out /tmp/rope --name rope_check   # elsewhere, under another stem

For each theta, a random-init tiny completer (the tiny recipe's sizes, ``model.tiny.rope_theta`` = theta) in the
one-token layout (``pixel_reference: grid_token``) answers six pixels spread over one 192x256 synthetic scene; the
figure is the mean pairwise distance between those queries' last hidden states divided by their mean norm. Only the
query token's M-RoPE position differs between them, so a figure near 0 means the model sees the pixels as one
position. Why it matters: with Qwen's split the tiny model's 16 rotary pairs are t 4 / h 6 / w 6 and h, w get the
lowest frequencies, ``theta ** (-2 i / 32)`` for i = 4 .. 15 — at theta 1e6 that is 2e-6 .. 0.03 rad per grid step.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import results_name, run_info, run_main, write_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
THETAS = (1e6, 1e4, 100.0, 10.0, 4.0)
ROWS, COLS = np.array([20, 20, 20, 100, 100, 180]), np.array([20, 30, 200, 20, 200, 128])


def spread(theta: float, image: np.ndarray, sparse: np.ndarray) -> float:
    """Mean pairwise hidden-state distance / mean norm of the six grid queries (see the module docstring)."""
    from depthkit.complete import prompts as P
    from depthkit.complete.engine import CompletionEngine
    from depthkit.complete.model import SDIMModel
    from depthkit.complete.readout import ResidualHead
    from depthkit.complete.recipe import TinyModelConfig
    from depthkit.complete.tiny import build_tiny_base

    base, processor = build_tiny_base(TinyModelConfig(rope_theta=theta), seed=0, max_pixels=50176)
    head = ResidualHead(base.config.text_config.hidden_size)
    seen: list[torch.Tensor] = []
    predict = head.predict_with_scale

    def capture(hidden, prior):
        seen.append(hidden.detach().clone())
        return predict(hidden, prior)

    head.predict_with_scale = capture
    engine = CompletionEngine(SDIMModel(base).eval(), processor, P.PromptConfig("guided", "grid_token", mask_text="none"),
                              readout="residual_head", residual_head=head)
    engine.answer(engine.encode(image, sparse), ROWS, COLS, np.ones(len(ROWS)))
    h = torch.cat(seen)[:len(ROWS)]
    n = len(ROWS)
    return float(torch.cdist(h, h).sum() / (n * (n - 1)) / h.norm(dim=1).mean())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help="folder of the results (default benchmarks/results)")
    p.add_argument("--name", type=results_name, default="rope_positions",
                   help="file stem: writes NAME.json and NAME.md in --out (default rope_positions)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from depthkit.data.sparse import sample_random_points
    from depthkit.data.synthetic import render_scene

    torch.set_num_threads(1)
    scene = render_scene(1, 192, 256, kind="indoor")
    sparse = np.asarray(sample_random_points(scene.depth, 500, 0), np.float32)
    rows = {f"{t:g}": spread(t, scene.image, sparse) for t in THETAS}
    lines = ["# Can a tiny completer tell pixels apart? (`python benchmarks/rope_positions.py`)", "",
             "Mean pairwise distance of six grid queries' hidden states / mean norm, random-init tiny model:", "",
             "| rope_theta | spread |", "|---:|---:|"] + [f"| {k} | {v:.2e} |" for k, v in rows.items()]
    write_results(args.out, args.name, {"benchmark": "rope_positions", **run_info(argv, __file__),
                                        "spread_by_theta": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(run_main(main))
