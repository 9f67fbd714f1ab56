"""Session 32: the default's MAE change against `guided` per sparse pattern over the first 30 test scenes, and without
test scene 20000027 (the one the shipped completer drew once in training: checkpoints/README.md, session 32), from
the per-image rows an accuracy run leaves in its work folder.

    python benchmarks/accuracy.py --patterns all --limit 30 --checkpoint checkpoints/default --work-dir W --out O
    python benchmarks/results/session32_split/without_scene.py W > benchmarks/results/session32_split/without_scene.txt
"""

import glob
import json
import os
import sys

SEEN = "synthetic_20000027"


def rows(parts_dir: str) -> dict:
    with open(os.path.join(parts_dir, "rank0.jsonl")) as f:
        return {r["name"]: r["metrics"] for r in map(json.loads, f)}


def mean(table: dict, names: list, key: str) -> float:
    return sum(table[n][key] for n in names) / len(names)


def main(work: str) -> None:
    for pattern_dir in sorted(glob.glob(os.path.join(work, "synthetic_test_*"))):
        pattern = pattern_dir.rsplit("_", 1)[1]
        guided = rows(os.path.join(pattern_dir, "guided.json.parts"))
        print(f"== {pattern}")
        for name in ("default_complete", "default_complete_sharpen"):
            table = rows(os.path.join(pattern_dir, f"{name}.json.parts"))
            for label, names in (("all", list(table)), ("without 27", [n for n in table if n != SEEN])):
                mae, ref = mean(table, names, "mae"), mean(guided, names, "mae")
                print(f"  {name:26s} {label:10s} n={len(names)} MAE {mae:.4f} vs guided {ref:.4f} "
                      f"({100 * (mae / ref - 1):+.2f} %) DBE-acc {mean(table, names, 'dbe_acc'):.3f}")
            if SEEN in table:
                mae, ref = table[SEEN]["mae"], guided[SEEN]["mae"]
                print(f"  {name:26s} scene 27   MAE {mae:.4f} vs guided {ref:.4f} ({100 * (mae / ref - 1):+.2f} %)")


if __name__ == "__main__":
    main(sys.argv[1])
