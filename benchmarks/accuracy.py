"""Accuracy benchmark: the classical baselines and any checkpoint on the synthetic test split and on dataset roots.

Usage (from the repository root)::

    python benchmarks/accuracy.py                                   # nearest, ip_basic, guided on synthetic test
    python benchmarks/accuracy.py --limit 20                        # first 20 images of each dataset
    python benchmarks/accuracy.py --checkpoint checkpoints/default  # + a checkpoint (complete; + complete,sharpen)
    python benchmarks/accuracy.py --checkpoint ckpt --stages complete --stages complete,sharpen
    python benchmarks/accuracy.py --dataset nyuv2 --root data/nyuv2 --dataset kitti_dc --root data/kitti
    python benchmarks/accuracy.py --out /tmp/results --work-dir /tmp/acc_work   # a rerun resumes from work-dir
    python benchmarks/accuracy.py --patterns all --limit 50          # synthetic test once per sparse pattern
    python benchmarks/accuracy.py --merge a/accuracy.json b/accuracy.json   # one report from runs split by dataset
    python benchmarks/accuracy.py --patterns all --clutter 3 --out results_plants  # scenes with 3 plants in view
    python benchmarks/accuracy.py --patterns stereo --checkpoint checkpoints/default \
        --option complete.occlusion_fill=left                       # a stage option over the manifest's

Every method is scored by :func:`depthkit.evaluate.evaluate` (the code behind ``depthkit eval``) under the dataset's
protocol (:mod:`depthkit.data.protocols`), so the numbers are exactly those ``depthkit eval`` prints. Writes
``<out>/<name>.json`` (``--name``, default ``accuracy``: every method's mean metrics with the date, command, machine,
depthkit version and number of images) and ``<out>/<name>.md`` (one table per dataset: rows = methods; columns =
MAE, RMSE, AbsRel, delta1, DBE-acc, DBE-comp, preservation error and mean pipeline seconds per image).

The synthetic test split (100 scenes at 240x320, 500 random GT points, ``depthkit eval --dataset synthetic``) mixes
indoor rooms (depth ~0.5-10 m) and outdoor streets/fields (~1-80 m); the error scales differ by an order of
magnitude, so its table is also broken down by scene kind (means over the images of each kind). The full default run
(3 baselines x 100 scenes) takes about a minute on two CPU cores.

``--patterns`` evaluates the synthetic test split once per sparse input pattern (:data:`SYNTHETIC_PATTERNS`: random
100 / 500 / 2000 points, 64-beam LiDAR, ToF-style holes, noisy points; by name only, the robustness patterns: noisy
and speckled ToF holes, a stereo rig's map, a 32-beam LiDAR and a real matcher's map of rendered pairs) instead of
the protocol's 500 random points, and adds a summary table: MAE per pattern and method, with each method's change
against ``guided``.
``--clutter N`` puts N plants (thin, oblique, same-coloured leaves; ``render_scene(..., clutter=N)``) into every
synthetic test scene: a robustness check on a shape the standard split lacks (its reader line in the report says so).

Per-method evaluation files (per-image metrics, resumable shards) go to ``--work-dir``; without it they go to a
temporary folder that is deleted at the end. A rerun with the same ``--work-dir`` skips images already scored; one
whose rows were made otherwise (another checkpoint, even in a folder of the same name, its files changed, another
root, option, dtype, device or depthkit version: :func:`entry_fingerprint`) is refused with what differs, so use a
fresh folder then. A checkpoint's rows are named after its folder (``final: complete``); checkpoints in folders of one
name are told apart by their parent folders (``a/final: complete``, ``b/final: complete``: :func:`checkpoint_names`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results
from _results import RUN_KEYS, command_line, results_name, run_info, run_main, write_results  # noqa: E402

DEFAULT_METHODS = ("nearest", "ip_basic", "guided")
SYNTHETIC_PATTERNS = {
    "random100": ("random", {"n": 100}),
    "random500": ("random", {"n": 500}),
    "random2000": ("random", {"n": 2000}),
    "lidar64": ("lidar", {"n_beams": 64}),
    "holes": ("holes", {}),
    "noisy": ("noisy", {"n": 500}),
    "holes_noisy": ("holes", {"sigma": 0.01, "outlier_ratio": 0.005}),
    "holes_speckle": ("holes", {"dropout": 0.3}),
    "stereo": ("stereo", {}),
    "lidar32": ("lidar", {"n_beams": 32}),
    "stereo_sgbm": ("stereo_sgbm", {}),
}
"""``--patterns`` names -> (sparse pattern of :func:`depthkit.data.sparse.make_sparse`, its options). The first six
are the embedded default's patterns (issue 13), which ``--patterns all`` runs; the last five are for robustness
checks, run only by name: harder ToF frames (noisy measurements; 30 % of the measurements dropped at random), a
stereo rig's map (:func:`depthkit.data.sparse.sample_stereo`: KITTI's baseline, occlusions, fattened edges, disparity
noise), a sparser LiDAR (32 beams over the 64-beam sensor's field of view: about half the returns, nearer a real
KITTI frame's density) and a real stereo matcher's map of each scene's rendered pair (``stereo_sgbm``: OpenCV's
semi-global matcher, :data:`depthkit.data.datasets.synthetic.STEREO_RIGS`; its matches in the sky are kept, as a
rig's are)."""
ALL_PATTERNS = ("random100", "random500", "random2000", "lidar64", "holes", "noisy")
"""What ``--patterns all`` means."""


def pattern_names(text: str) -> list[str]:
    """A ``--patterns`` value (comma-separated names of :data:`SYNTHETIC_PATTERNS`, or ``all``) → the names; raises
    ValueError naming what is allowed (the benchmarks pass it to ``parser.error``)."""
    names = list(ALL_PATTERNS) if text == "all" else [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in SYNTHETIC_PATTERNS]
    if unknown or not names:
        raise ValueError(f"--patterns takes names from {', '.join(SYNTHETIC_PATTERNS)} or all (= "
                         f"{','.join(ALL_PATTERNS)}); received {text!r} "
                         f"(unknown: {unknown}).")
    return names


def add_scene_options(p: argparse.ArgumentParser, split: str, scenes: int, patterns: str, out: Path) -> None:
    """The options of a benchmark over the first scenes of a synthetic split, once per sparse pattern:
    ``--scenes``, ``--patterns``, ``--threads`` and ``--out``; read them back with :func:`parse_scene_options`."""
    p.add_argument("--scenes", type=int, default=scenes, help=f"first N scenes of the synthetic {split} split")
    p.add_argument("--patterns", default=patterns, help="comma-separated names of benchmarks/accuracy.py's "
                   "SYNTHETIC_PATTERNS, or 'all'")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=out, help="folder for the .json and .md results")


