"""Development probe (session 36): do val scenes of other kinds rank the dense refiners as the real Motorcycle frame
does? The refiners (each after its plants fine-tune): the shipped default's, session 35's candidate's and session 36's
candidate's; their completions' random-500 MAE change against guided on Motorcycle: -2.0 / +0.7 / -0.4 %.
Prints each refiner's MAE change against guided (%) on N val scenes at 192x256 per setting (as the refine recipes'
validation scores it). Run from the repository root: python benchmarks/results/session36_pool/val_probe.py [N]"""
import json
import sys
import time

from depthkit.complete.train_refiner import evaluate_refiner, load_refiner_folder, prepare_scene
from depthkit.data.datasets.synthetic import SyntheticDataset

REF = {"shipped": "checkpoints/default/complete", "s35": "benchmarks/results/session35_seeds/candidate/complete",
       "s36": "benchmarks/results/session36_pool/candidate/complete"}
nets = {k: load_refiner_folder(v).eval() for k, v in REF.items()}
settings = [
    ("val random500 (the recipe's val)", dict(sparse_pattern="random", sparse_kwargs={"n": 500})),
    ("val random500, clutter 3", dict(sparse_pattern="random", sparse_kwargs={"n": 500}, clutter=3)),
    ("val random100, clutter 3", dict(sparse_pattern="random", sparse_kwargs={"n": 100}, clutter=3)),
    ("val noisy, clutter 3", dict(sparse_pattern="noisy", sparse_kwargs={"n": 500}, clutter=3)),
]
n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
for name, kw in settings:
    t = time.time()
    ds = SyntheticDataset(split="val", length=n, height=192, width=256, kind="random", **kw)
    scenes = [prepare_scene(s["image"], s["sparse"], s["depth"], "guided") for s in (ds[i] for i in range(len(ds)))]
    row = {k: round(100 * evaluate_refiner(net, scenes)["val_change"], 2) for k, net in nets.items()}
    print(name, json.dumps(row), f"{time.time() - t:.0f} s", flush=True)
