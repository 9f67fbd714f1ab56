"""The ``depthkit`` command line: ``run``, ``ls`` (and more verbs as stages land).

Only argparse is imported at start-up so ``depthkit --help`` is instant; each verb imports what it needs.
``main(argv)`` returns the exit code, so tests call it in-process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RUN_EPILOG = """examples:
  depthkit run --image examples/room_rgb.png --sparse examples/room_sparse.npy --out out/
  depthkit run --method nearest --image rgb.png --sparse lidar.png --depth-scale 256 --out out/
  depthkit run --input-dir frames/ --sparse-dir lidar/ --out out/ --intrinsics 525,525,319.5,239.5 --ply
"""

EVAL_EPILOG = """examples:
  depthkit eval --dataset synthetic --method guided --out results/synthetic_guided.json --limit 50
  depthkit eval --dataset nyuv2 --root data/nyuv2 --checkpoint ck/ --stages complete,sharpen --out nyu.json
  accelerate launch --multi_gpu --num_processes 2 -m depthkit.cli eval --dataset kitti_dc --root data/kitti --out k.json
(rerunning the same command resumes an interrupted evaluation)
"""

TRAIN_EPILOG = """examples:
  depthkit train recipes/tiny/complete.yaml                                  # CPU, tiny model, synthetic scenes
  depthkit train recipes/complete/qwen2_5_vl_3b_lora.yaml train.max_steps=200 # key=value overrides
  depthkit train recipes/tiny/complete.yaml --resume                          # continue from the last checkpoint
  accelerate launch --num_processes 8 -m depthkit.cli train recipes/complete/qwen2_5_vl_3b_lora.yaml
"""

INIT_EPILOG = """examples:
  depthkit init-checkpoint --tiny ck/ && depthkit run --checkpoint ck/ --image examples/room_rgb.png \
      --sparse examples/room_sparse.npy --out out/
"""

IMPORT_EPILOG = """examples:
  depthkit import-checkpoint --sharpdepth path/to/sharpdepth_release --out ck/   # diffusers pipeline folder
  depthkit import-checkpoint --lotus jingheya/lotus-depth-g-v2-1-disparity --out ck/  # hub id (network needed)