def parse_scene_options(p: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` (the options of :func:`add_scene_options` and the script's own), check ``--scenes``,
    ``--threads`` and ``--patterns`` (``parser.error`` naming what is allowed), go offline and set torch's threads:
    ``(args, names)``."""
    args = p.parse_args(argv)
    if args.scenes < 1:
        p.error(f"--scenes must be >= 1 (received {args.scenes}).")
    if args.threads < 1:
        p.error(f"--threads must be >= 1 torch CPU thread (received {args.threads}).")
    try:
        names = pattern_names(args.patterns)
    except ValueError as err:
        p.error(str(err))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    return args, names


DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# (metric key, column header): the metric columns of the markdown table
COLUMNS = (
    ("mae", "MAE (m)"),
    ("rmse", "RMSE (m)"),
    ("abs_rel", "AbsRel"),
    ("delta1", "δ1"),
    ("dbe_acc", "DBE-acc (px)"),
    ("dbe_comp", "DBE-comp (px)"),
    ("preservation", "preservation (m)"),
)


# ---------------------------------------------------------------------------------------------------- arguments
class _DatasetAction(argparse.Action):
    """``--dataset NAME`` starts a new dataset entry; ``--root DIR`` / ``--split S`` fill in the latest one."""

    def __call__(self, parser, namespace, value, option_string=None):
        entries = getattr(namespace, "datasets", None) or []
        if option_string == "--dataset":
            entries.append({"name": value, "root": None, "split": None})
        else:
            key = option_string.lstrip("-")
            if not entries:
                parser.error(f"{option_string} {value} comes before any --dataset; write --dataset NAME {option_string} "
                             f"{value}.")
            if entries[-1][key] is not None:
                parser.error(f"dataset {entries[-1]['name']!r} already has {option_string} {entries[-1][key]}; give "
                             f"--dataset again before a second {option_string}.")
            entries[-1][key] = value
        namespace.datasets = entries


def add_dbe_canny_option(p: argparse.ArgumentParser) -> None:
    """``--dbe-canny``, as ``depthkit eval`` takes it (this script's and real_frame.py's)."""
    from depthkit.metrics import DBE_CANNY

    p.add_argument("--dbe-canny", choices=DBE_CANNY, default=DBE_CANNY[0],
                   help="the DBE's edges, as `depthkit eval --dbe-canny`: matlab (default) = the iBims-1 paper's, "
                        "skimage = its public Python script's")


def add_dbe_region_option(p: argparse.ArgumentParser) -> None:
    """``--dbe-region``, as ``depthkit eval`` takes it (this script's; real_frame.py's frame has no annotated edges,
    which the ``image`` region needs)."""
    from depthkit.metrics import DBE_REGION

    p.add_argument("--dbe-region", choices=DBE_REGION, default=DBE_REGION[0],
                   help="where the DBE scores edges, as `depthkit eval --dbe-region`: valid (default) = only where the "
                        "GT is valid; image = the whole image against a dataset's annotated edges (iBims-1), as its "
                        "public script does (needs --no-synthetic: synthetic scenes annotate no edges)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/accuracy.py",
        description="Evaluate the classical baselines and checkpoints on the synthetic test split and on dataset "
                    "roots; write NAME.json and NAME.md (--name, default accuracy) into --out.",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of each dataset "
                   "(default: the whole split; synthetic test has 100)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated classical completion methods (default: {','.join(DEFAULT_METHODS)}; "
                        "'none' for checkpoints only)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="DIR",
                   help="a checkpoint directory or hub id to evaluate (repeatable)")
    p.add_argument("--stages", action="append", default=None, metavar="LIST",
                   help="stage list to evaluate each checkpoint with, e.g. complete or complete,sharpen (repeatable; "
                        "default: complete, plus complete,sharpen when the checkpoint has sharpen; a checkpoint "
                        "without complete/ runs --base-method first)")
    p.add_argument("--option", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="a stage option for every checkpoint evaluated, over its manifest's (repeatable; as `depthkit "
                        "run --option`, e.g. complete.occlusion_fill=left); the checkpoint rows' names list them")
    p.add_argument("--base-method", default="guided",
                   help="classical completion in front of a checkpoint that has no complete stage (default: guided)")
    p.add_argument("--dataset", action=_DatasetAction, dest="datasets", metavar="NAME",
                   help="also evaluate this dataset (repeatable; follow it with --root DIR and optionally --split)")
    p.add_argument("--root", action=_DatasetAction, dest="datasets", metavar="DIR", help="root of the last --dataset")
    p.add_argument("--split", action=_DatasetAction, dest="datasets", metavar="SPLIT",
                   help="split of the last --dataset (default: the one its protocol evaluates)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic test split")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="combine the JSON reports of runs that evaluated different datasets or patterns (e.g. "
                        "in parallel) into one report, NAME.json / NAME.md in --out; evaluates nothing. Refuses a "
                        "dataset section given twice, runs made with different parameters (e.g. --limit) and runs on "
                        "different devices; takes only --out, --name and --quiet besides")
    p.add_argument("--patterns", default=None,
                   help="comma-separated sparse patterns to evaluate the synthetic test split with ("
                        + ", ".join(SYNTHETIC_PATTERNS) + "), or 'all' (" + ", ".join(ALL_PATTERNS)
                        + "); default: the protocol's 500 random points")
    p.add_argument("--clutter", type=int, default=0, metavar="N",
                   help="put N plants into every synthetic test scene (thin oblique leaves; a robustness check: the "
                        "default's refiner was fine-tuned with plants in 40 %% of its scenes; 0 = the standard split)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for NAME.json and NAME.md "
                   "(default: benchmarks/results)")
    p.add_argument("--name", type=results_name, default="accuracy",
                   help="file stem of the results (default accuracy; e.g. accuracy_stereo for a robustness run, so "
                        "benchmarks/results/accuracy.md is not replaced)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep per-method evaluation files here; a rerun with the same folder resumes")
    add_dbe_canny_option(p)
    add_dbe_region_option(p)
    p.add_argument("--device", default="cpu", help="device for checkpoints: cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--dtype", default="float32", help="dtype for checkpoints (default: float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ---------------------------------------------------------------------------------------------------- methods
def classical_entries(methods: str) -> list[dict]:
    """One entry per classical method name in the comma-separated ``methods`` ('none' = no entry)."""
    from depthkit.data.baselines import CLASSICAL_METHODS

    names = [m.strip() for m in methods.split(",") if m.strip() and m.strip() != "none"]
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise ValueError(f"--methods {methods!r} names {twice} more than once (each would be a duplicate row); name "
                         "each method once.")
    unknown = [m for m in names if m not in CLASSICAL_METHODS]
    if unknown:
        classical = list(CLASSICAL_METHODS)
        raise ValueError(f"--methods: {unknown} are not classical completion methods; available: {classical}. "
                         "Evaluate learned methods with --checkpoint.")
    return [{"label": m, "kind": "classical", "method": m, "stages": "complete", "checkpoint": None} for m in names]


def checkpoint_entries(spec: str, stage_lists: list[str] | None, base_method: str,
                       options: list[str] = (), name: str | None = None) -> list[dict]:
    """One entry per stage list to evaluate checkpoint ``spec`` with (see ``--stages``), each with the stage options
    of ``options`` (``--option`` texts) for the stages it runs, named in its label. ``name`` starts the labels
    (default: the folder's name; :func:`checkpoint_names` gives longer ones to checkpoints whose folders share it)."""
    from depthkit.checkpoints import CheckpointRef
    from depthkit.stages import STAGE_ORDER

    checkpoint = CheckpointRef.open(spec)
    provided = [s for s in STAGE_ORDER if s in checkpoint.stages]
    if stage_lists is None:
        stage_lists = ["complete"] if "complete" in provided else []
        if "sharpen" in provided:
            stage_lists.append("complete,sharpen")
    entries = []
    for stages in stage_lists:
        names = [s.strip() for s in stages.split(",") if s.strip()]
        missing = [s for s in names if s not in provided and s != "complete"]
        if missing or not names:
            raise ValueError(f"--stages {stages!r}: checkpoint {spec} provides {provided}; it has no {missing} "
                             "stage(s). Choose stages it provides (complete may always be run classically).")
        learned = [s if s in provided else f"{base_method} (classical)" for s in names]
        label, given = row_options(options, names)
        if "complete" in given and "complete" not in provided:
            raise ValueError(f"--option {', '.join(o for o in options if o.startswith('complete.'))}: checkpoint "
                             f"{spec} has no complete stage (its rows complete with the classical --base-method "
                             f"{base_method}, which takes no options); drop the complete option or give a checkpoint "
                             "with a complete stage.")
        entries.append({"label": f"{name or Path(str(spec)).name}{label}: " + " + ".join(learned),
                        "kind": "checkpoint", "method": None if "complete" in provided else base_method,
                        "stages": ",".join(names), "checkpoint": str(checkpoint.root), "options": given})
    return entries


def _checkpoint_path(spec: str) -> Path:
    """``spec`` (a --checkpoint) as a resolved folder when it is one here, else as typed (a hub id)."""
    path = Path(str(spec)).expanduser()
    return path.resolve() if path.exists() else path


def checkpoint_names(specs: list[str]) -> list[str]:
    """The name that starts each ``--checkpoint``'s row labels: its folder's name (``runs/a/final`` -> ``final``),
    or, when several folders share that name, as many trailing parts of their resolved paths as tell them apart
    (``a/final``, ``b/final``), so their rows and work files never share one. ValueError for a checkpoint given
    twice (its rows would be duplicates)."""
    paths = [_checkpoint_path(s) for s in specs]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"--checkpoint {', '.join(twice)} is given more than once (its rows would be duplicates); "
                         "give each checkpoint once.")
    names = []
    for path in paths:
        same = {q for q in paths if q.name == path.name}
        k = 1
        while len(same) > 1 and len({"/".join(q.parts[-k:]) for q in same}) < len(same):
            k += 1
        names.append("/".join(path.parts[-k:]))
    return names


