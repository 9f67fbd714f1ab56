"""The SDIM paper's VOID-150 ablation, rows (a)–(f), in miniature: the tiny completer on synthetic scenes.

Usage (from the repository root; resumable — rerun the same command after an interruption)::

    python benchmarks/complete_ablation.py                 # 6 rows x 2 seeds, 2 runs at a time
    python benchmarks/complete_ablation.py --report-only   # rewrite the table from the finished runs

Each (row, seed) is one ``depthkit train recipes/tiny/complete.yaml`` run with the overrides below, in its own
folder under ``runs/complete_ablation/`` (``OMP_NUM_THREADS=1`` each). A run folder that exists is continued with
``--resume``; a run whose log already holds its final validation row is skipped, after its ``recipe.yaml`` is held
to the recipe the row would run now (:func:`check_run_recipe`: a run made under other rows or budget is refused).
After every finished run ``benchmarks/results/complete_ablation.{json,md}`` are rewritten; a training run that
fails is named with its log at the end, and the script exits 1.

**Rows → recipe overrides** (the paper's table: visual tokenisation / text prompt / text supervision)::

    (a) Concat (Hard), no mask text, SD     sdim.fusion=hard_concat sdim.init=he  prompts.mask_text=none
    (b) He init. blocks, no mask text, SD   sdim.fusion=soft        sdim.init=he  prompts.mask_text=none
    (c) Zero init. Soft, no mask text, SD   sdim.fusion=soft        sdim.init=zero prompts.mask_text=none
    (d) (c) + Mask text, SD                 ... prompts.mask_text=mask
    (e) (c) + Mask + SD Value text, SD      ... prompts.mask_text=mask_and_value   (the paper's full method)
    (f) (e) with GT supervision             ... data.supervision=dense

The paper's row (c) has an empty "Text Prompt" cell: the zero-init soft branch with the prompt carrying no mask
sentence (only the question and the pixel), so rows (a)–(c) isolate the visual tokenisation and (c)→(d)→(e) add
the mask sentence and then the measured value in the mask-1 sentence. "SD" = label-free sparse-depth supervision
(``data.supervision=sparse``: a held-out sparse point is the label; ``p_keep`` of the queries are kept points asked
with mask 1); "GT" = dense ground truth labels.

Kept the same in every row (the levers that let a tiny model from random init learn anything in CPU minutes,
SPEC section 7): the ``guided`` prompt prior (stated as its own sentence even with ``mask_text=none``) and the
residual-head readout (a bounded correction of that prior, L1 in log space). Consequence: a model that learns
nothing scores the prior exactly, so the table's reference row is the prior itself (``val_prior_*``: the
``guided`` classical fill at the same held-out pixels), and only mask-0 prompts are asked at validation — rows
(d) and (e) then differ only in what the mask-1 training queries said.

Budget per run (same for every row): ``--steps`` optimizer steps (default 200) of 2 images x 16 queries at 112x112
(16 image tokens), 100 random sparse points, lr 1e-3 cosine; validation at the end on 16 held-out ``val`` scenes x
32 held-out sparse points (512 queries; the same scenes and points for every run). MAE / RMSE are pooled over the
512 queries, metres. Measured cost: 12–19 minutes per run with two runs side by side on the shared 2-core machine
(load average ~10), so the 12 runs take ~2 hours there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import run_info, run_main, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE = "recipes/tiny/complete.yaml"
RESULTS = REPO / "benchmarks" / "results"

# (key, paper's description, paper MAE, paper RMSE on VOID-150, overrides)
ROWS = [
    ("a", "Concat (Hard) / no mask text / SD", 0.206, 0.635,
     ["sdim.fusion=hard_concat", "sdim.init=he", "prompts.mask_text=none"]),
    ("b", "He init. blocks / no mask text / SD", 0.202, 0.630,
     ["sdim.fusion=soft", "sdim.init=he", "prompts.mask_text=none"]),
    ("c", "Zero init. Soft / no mask text / SD", 0.197, 0.623,
     ["sdim.fusion=soft", "sdim.init=zero", "prompts.mask_text=none"]),
    ("d", "Zero init. Soft / Mask / SD", 0.188, 0.608,
     ["sdim.fusion=soft", "sdim.init=zero", "prompts.mask_text=mask"]),
    ("e", "Zero init. Soft / Mask + SD Value / SD", 0.185, 0.604,
     ["sdim.fusion=soft", "sdim.init=zero", "prompts.mask_text=mask_and_value"]),
    ("f", "Zero init. Soft / Mask + SD Value / GT", 0.176, 0.592,
     ["sdim.fusion=soft", "sdim.init=zero", "prompts.mask_text=mask_and_value", "data.supervision=dense"]),
]


def budget(steps: int) -> list[str]:
    """Overrides shared by every row: the training and validation budget."""
    return [
        "model.max_pixels=12544", "data.synthetic.height=112", "data.synthetic.width=112",
        "data.sparse_points=100", "data.queries_per_image=16", "train.batch_size=2",
        f"train.max_steps={steps}", "train.warmup_steps=30", "train.eval_every=0",
        f"train.save_every={max(1, steps // 3)}", "train.log_every=25", "train.keep_last=1",
        "eval.height=112", "eval.width=112", "eval.sparse_points=100", "eval.num_scenes=16",
        "eval.queries_per_scene=32",
    ]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                    help="train.seed of each run, distinct (default 0 1). The ordering verdict needs >= 2 seeds: with "
                         "one seed the rows have no seed spread and the verdict stays 'not decided' (a note says so)")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per run (same for every row)")
    ap.add_argument("--rows", default="abcdef", help=f"which rows to run: letters of {''.join(r[0] for r in ROWS)}, "
                                                     "e.g. 'ce' (default all)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "complete_ablation"))
    ap.add_argument("--out", default=str(RESULTS / "complete_ablation"),
                    help="results path without extension: writes OUT.json and OUT.md (default "
                         "benchmarks/results/complete_ablation)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the results from finished runs")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    known = "".join(r[0] for r in ROWS)
    unknown = sorted(set(args.rows.replace(",", "")) - set(known))
    if unknown or not args.rows.replace(",", ""):
        ap.error(f"--rows takes letters of {known} (the paper's rows), e.g. --rows ce; received {args.rows!r}"
                 + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds must be distinct (each seed is one run folder per row); received {args.seeds}")
    args.runs_dir = str(Path(args.runs_dir).resolve())  # training runs with cwd=REPO: one folder for both sides
    args.argv = argv  # the command as typed, for the report (run_info)
    return args


def final_row(run_dir: Path, steps: int) -> dict | None:
    """The validation row the run logged at its last step, or None while it is unfinished."""
    log = run_dir / "log.jsonl"
    if not log.exists():
        return None
    found = None
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interruption
            continue
        if row.get("step") == steps and "val_mae" in row:
            found = row
    return found


def run_overrides(overrides: list[str], seed: int, steps: int, run_dir: Path) -> list[str]:
    """Every override of one (row, seed) run of ``depthkit train`` :data:`RECIPE`: the budget, the row's, the seed
    and the run folder."""
    return [*budget(steps), *overrides, f"train.seed={seed}", f"output.output_dir={run_dir}"]


def check_run_recipe(run_dir: Path, overrides: list[str], seed: int, steps: int) -> None:
    """ValueError when the run in ``run_dir`` was trained with another recipe than the one its row runs now (its
    ``recipe.yaml`` against :data:`RECIPE` with :func:`run_overrides`; the run folder's path may differ): a finished
    run made before the rows, the budget or the recipe changed would be reported as this row's. A run without
    ``recipe.yaml`` has nothing to compare and passes."""
    from omegaconf import OmegaConf

    from depthkit.config import load_recipe, recipe_to_yaml
    from depthkit.run_recipe import RECIPE_FILE, recipe_differences

    path = run_dir / RECIPE_FILE
    if not path.is_file():
        return
    old = OmegaConf.to_container(OmegaConf.load(path))
    now = load_recipe(REPO / RECIPE, run_overrides(overrides, seed, steps, run_dir))
    new = OmegaConf.to_container(OmegaConf.create(recipe_to_yaml(now)))
    diffs = recipe_differences(old if isinstance(old, dict) else {}, new, ignore=("output.output_dir",))
    if diffs:
        shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise ValueError(f"the finished run {run_dir} was trained with another recipe than its row runs now ({path}: "
                         f"{shown}{more}), so its numbers are not this row's; move it away (or give another "
                         "--runs-dir) to train the row again.")


def finished_row(run_dir: Path, overrides: list[str], seed: int, steps: int) -> dict | None:
    """:func:`final_row` of a run, after :func:`check_run_recipe` when it is finished."""
    row = final_row(run_dir, steps)
    if row is not None:
        check_run_recipe(run_dir, overrides, seed, steps)
    return row


def run_one(key: str, overrides: list[str], seed: int, args) -> dict | None:
    """Train row ``key`` with ``seed`` unless finished (``--resume`` when its folder exists); its final validation
    row, or None when training failed (its log: ``<runs-dir>/<key>_seed<seed>.out``)."""
    run_dir = Path(args.runs_dir) / f"{key}_seed{seed}"
    done = finished_row(run_dir, overrides, seed, args.steps)
    if done is not None:
        return done
    cmd = [sys.executable, "-m", "depthkit.cli", "train", RECIPE, *run_overrides(overrides, seed, args.steps, run_dir)]
    if run_dir.exists():
        cmd.append("--resume")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(run_dir.parent / f"{key}_seed{seed}.out", "a") as out:
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    print(f"[{time.strftime('%H:%M:%S')}] row {key} seed {seed}: rc={rc} in {time.time() - t0:.0f} s", flush=True)
    return final_row(run_dir, args.steps)


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n}


def summarise(args) -> dict:
    """Collect every finished run into the results dict (rows, the prior reference, the ordering verdict)."""
    rows, prior = [], None
    for key, desc, p_mae, p_rmse, overrides in ROWS:
        runs = {}
        for seed in args.seeds:
            row = finished_row(Path(args.runs_dir) / f"{key}_seed{seed}", overrides, seed, args.steps)
            if row is not None:
                runs[seed] = {k: row[k] for k in ("val_mae", "val_rmse", "val_prior_mae", "val_prior_rmse",
                                                  "val_unparseable", "val_queries") if k in row}
                prior = prior or {"mae": row["val_prior_mae"], "rmse": row["val_prior_rmse"]}
        entry = {"row": key, "paper": desc, "paper_mae": p_mae, "paper_rmse": p_rmse, "overrides": overrides,
                 "runs": {str(s): r for s, r in runs.items()}}
        if runs:
            entry["mae"] = _stats([r["val_mae"] for r in runs.values()])
            entry["rmse"] = _stats([r["val_rmse"] for r in runs.values()])
            entry["mae_minus_prior"] = _stats([r["val_mae"] - r["val_prior_mae"] for r in runs.values()])
        rows.append(entry)
    return {"benchmark": "complete_ablation", **run_info(getattr(args, "argv", None), __file__),
            "recipe": RECIPE, "budget_overrides": budget(args.steps), "seeds": args.seeds, "steps": args.steps,
            "threads_per_run": 1, "prior_reference": prior, "rows": rows, "ordering": ordering(rows)}


def ordering(rows: list[dict]) -> dict:
    """Does the paper's order reproduce? For each consecutive pair the paper improves on, whether the mean MAE
    improved here and whether the gap exceeds the larger seed spread (std) of the two rows."""
    done = [r for r in rows if "mae" in r]
    pairs = []
    for prev, cur in zip(done, done[1:]):
        gap = prev["mae"]["mean"] - cur["mae"]["mean"]
        noise = max(prev["mae"]["std"], cur["mae"]["std"])
        if math.isnan(noise):  # one seed: no spread to judge against
            verdict = "one seed only: no verdict"
        else:
            verdict = "improves" if gap > noise else ("worse" if gap < -noise else "within seed noise")
        pairs.append({"pair": f"{prev['row']}->{cur['row']}", "paper_gain_mae": round(prev["paper_mae"] -
                      cur["paper_mae"], 4), "gain_mae": gap, "seed_std": noise, "verdict": verdict})
    complete = len(done) == len(rows) and all(r["mae"]["n"] >= 2 for r in done)
    reproduces = all(p["verdict"] == "improves" for p in pairs) if complete else None  # None: not decided yet
    return {"pairs": pairs, "reproduces": reproduces}


def write(results: dict, out: str) -> None:
    """``out``.json (strict JSON: a one-seed std is null) and ``out``.md, each atomically."""
    write_results(Path(out).parent, Path(out).name, results, markdown(results), echo=False)


def markdown(res: dict) -> str:
    def ms(s):
        return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"

    lines = ["# SDIM ablation in miniature (tiny completer, synthetic scenes)", "",
             f"Command: `{res['command']}` ({res['steps']} steps per run, seeds {res['seeds']}; "
             f"{res['machine']['cpu_count']} CPUs, 1 thread per run; written {res['date']}).", "",
             "| row | paper (tokenisation / prompt / supervision) | paper MAE / RMSE | MAE (m) | RMSE (m) | "
             "MAE − prior (m) |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "mae" in r:
            lines.append(f"| ({r['row']}) | {r['paper']} | {r['paper_mae']} / {r['paper_rmse']} | {ms(r['mae'])} | "
                         f"{ms(r['rmse'])} | {r['mae_minus_prior']['mean']:+.4f} |")
        else:
            lines.append(f"| ({r['row']}) | {r['paper']} | {r['paper_mae']} / {r['paper_rmse']} | not run | | |")
    p = res["prior_reference"]
    if p:
        lines.append(f"| prior | `guided` fill at the same pixels (what the residual head starts from) | — | "
                     f"{p['mae']:.4f} | {p['rmse']:.4f} | 0 |")
    lines += ["", "Consecutive pairs (mean MAE gain here vs the paper's; 'within seed noise' = |gain| <= the larger "
              "seed std):", ""]
    for q in res["ordering"]["pairs"]:
        lines.append(f"- {q['pair']}: paper {q['paper_gain_mae']:+.3f} m, here {q['gain_mae']:+.4f} m "
                     f"(seed std {q['seed_std']:.4f}) → {q['verdict']}")
    missing = [r["row"] for r in res["rows"] if len(r["runs"]) < len(res["seeds"])]
    if missing:
        lines += ["", f"Unfinished: rows {', '.join(missing)} lack some seeds; rerun the command to finish them "
                  "(runs resume), or `--report-only` to rewrite this file."]
    verdict = {True: "yes", False: "no", None: "not decided (rows or seeds missing)"}[res["ordering"]["reproduces"]]
    lines += ["", f"Paper's ordering reproduces (every consecutive pair improves by more than the seed spread): "
              f"**{verdict}**.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.seeds) < 2 and not args.report_only:
        print("note: one seed gives no seed spread: the table has no ± and the ordering verdict stays 'not decided' "
              "(give --seeds 0 1 or more for a verdict)", file=sys.stderr)
    lock = threading.Lock()
    failed = []

    def job(spec):
        (key, _, _, _, overrides), seed = spec
        if run_one(key, overrides, seed, args) is None:
            failed.append((key, seed))
        with lock:
            write(summarise(args), args.out)

    if not args.report_only:
        summarise(args)  # a finished run trained with another recipe: refused before any training starts
        specs = [(row, seed) for seed in args.seeds for row in ROWS if row[0] in args.rows]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(job, specs))
    res = summarise(args)
    write(res, args.out)
    print(markdown(res))
    return report_failures(sorted(failed), Path(args.runs_dir), args.steps)


def report_failures(failed: list[tuple[str, int]], runs_dir: Path, steps: int) -> int:
    """Exit status 1 naming each (row, seed) whose training ended without its step-``steps`` validation row, and
    its log; 0 when there is none."""
    if not failed:
        return 0
    runs = "; ".join(f"row {key} seed {seed} (log {runs_dir / f'{key}_seed{seed}.out'})" for key, seed in failed)
    print(f"{Path(__file__).name}: error: {len(failed)} training run(s) ended without their step-{steps} validation "
          f"row: {runs}. Read the logs, fix the cause and rerun the command (finished runs are kept, unfinished ones "
          "resume).", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(run_main(main))