"""

LS_EPILOG = """examples:
  depthkit ls            # stages, completion methods, checkpoints
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit code 2 with usage, as argparse, but name the verb's help
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from depthkit import __version__

    parser = _Parser(prog="depthkit", description="Dense, metric, sharp depth from RGB + sparse depth.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=RUN_EPILOG)
    parser.add_argument("--version", action="version", version=f"depthkit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    run = sub.add_parser("run", help="complete (and sharpen) depth for an image or a folder",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EPILOG)
    src = run.add_argument_group("inputs (one image, or a folder)")
    src.add_argument("--image", type=Path, help="RGB image (png/jpg)")
    src.add_argument("--sparse", type=Path, help="sparse depth for --image: .npy metres, or 16-bit .png with --depth-scale")
    src.add_argument("--input-dir", type=Path, help="folder of NAME.png|jpg with NAME_sparse.npy|png beside them")
    src.add_argument("--sparse-dir", type=Path, help="folder holding the NAME_sparse.* files (default: --input-dir)")
    src.add_argument("--depth", type=Path, default=None,
                     help="metric depth input for --stages sharpen alone (.npy metres or 16-bit .png with --depth-scale)")
    src.add_argument("--depth-scale", type=float, default=None,
                     help="units per metre of 16-bit PNG sparse input (KITTI/VOID 256, millimetres 1000)")
    model = run.add_argument_group("model")
    model.add_argument("--stages", default="complete", help="comma-separated stages to run (default: complete)")
    model.add_argument("--method", default=None, help="completion method (`depthkit ls` lists them)")
    model.add_argument("--checkpoint", default=None, help="checkpoint directory or hub id (default: embedded)")
    model.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    model.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: float32)")
    model.add_argument("--option", action="append", default=[], metavar="STAGE.KEY=VALUE",
                       help="stage option, repeatable, e.g. complete.query_budget=2048 complete.batch_size=64")
    out = run.add_argument_group("outputs")
    out.add_argument("--out", type=Path, required=True, help="output folder")
    out.add_argument("--png-scale", type=float, default=1000.0,
                     help="units per metre in <stem>_depth.png (default 1000 = millimetres)")
    out.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy in pixels, or a JSON/TXT file")
    out.add_argument("--ply", action="store_true", help="also write <stem>.ply point clouds (needs --intrinsics)")

    ev = sub.add_parser("eval", help="evaluate on a benchmark split with its protocol (JSON + markdown)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVAL_EPILOG)
    ev.add_argument("--dataset", required=True, help="dataset name (`depthkit ls` lists them)")
    ev.add_argument("--root", type=Path, default=None, help="dataset root folder (not needed for synthetic)")
    ev.add_argument("--split", default=None, help="split to evaluate (default: the split the dataset's protocol evaluates)")
    ev.add_argument("--stages", default="complete", help="comma-separated stages to run (default: complete)")
    ev.add_argument("--method", default=None, help="completion method, e.g. a classical baseline")
    ev.add_argument("--checkpoint", default=None, help="checkpoint directory or hub id")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", default="float32")
    ev.add_argument("--option", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="stage option, repeatable, e.g. complete.query_budget=2048")
    ev.add_argument("--out", type=Path, required=True, help="metrics JSON path (a .md table is written beside it)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")

    tr = sub.add_parser("train", help="train a stage from a YAML recipe (key=value overrides)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EPILOG)
    tr.add_argument("recipe", type=Path, help="recipe YAML (see recipes/)")
    tr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=200")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")

    ic = sub.add_parser("init-checkpoint", help="write a random-weight tiny checkpoint (smoke test of every path)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=INIT_EPILOG)
    ic.add_argument("out", type=Path, help="checkpoint directory to create")
    ic.add_argument("--tiny", action="store_true", required=True, help="tiny random weights (the only kind for now)")
    ic.add_argument("--stages", default=None, help="stages to include (default: every available stage)")
    ic.add_argument("--seed", type=int, default=0)

    im = sub.add_parser("import-checkpoint", help="convert released SharpDepth / Lotus weights to depthkit's layout",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=IMPORT_EPILOG)
    im.add_argument("--sharpdepth", default=None, help="SharpDepth release: diffusers pipeline folder or hub id")
    im.add_argument("--lotus", default=None, help="Lotus release: diffusers folder or hub id")
    im.add_argument("--out", type=Path, required=True, help="depthkit checkpoint directory to write")
    im.add_argument("--norm", choices=("depth", "disparity"), default=None,
                    help="the release's depth normalisation (default: read from the release name)")
    im.add_argument("--processing-resolution", type=int, default=768,
                    help="longest image side (pixels) inference runs at; 0 = the input's size (default 768)")

    sub.add_parser("ls", help="list stages, completion methods and checkpoints",
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=LS_EPILOG)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    handler = {"run": _cmd_run, "eval": _cmd_eval, "train": _cmd_train, "init-checkpoint": _cmd_init_checkpoint,
               "import-checkpoint": _cmd_import_checkpoint, "ls": _cmd_ls}[args.verb]
    try:
        return handler(args, parser)
    except (ValueError, OSError) as exc:  # bad input, missing files, a hub id asked for with the network off
        print(f"depthkit {args.verb}: error: {exc}", file=sys.stderr)
        return 2


def _find_pairs(input_dir: Path, sparse_dir: Path | None) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    from depthkit.io import IMAGE_SUFFIXES

    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input-dir {input_dir} is not a folder")
    sparse_dir = sparse_dir or input_dir
    if not sparse_dir.is_dir():
        raise FileNotFoundError(f"--sparse-dir {sparse_dir} is not a folder")
    skip = ("_sparse", "_depth", "_color")
    images = sorted(p for p in input_dir.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(skip))
    if not images:
        raise FileNotFoundError(f"no images (png/jpg) found in {input_dir}")
    pairs, missing = [], []
    for img in images:
        candidates = [sparse_dir / f"{img.stem}_sparse{ext}" for ext in (".npy", ".png")]
        if sparse_dir != input_dir:
            candidates += [sparse_dir / f"{img.stem}{ext}" for ext in (".npy", ".png")]
        found = next((c for c in candidates if c.is_file()), None)
        pairs.append((img, found))
        if found is None:
            missing.append(img.name)
    return pairs, missing


def write_outputs(out_dir: Path, stem: str, depth, image=None, png_scale: float = 1000.0,
                  intrinsics=None, ply: bool = False) -> list[Path]:
    """Write ``<stem>_depth.npy``, ``<stem>_depth.png`` (uint16), ``<stem>_color.png`` and optionally ``<stem>.ply``."""
    from depthkit import io

    paths = [io.write_depth_npy(out_dir / f"{stem}_depth.npy", depth),
             io.write_depth_png16(out_dir / f"{stem}_depth.png", depth, scale=png_scale),
             io.write_colorized(out_dir / f"{stem}_color.png", depth)]
    if ply:
        paths.append(io.write_point_cloud(out_dir / f"{stem}.ply", depth, intrinsics, image=image))
    return paths


def _cmd_run(args, parser) -> int:
    single = args.image is not None or args.sparse is not None
    starts_with_sharpen = args.stages.split(",")[0].strip() == "sharpen"
    if single == (args.input_dir is not None):
        parser.error("give either --image with --sparse, or --input-dir (not both)")
    if single and args.image is None:
        parser.error("--sparse needs --image")
    if single and args.sparse is None and not starts_with_sharpen:
        parser.error("--image needs --sparse (sparse depth to complete)")
    if starts_with_sharpen and args.depth is None and single:
        parser.error("--stages sharpen alone needs --depth (a metric depth map to sharpen)")
    if args.depth is not None and not single:
        parser.error("--depth goes with --image (folders: not supported yet)")
    if args.ply and args.intrinsics is None:
        parser.error("--ply needs --intrinsics fx,fy,cx,cy (pixels) or a JSON/TXT file")
    intrinsics = None
    if args.intrinsics is not None:
        from depthkit.io import parse_intrinsics

        intrinsics = parse_intrinsics(args.intrinsics)

    from tqdm import tqdm

    from depthkit.io import read_image

    pipe = _build_pipeline(args)

    if single:
        pairs, failures = [(args.image, args.sparse)], []
    else:
        pairs, missing = _find_pairs(args.input_dir, args.sparse_dir)
        failures = [(name, "no sparse file NAME_sparse.npy|png found") for name in missing]
        pairs = [p for p in pairs if p[1] is not None]
    args.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for img_path, sparse_path in tqdm(pairs, desc="depthkit run", unit="img", disable=single or None):
        try:
            image = read_image(img_path)
            out = pipe(image, sparse_path, depth=args.depth, depth_scale=args.depth_scale)
            write_outputs(args.out, Path(img_path).stem, out.depth, image=image, png_scale=args.png_scale,
                          intrinsics=intrinsics, ply=args.ply)
            done += 1
        except Exception as exc:  # one bad input must not stop a folder run; it is reported and counted
            if not isinstance(exc, (ValueError, OSError)):
                exc = f"{type(exc).__name__}: {exc}"
            failures.append((Path(img_path).name, str(exc)))
            tqdm.write(f"depthkit run: skipped {Path(img_path).name}: {exc}", file=sys.stderr)
    print(f"depthkit run: wrote {done} result(s) to {args.out} with {pipe!r}")
    if failures:
        print(f"depthkit run: {len(failures)} input(s) failed:", file=sys.stderr)
        for name, why in failures:
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    return 0


def parse_stage_options(items: list[str]) -> dict[str, dict]:
    """``["complete.query_budget=2048", ...]`` → ``{"complete": {"query_budget": 2048}}`` (values parsed as YAML)."""
    import yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            raise ValueError(f"--option {item!r} must look like STAGE.KEY=VALUE, e.g. complete.query_budget=2048")
        options.setdefault(stage, {})[name] = yaml.safe_load(value)
    return options


def _build_pipeline(args):
    from depthkit.pipeline import Pipeline

    options = parse_stage_options(args.option)
    if args.checkpoint is not None:
        if args.method:
            options.setdefault("complete", {})["method"] = args.method
        return Pipeline.from_pretrained(args.checkpoint, stages=args.stages, device=args.device, dtype=args.dtype,
                                        stage_options=options)
    return Pipeline(stages=args.stages, method=args.method, device=args.device, dtype=args.dtype,
                    stage_options=options)


def _cmd_eval(args, parser) -> int:
    from depthkit.data.datasets import build_dataset
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import evaluate, markdown_table

    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1; received {args.limit}")
    dataset = build_dataset(args.dataset, args.root, split=args.split)
    protocol = getattr(dataset, "protocol", None) or get_protocol(args.dataset)
    pipe = _build_pipeline(args)
    label = args.method or (f"checkpoint {args.checkpoint}" if args.checkpoint else repr(pipe))
    summary = evaluate(pipe, dataset, protocol, args.out, limit=args.limit, label=label)
    if summary is not None:
        print(markdown_table({label: summary["mean"]}), end="")
        print(f"depthkit eval: {summary['n_images']} images; wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


TRAINERS = {"complete": "depthkit.complete.train", "sharpen": "depthkit.sharpen.train",
            "lotus": "depthkit.sharpen.train_lotus"}
TINY_WRITERS = {"complete": "depthkit.complete.checkpoint", "sharpen": "depthkit.sharpen.checkpoint"}


def _optional_module(name: str, what: str):
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise ValueError(f"{what} is not available in this version of depthkit (module {name} is missing).")
    return importlib.import_module(name)


def _cmd_train(args, parser) -> int:
    from depthkit.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    module = _optional_module(TRAINERS[recipe.kind], f"training recipes of kind {recipe.kind!r}")
    final = module.train(recipe, resume=args.resume)
    if final is not None:
        print(f"depthkit train: final checkpoint in {final}")
    return 0


def _cmd_init_checkpoint(args, parser) -> int:
    import importlib.util

    from depthkit.checkpoints import write_manifest

    available = [s for s, m in TINY_WRITERS.items() if importlib.util.find_spec(m) is not None]
    stages = available if args.stages is None else [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in available]
    if unknown or not stages:
        raise ValueError(f"cannot write tiny stage(s) {unknown or stages}; available: {', '.join(available)}")
    options = {}
    for s in stages:
        options[s] = _optional_module(TINY_WRITERS[s], f"tiny {s}").write_tiny(args.out / s, seed=args.seed)
    write_manifest(args.out, options, tiny=True)
    print(f"depthkit init-checkpoint: wrote a random-weight tiny checkpoint with stages {stages} to {args.out}")
    return 0


def _cmd_import_checkpoint(args, parser) -> int:
    if args.sharpdepth is None and args.lotus is None:
        parser.error("give --sharpdepth and/or --lotus")
    module = _optional_module("depthkit.sharpen.importer", "import-checkpoint")
    module.import_checkpoint(args.out, sharpdepth=args.sharpdepth, lotus=args.lotus, norm=args.norm,
                             processing_resolution=args.processing_resolution or None)
    print(f"depthkit import-checkpoint: wrote {args.out}")
    return 0


def _cmd_ls(args, parser) -> int:
    from depthkit.checkpoints import available_checkpoints, default_checkpoint, embedded_checkpoints_dir
    from depthkit.stages import COMPLETION_METHODS, DEFAULT_METHOD, STAGES

    print("stages (--stages, in run order):")
    for name, spec in STAGES.items():
        print(f"  {name:<10} {spec.description}")
    print("completion methods (--method):")
    for name, description in COMPLETION_METHODS.items():
        tag = " (default without a checkpoint)" if name == DEFAULT_METHOD else ""
        print(f"  {name:<10} {description}{tag}")
    from depthkit.data.datasets import DATASETS

    print("datasets (depthkit eval --dataset):")
    print("  " + ", ".join(DATASETS))
    print(f"checkpoints in {embedded_checkpoints_dir()}:")
    cks = available_checkpoints()
    for p in cks:
        print(f"  {p.name}{'  (embedded default)' if p == default_checkpoint() else ''}")
    if not cks:
        print("  none yet (the learned stages' embedded default is not trained yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