def parse_options(texts) -> dict[str, dict]:
    """``--option`` texts → ``{stage: {key: value}}`` (values YAML, as ``depthkit run --option``); ValueError for a
    malformed text or a STAGE.KEY given twice (a row's name lists what it ran with, so it must not say both)."""
    from depthkit.cli import parse_stage_options

    keys = [t.partition("=")[0].strip() for t in texts]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"--option gives {', '.join(twice)} more than once; give each STAGE.KEY once.")
    return parse_stage_options(texts)


def row_options(texts, stages) -> tuple[str, dict[str, dict]]:
    """The ``--option`` texts for a row that runs ``stages``: its name's part (`` [complete.occlusion_fill=left]``,
    empty without) and its stage options."""
    given = [t for t in texts if t.partition(".")[0] in stages]
    return (f" [{', '.join(given)}]" if given else ""), parse_options(given)


def check_options(options: list[str], entries: list[dict], device: str, dtype: str) -> None:
    """ValueError unless every ``--option`` is well formed, given once and names a stage some evaluated checkpoint
    runs, and every row with options builds (a value its stage refuses fails here, before any image is scored)."""
    run = {s for e in entries if e["kind"] == "checkpoint" for s in e["stages"].split(",")}
    unused = [stage for stage in parse_options(options) if stage not in run]
    if unused:
        raise ValueError(f"--option names the stage(s) {unused}, which no evaluated checkpoint runs (stages run: "
                         f"{sorted(run) or 'none: give --checkpoint'}); options apply to checkpoints only.")
    for entry in entries:
        if entry.get("options"):
            try:
                build_pipeline(entry, device, dtype)
            except ValueError as exc:
                raise ValueError(f"--option for the row {entry['label']!r}: {exc}") from None


def build_pipeline(entry: dict, device: str, dtype: str):
    """The :class:`depthkit.Pipeline` an entry describes."""
    from depthkit.checkpoints import load_manifest
    from depthkit.pipeline import Pipeline

    if entry["checkpoint"] is None:
        return Pipeline(stages=entry["stages"], method=entry["method"])
    given = entry.get("options") or {}
    if entry["method"] is None:  # the checkpoint has every stage asked for (its manifest's options under the given)
        return Pipeline.from_pretrained(entry["checkpoint"], stages=entry["stages"], device=device, dtype=dtype,
                                        stage_options=given)
    manifest = load_manifest(entry["checkpoint"])["stages"]
    stages = entry["stages"].split(",")
    options = {s: {**manifest.get(s, {}), **given.get(s, {})} for s in stages if s in manifest or s in given}
    return Pipeline(stages=stages, method=entry["method"], checkpoint=entry["checkpoint"], device=device, dtype=dtype,
                    stage_options=options)


# ---------------------------------------------------------------------------------------------------- datasets
def dataset_groups(dataset, n: int) -> dict[str, list[int]]:
    """Image indices per reported group: ``all``, plus ``indoor``/``outdoor`` for synthetic scenes."""
    groups = {"all": list(range(n))}
    if type(dataset).__name__ == "SyntheticDataset":
        from depthkit.data.synthetic import resolve_kind

        kinds = [resolve_kind(dataset.scene_seed(i), dataset.kind) for i in range(n)]
        for kind in ("indoor", "outdoor"):
            idx = [i for i in range(n) if kinds[i] == kind]
            if idx:
                groups[kind] = idx
    return groups


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "method"


def resolved_root(spec: dict) -> str | None:
    """A dataset spec's root as an absolute path (None for generated data, e.g. synthetic): what its report section
    records and what tells two roots of one dataset apart."""
    return None if spec["root"] is None else str(Path(spec["root"]).expanduser().resolve())


def spec_key(spec: dict) -> tuple:
    """What makes a dataset spec one of a kind: (name, split, resolved root, sparse pattern); a spec without
    ``--split`` has the split its protocol evaluates (None when unknown here: its reader then says what is wrong)."""
    from depthkit.data.datasets import DATASETS
    from depthkit.data.protocols import get_protocol

    split = spec["split"]
    if split is None and spec["name"] in DATASETS:
        try:
            split = get_protocol(DATASETS[spec["name"]].key).split
        except ValueError:  # an unlabelled set (image_folder) has no protocol
            pass
    return spec["name"], split, resolved_root(spec), spec.get("pattern")


def work_folder(spec: dict, split: str) -> str:
    """The work-dir folder of a dataset spec's evaluation files: ``<name>_<split>[_<pattern>][_clutterN]``, and for a
    dataset root, ``_root<hash>`` of its resolved path, so two roots of one dataset never share one."""
    import hashlib

    clutter = spec.get("options", {}).get("clutter", 0)
    root = resolved_root(spec)
    return _slug(f"{spec['name']}_{split}" + (f"_{spec['pattern']}" if spec.get("pattern") else "")
                 + (f"_clutter{clutter}" if clutter else "")
                 + (f"_root{hashlib.sha256(root.encode()).hexdigest()[:8]}" if root else ""))


def entry_fingerprint(spec: dict, dataset, entry: dict, dtype: str, device: str = "cpu") -> dict:
    """Everything that determines one entry's per-image results on one dataset (as ``depthkit eval`` records it):
    the dataset, its resolved root, split and reader options (sparse pattern and its options, clutter), protocol,
    method, the checkpoint's identity (its resolved folder and files, not the name in the row's label), stages,
    stage options, dtype and depthkit version, and for a checkpoint row the device it runs on (its numbers and
    timings depend on it; classical rows always run on the CPU). :func:`depthkit.evaluate.evaluate` refuses to
    resume a ``--work-dir`` whose rows were made under another one, so a rerun cannot mix two checkpoints that share
    a folder name, nor rows timed on two devices."""
    from depthkit import __version__
    from depthkit.checkpoints import checkpoint_identity
    from depthkit.evaluate import _protocol_dict

    return {"dataset": spec["name"], "root": None if spec["root"] is None else str(Path(spec["root"]).resolve()),
            "split": dataset.split, "reader_options": spec.get("options", {}),
            "protocol": _protocol_dict(dataset.protocol), "method": entry["method"],
            "checkpoint": checkpoint_identity(entry["checkpoint"]), "stages": entry["stages"],
            "stage_options": entry.get("options") or {}, "dtype": None if entry["checkpoint"] is None else dtype,
            "depthkit_version": __version__, **({} if entry["checkpoint"] is None else {"device": device})}


def evaluate_dataset(spec: dict, entries: list[dict], args, work: Path) -> dict | None:
    """Evaluate every entry on one dataset; returns its JSON section (None on ranks > 0 of a distributed run)."""
    from depthkit.data.datasets import build_dataset
    from depthkit.evaluate import FingerprintMismatch, evaluate, mean_scores

    dataset = build_dataset(spec["name"], spec["root"], split=spec["split"], **spec.get("options", {}))
    protocol = dataset.protocol
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    groups = dataset_groups(dataset, n)
    folder = work / work_folder(spec, dataset.split)
    section = {"dataset": spec["name"], "pattern": spec.get("pattern"), "root": resolved_root(spec),
               "split": dataset.split, "reader": repr(dataset), "protocol": protocol.description,
               "n_images": n, "groups": {g: len(idx) for g, idx in groups.items()}, "methods": []}
    for entry in entries:
        pipe = build_pipeline(entry, args.device, args.dtype)
        fingerprint = entry_fingerprint(spec, dataset, entry, args.dtype, args.device)
        try:
            summary = evaluate(pipe, dataset, protocol, folder / f"{_slug(entry['label'])}.json", limit=n,
                               progress=not args.quiet, label=f"{spec['name']} {entry['label']}",
                               fingerprint=fingerprint, dbe_canny=args.dbe_canny,
                               dbe_region=args.dbe_region)
        except FingerprintMismatch as exc:  # its advice names depthkit eval's options, which this script lacks
            raise ValueError(f"--work-dir {work}: the row {entry['label']!r} on {spec['name']} "
                             f"{dataset.split}: {str(exc).split(' Pass another --out')[0]} Give a fresh --work-dir, "
                             f"or delete {folder} to score it again.") from None
        if summary is None:
            continue
        rows = summary["per_image"]
        result = {k: v for k, v in entry.items() if k not in ("label", "method")}
        result["method"] = entry["label"]
        result["base_method"] = entry["method"]  # the classical method it completes with (None: its checkpoint does)
        result["checkpoint_identity"] = fingerprint["checkpoint"]  # its files' hash: a retrained folder differs
        result["n_images"] = len(rows)
        result["mean"] = mean_scores(rows)
        result["seconds_per_image"] = sum(r["seconds"] for r in rows) / len(rows)
        result["by_group"] = {}
        for group, idx in groups.items():
            sub = [rows[i] for i in idx]
            result["by_group"][group] = {
                "n_images": len(sub),
                "mean": mean_scores(sub),
                "seconds_per_image": sum(r["seconds"] for r in sub) / len(sub),
            }
        section["methods"].append(result)
    return section if section["methods"] else None


# ---------------------------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value != 0 and abs(value) < 0.5 * 10 ** -digits:  # a tiny non-zero (e.g. preservation) must not read as 0
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def table_markdown(methods: list[dict], group: str) -> str:
    """One markdown table for ``group``: a row per method, the metric columns and seconds per image."""
    head = "| method | " + " | ".join(h for _, h in COLUMNS) + " | s / image |"
    sep = "|---|" + "---:|" * (len(COLUMNS) + 1)
    rows = []
    for m in methods:
        g = m["by_group"][group]
        cells = [_fmt(g["mean"].get(k, float("nan"))) for k, _ in COLUMNS] + [_fmt(g["seconds_per_image"], 3)]
        rows.append(f"| {m['method']} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows]) + "\n"


def pattern_summary_markdown(sections: list[dict]) -> str:
    """MAE (all images) per sparse pattern (rows) and method (columns), each with its change against ``guided``."""
    sections = [ds for ds in sections if ds.get("pattern")]
    methods = list(dict.fromkeys(m["method"] for ds in sections for m in ds["methods"]))
    lines = ["## MAE (m) per sparse pattern (synthetic test split; change against guided in brackets)", "",
             "| pattern | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for ds in sections:
        mae = {m["method"]: m["mean"].get("mae", float("nan")) for m in ds["methods"]}
        ref = mae.get("guided")
        cells = []
        for name in methods:
            v = mae.get(name)
            delta = f" ({100 * (v / ref - 1):+.1f} %)" if v is not None and ref and name != "guided" else ""
            cells.append("n/a" if v is None else _fmt(v) + delta)
        lines.append(f"| {ds['pattern']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DBE_EDGES = {"matlab": "", "skimage": "; edges found as iBims-1's public Python script finds them (scikit-image's Canny, "
             "absolute thresholds 0.15 / 0.3: `--dbe-canny skimage`), not as its paper (and depthkit's other reports)"}
"""What the report says of its DBE edges, by ``--dbe-canny`` (the default's reports keep their sentence)."""
DBE_REGION_TEXT = {"valid": "", "image": "; edges scored over the whole image against the dataset's annotated edges, "
                   "as iBims-1's public script does (`--dbe-region image`), not only where the GT is valid"}
"""What the report says of where its DBE scores edges, by ``--dbe-region``."""


def _machine_text(mach: dict | None) -> str:
    """``<cpu>, <n> cores, device <device>`` of a report's ``machine`` ("not recorded" without one)."""
    if not mach:
        return "not recorded"
    return f"{mach.get('cpu') or mach['platform']}, {mach['cpu_count']} cores, device {mach['device']}"


def _run_text(run: dict) -> str:
    """``on <date> with depthkit <version> (commit <commit>)`` of a report or a ``merged_from`` entry (an older
    merge's entries may lack the version and commit)."""
    version = run.get("depthkit_version")
    return (f"on {run.get('date')} with " + (f"depthkit {version}" if version else "a depthkit version not recorded")
            + (f" (commit {run['git_commit']})" if run.get("git_commit") else ""))


def run_header(report: dict) -> list[str]:
    """The lines saying where and how the report was made: the run's command, date, version, commit and machine; for
    a merged report (``merged_from``), the merge's command and each run's, since they may differ in all of those."""
    if not report.get("merged_from"):
        return [f"Generated by `{report['command']}` {_run_text(report)}.",
                f"Machine: {_machine_text(report['machine'])}."]
    runs = report["merged_from"]
    lines = [f"Merged by `{report.get('merged_by')}` from {len(runs)} run{'' if len(runs) == 1 else 's'}:"]
    for run in runs:
        lines.append(f"- `{run['command']}` {_run_text(run)}; machine: {_machine_text(run.get('machine'))}.")
    return lines


def report_markdown(report: dict) -> str:
    """The whole markdown report (``<name>.md``)."""
    lines = [
        "# Accuracy benchmark",
        "",
        *run_header(report),
        "",
        "Metrics are computed per image over the valid ground-truth pixels of the dataset's protocol and then "
        "averaged over images (the Marigold convention), by `depthkit.evaluate` (the code behind `depthkit eval`). "
        "MAE and RMSE are in metres; AbsRel = mean |pred - gt| / gt; δ1 = fraction of pixels with "
        "max(pred/gt, gt/pred) < 1.25 (higher is better). DBE-acc / DBE-comp are the iBims-1 depth-boundary errors in "
        "pixels (lower is better; edges from the GT depth unless the dataset annotates them; images without a GT "
        "edge are skipped)" + DBE_EDGES[report.get("dbe_canny", "matlab")]
        + DBE_REGION_TEXT[report.get("dbe_region", "valid")] + ". Preservation is max |pred - sparse| "
        "over the measured pixels in metres and must be 0. s / image is the mean pipeline time per image (data "
        "loading and scoring excluded); the machine may have been shared, so treat timings as rough.",
        "",
    ]
    if any(ds.get("pattern") for ds in report["datasets"]):
        lines += [pattern_summary_markdown(report["datasets"]), ""]
    for ds in report["datasets"]:
        counts = ", ".join(f"{n} {g}" for g, n in ds["groups"].items() if g != "all")
        pattern = f", sparse input: {ds['pattern']}" if ds.get("pattern") else ""
        lines += [f"## {ds['dataset']}{pattern} ({ds['split']} split, {ds['n_images']} images"
                  + (f": {counts}" if counts else "") + ")", "",
                  f"Reader: `{ds['reader']}`. Protocol: {ds['protocol']}"
                  + (f" — except the sparse input, drawn as `{ds['pattern']}` (SYNTHETIC_PATTERNS)." if pattern else ".")
                  , ""]
        multi = len(ds["groups"]) > 1
        for group in ds["groups"]:
            if multi:
                count = ds["groups"][group]
                lines += [f"### {group} ({count} image{'' if count == 1 else 's'})", ""]
            lines.append(table_markdown(ds["methods"], group))
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, out: Path, name: str = "accuracy") -> tuple[Path, Path]:
    """Write ``<name>.json`` (strict JSON: NaN as null) and ``<name>.md`` into ``out`` (each atomically)."""
    return write_results(out, name, report, report_markdown(report), echo=False)


def section_key(section: dict) -> tuple:
    """What makes a report's dataset section one of a kind: (dataset, sparse pattern, split, root)."""
    return section["dataset"], section.get("pattern"), section["split"], section.get("root")


MERGE_OWN_KEYS = (*RUN_KEYS, "datasets", "merged_from", "merged_by")
"""The keys of a report that are not its run's parameters: every other top-level key (``benchmark``, ``limit``,
``clutter``, ``dtype``, ...) must be equal in the reports ``--merge`` joins."""
MERGE_DEFAULTS = {"clutter": 0, "dtype": "float32", "dbe_canny": "matlab", "dbe_region": "valid"}
"""Run parameters a report written before they were recorded lacks, with the value its run had (the options'
defaults then), so such a report still merges with a new one made the same way."""
ROW_SETTINGS = ("kind", "checkpoint", "stages", "options")
"""What a method row of a report was run with (:func:`row_settings`): rows of one name in the reports ``--merge``
joins must agree on them, since the merged pattern summary puts them in one column."""


def row_differences(a: dict, b: dict) -> dict[str, tuple]:
    """``{setting: (a's, b's)}`` for the :data:`ROW_SETTINGS` in which method rows ``a`` and ``b`` differ, and
    ``checkpoint_files`` when both reports record the hash of the checkpoint's files
    (:func:`depthkit.checkpoints.folder_identity`: a checkpoint retrained into the same folder differs there)."""
    differ = {k: (a.get(k), b.get(k)) for k in ROW_SETTINGS if a.get(k) != b.get(k)}
    files = tuple((r.get("checkpoint_identity") or {}).get("files") for r in (a, b))
    if None not in files and files[0] != files[1]:
        differ["checkpoint_files"] = files
    return differ


def merged_runs(path: Path, report: dict) -> list[dict]:
    """The ``merged_from`` entries a report brings into a merge: its own list when it is a merge, else one entry of
    its file, command, date, version, commit and machine."""
    return report.get("merged_from") or [
        {"file": str(path), **{k: report.get(k) for k in ("command", "cwd", "date", "depthkit_version",
                                                           "git_commit", "machine")}}]


def check_merge_devices(paths: list[Path], reports: list[dict]) -> None:
    """ValueError when the runs to merge ran on different devices (``machine.device``; an entry of an older merge
    without its machine counts as its report's): a merged table would mix their timings in one column."""
    devices = {}
    for path, r in zip(paths, reports):
        for run in merged_runs(path, r):
            device = (run.get("machine") or r.get("machine") or {}).get("device")
            devices.setdefault(device, f"{run.get('file') or path} ({run.get('command')})")
    if len(devices) > 1:
        given = "; ".join(f"device {d}: {where}" for d, where in devices.items())
        raise ValueError(f"--merge: the runs ran on different devices ({given}), and a merged report would mix their "
                         "numbers and timings in one table; merge runs of one device, or rerun the odd one there.")


def merge_reports(paths: list[Path], out: Path, argv: list[str], name: str = "accuracy") -> int:
    """One report from several JSON reports of runs that evaluated different datasets or patterns (their sections
    in the given order). The commands, dates, versions, commits and machines of the runs are kept in ``merged_from``
    (an input that is itself a merge brings its own list), the merge's own command in ``merged_by``. ValueError,
    nothing written, for two sections of one dataset, pattern, split and root (a file given twice, or overlapping
    runs), for run parameters that differ (e.g. ``limit``, ``clutter``, ``dtype``: the merged report states each
    once), for runs on different devices (:func:`check_merge_devices`) and for rows of one name run differently
    (:func:`row_differences`: another checkpoint or options in one column)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    for path, r in zip(paths, reports):
        if not isinstance(r, dict) or not isinstance(r.get("datasets"), list):
            raise ValueError(f"--merge {path}: not a report of benchmarks/accuracy.py (no 'datasets' list); give the "
                             "NAME.json files its runs wrote.")
    seen: dict[tuple, Path] = {}
    for path, r in zip(paths, reports):
        for section in r["datasets"]:
            key = section_key(section)
            if key in seen:
                what = f"dataset {key[0]!r}, pattern {key[1]!r}, split {key[2]!r}, root {key[3]!r}"
                raise ValueError(f"--merge: {seen[key]} and {path} both have a section of {what}; merge runs of "
                                 "different datasets or patterns, each file once.")
            seen[key] = path
    for key in sorted({k for r in reports for k in r} - set(MERGE_OWN_KEYS)):
        values = [r.get(key, MERGE_DEFAULTS.get(key)) for r in reports]
        if any(v != values[0] for v in values[1:]):
            given = ", ".join(f"{path}: {json.dumps(v)}" for path, v in zip(paths, values))
            raise ValueError(f"--merge: the runs differ in {key!r} ({given}), which a merged report states once; "
                             f"merge only runs made with the same {key} (e.g. --limit), or rerun the odd one.")
    check_merge_devices(paths, reports)
    rows: dict[str, tuple[Path, dict]] = {}
    for path, r in zip(paths, reports):
        for m in (m for ds in r["datasets"] for m in ds["methods"]):
            first_path, first = rows.setdefault(m["method"], (path, m))
            differ = ", ".join(f"{k}: {json.dumps(x)} in {first_path}, {json.dumps(y)} in {path}"
                               for k, (x, y) in row_differences(first, m).items())
            if differ:
                raise ValueError(f"--merge: the rows named {m['method']!r} were run differently ({differ}), and a "
                                 "merged report puts them in one column; merge runs of the same checkpoints and "
                                 "options, or rerun the odd one.")
    report = {**MERGE_DEFAULTS, **reports[0]}
    report["datasets"] = [ds for r in reports for ds in r["datasets"]]
    report["command"] = "; ".join(r["command"] for r in reports)
    report["merged_from"] = [entry for path, r in zip(paths, reports) for entry in merged_runs(path, r)]
    report["merged_by"] = command_line(argv, __file__)
    json_path, md_path = write_report(report, out, name)
    print(f"accuracy benchmark: merged {len(paths)} reports into {json_path} and {md_path}")
    return 0


# ---------------------------------------------------------------------------------------------------- main
MERGE_OPTIONS = ("merge", "out", "name", "quiet")
"""The options ``--merge`` takes; every other one chooses what a run evaluates, which a merge does not do."""


def check_merge_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` for an evaluation option given with ``--merge`` (anything but :data:`MERGE_OPTIONS` away
    from its default): a merge evaluates nothing, so the option would be silently ignored."""
    given = {a.dest: a.option_strings[0] for a in reversed(parser._actions)  # --dataset/--root/--split: --dataset
             if a.dest not in (*MERGE_OPTIONS, "help") and getattr(args, a.dest) != parser.get_default(a.dest)}
    if given:
        names = ", ".join(sorted(given.values()))
        parser.error(f"--merge joins finished reports and evaluates nothing, so it takes only --out, --name and "
                     f"--quiet; received {names} as well. Drop them, or run the evaluation first and merge its "
                     "NAME.json.")


def check_entry_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` for ``--stages`` / ``--base-method`` without ``--checkpoint`` (they choose how checkpoints
    run) and for a stage list given twice in ``--stages`` (its rows would be duplicates)."""
    if not args.checkpoint:
        for option, given in (("--stages", args.stages is not None),
                              ("--base-method", args.base_method != parser.get_default("base_method"))):
            if given:
                parser.error(f"{option} chooses how a --checkpoint runs, and none is given; add --checkpoint DIR, "
                             f"or drop {option}.")
    lists = [",".join(s.strip() for s in text.split(",") if s.strip()) for text in args.stages or []]
    twice = sorted({x for x in lists if lists.count(x) > 1})
    if twice:
        parser.error(f"--stages {', '.join(twice)} is given more than once (its rows would be duplicates); give each "
                     "stage list once.")


def check_dataset_specs(parser: argparse.ArgumentParser, specs: list[dict]) -> None:
    """``parser.error`` for ``--root`` given to generated data (synthetic, whose reader ignores it) and for one
    dataset, split, root and sparse pattern asked for twice (e.g. ``--dataset synthetic`` beside the default synthetic
    test split): its section would be reported twice, the second resumed from the first's files."""
    from depthkit.data.datasets import DATASETS

    for spec in specs:
        if spec["root"] is not None and spec["name"] in DATASETS and not DATASETS[spec["name"]].needs_root:
            parser.error(f"--dataset {spec['name']} is generated, so it takes no --root (received --root "
                         f"{spec['root']}); drop --root.")
    keys = [spec_key(spec) for spec in specs]
    for key in dict.fromkeys(k for k in keys if keys.count(k) > 1):
        default = " (the synthetic test split is evaluated by default; add --no-synthetic)" \
            if key[:2] == ("synthetic", "test") else ""
        parser.error(f"dataset {key[0]!r}, split {key[1]!r}, root {key[2]!r}, pattern {key[3]!r} is asked for more "
                     f"than once{default}; evaluate each once.")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.merge:  # a file given twice, runs made differently, a file not there: run_main says it in one line
        check_merge_options(parser, args)
        return merge_reports(args.merge, args.out, argv, args.name)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1 image; received {args.limit}")
    if args.clutter < 0:
        parser.error(f"--clutter must be >= 0 plants per scene; received {args.clutter}")
    if args.clutter and args.no_synthetic:
        parser.error("--clutter puts plants into the synthetic test split, which --no-synthetic leaves out")
    if args.patterns is not None and args.no_synthetic:
        parser.error(f"--patterns {args.patterns} chooses the sparse input of the synthetic test split, which "
                     "--no-synthetic leaves out; drop one of them.")
    scenes = {"clutter": args.clutter} if args.clutter else {}
    specs = [] if args.no_synthetic else [{"name": "synthetic", "root": None, "split": "test", "options": scenes}]
    if args.patterns and specs:
        try:
            names = pattern_names(args.patterns)
        except ValueError as err:
            parser.error(str(err))
        specs = [{"name": "synthetic", "root": None, "split": "test", "pattern": n,
                  "options": {"sparse_pattern": SYNTHETIC_PATTERNS[n][0], "sparse_kwargs": SYNTHETIC_PATTERNS[n][1],
                              **scenes}}
                 for n in names]
    for d in args.datasets or []:
        if d["root"] is None and d["name"] != "synthetic":
            parser.error(f"--dataset {d['name']} needs --root DIR right after it (see docs/datasets.md for layouts)")
        specs.append(d)
    if not specs:
        parser.error("nothing to evaluate: --no-synthetic without any --dataset NAME --root DIR")
    check_dataset_specs(parser, specs)
    if args.dbe_region == "image" and any(s["name"] == "synthetic" for s in specs):
        parser.error("--dbe-region image scores DBE against a dataset's annotated edge maps (iBims-1's); the "
                     "synthetic test split has none: add --no-synthetic and evaluate --dataset ibims1 --root DIR")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.work_dir is None:
        # each process would make its own temporary folder and never see the other shards
        parser.error("under accelerate launch give --work-dir DIR (a folder every process can reach)")

    # an unknown method, a missing dataset root or checkpoint: run_main says what in one line and exits 2
    entries = classical_entries(args.methods)
    for spec, name in zip(args.checkpoint, checkpoint_names(args.checkpoint)):
        entries += checkpoint_entries(spec, args.stages, args.base_method, args.option, name)
    if not entries:
        parser.error("nothing to evaluate: --methods none and no --checkpoint")
    check_options(args.option, entries, args.device, args.dtype)  # --option without --checkpoint: said first
    check_entry_options(parser, args)
    tmp = None
    if args.work_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="depthkit_accuracy_"))
    work = args.work_dir or tmp
    try:
        sections = [evaluate_dataset(spec, entries, args, work) for spec in specs]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if any(s is None for s in sections):  # a non-zero rank of `accelerate launch`: rank 0 writes the report
        return 0
    report = {"benchmark": "accuracy", **run_info(argv, __file__, args.device), "limit": args.limit,
              "clutter": args.clutter, "dtype": args.dtype, "dbe_canny": args.dbe_canny,
              "dbe_region": args.dbe_region, "datasets": sections}
    json_path, md_path = write_report(report, args.out, args.name)
    print(report_markdown(report))
    print(f"accuracy benchmark: wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
