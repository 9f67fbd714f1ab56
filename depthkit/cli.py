"""The ``depthkit`` command line: ``run``, ``eval``, ``train``, ``init-checkpoint``, ``import-checkpoint``, ``ls``,
``recipes``.

Only argparse is imported at start-up so ``depthkit --help`` is instant; each verb imports what it needs.
``main(argv)`` returns the exit code, so tests call it in-process. The ``run`` verb lives in
:mod:`depthkit.cli_run` (it reads every input file itself and checks them, and the outputs it would overwrite,
before any model loads; the pipeline gets arrays); :mod:`depthkit.cli_output` keeps libraries' progress bars and
warnings out of normal runs (``--verbose`` shows them). ``--quiet`` leaves errors and data warnings only. Errors on
user input are one line (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import re
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
  depthkit eval --dataset nyuv2 --root data/nyuv2 --dataset-option layout=h5 --method nearest --out n.json
(rerunning the same command resumes an interrupted evaluation; a changed command refuses until --overwrite)
"""

TRAIN_EPILOG = """examples:
  depthkit train recipes/tiny/complete.yaml                                  # CPU, tiny model, synthetic scenes
  depthkit train recipes/complete/qwen2_5_vl_3b_lora.yaml train.max_steps=200 # key=value overrides
  depthkit train recipes/tiny/complete.yaml --resume                          # continue from the last checkpoint
  accelerate launch --num_processes 8 -m depthkit.cli train recipes/complete/qwen2_5_vl_3b_lora.yaml
"""

INIT_EPILOG = """examples:
  depthkit init-checkpoint --tiny ck/ && depthkit run --checkpoint ck/ --image examples/room_rgb.png \\
      --sparse examples/room_sparse.npy --out out/
"""

IMPORT_EPILOG = """examples:
  depthkit import-checkpoint --sharpdepth path/to/sharpdepth_release --out ck/   # diffusers pipeline folder
  depthkit import-checkpoint --lotus jingheya/lotus-depth-g-v2-1-disparity --out ck/  # hub id (network needed)
"""

LS_EPILOG = "examples:\n  depthkit ls            # stages, completion methods, datasets, recipes, checkpoints\n"

RECIPES_EPILOG = """examples:
  depthkit recipes ls                                    # the shipped recipes
  depthkit recipes cp tiny/complete my_complete.yaml     # copy one to edit, then: depthkit train my_complete.yaml
"""


class _Parser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):  # "--intrinsics -5,..." is a value, not an option
        args = list(sys.argv[1:] if args is None else args)  # (argparse alone takes it for an option)
        for i in range(len(args) - 2, -1, -1):
            if args[i] == "--intrinsics" and re.match(r"-[0-9.]", args[i + 1]):
                args[i:i + 2] = [f"--intrinsics={args[i + 1]}"]
        for flag in ("--resume", "--quiet", "-q", "--verbose", "-v"):  # options that take no value
            if flag in args and any("=" in a and not a.startswith("-") for a in args[args.index(flag):]):
                args.remove(flag)  # `train R --resume key=value`: argparse would leave the overrides unparsed
                args.append(flag)
        return super().parse_known_args(args, namespace)

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
                     help="units per metre of integer depth input: 16-bit PNG or integer .npy (KITTI/VOID 256, "
                          "millimetres 1000); required for integer input; float input is metres (not scaled, with a warning)")
    src.add_argument("--resize-sparse", action="store_true",
                     help="sparse map at another resolution than the image: scatter its points at scaled "
                          "coordinates (each point stays one pixel)")
    model = run.add_argument_group("model")
    _add_model_args(model)
    out = run.add_argument_group("outputs")
    out.add_argument("--out", type=Path, required=True, help="output folder")
    out.add_argument("--png-scale", type=float, default=None,
                     help="units per metre in <stem>_depth.png (default: of 1000 = millimetres, 256, 100, 10, 1 the "
                          "first that fits the depth and holds the measured sparse values exactly, else the first "
                          "that fits; recorded in the PNG's depth_scale text chunk)")
    out.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy in pixels, or a JSON/TXT file")
    out.add_argument("--ply", action="store_true", help="also write <stem>.ply point clouds (needs --intrinsics)")
    existing = out.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument("--skip-existing", action="store_true",
                          help="keep outputs that already exist and run only the other images (resumes a folder run)")
    _add_noise_args(run)

    ev = sub.add_parser("eval", help="evaluate on a benchmark split with its protocol (JSON + markdown)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVAL_EPILOG)
    ev.add_argument("--dataset", required=True, help="dataset name (`depthkit ls` lists them)")
    ev.add_argument("--root", type=Path, default=None, help="dataset root folder (not needed for synthetic)")
    ev.add_argument("--split", default=None, help="split to evaluate (default: the split the dataset's protocol evaluates)")
    ev.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                    help="dataset reader option, repeatable, value parsed as YAML (e.g. length=20 for synthetic)")
    _add_model_args(ev)
    ev.add_argument("--out", type=Path, required=True, help="metrics JSON path (a .md table is written beside it)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    ev.add_argument("--dbe-canny", choices=("matlab", "skimage"), default="matlab",
                    help="the DBE's edges: matlab (default) = the iBims-1 paper's (MATLAB's Canny, thresholds relative "
                         "to the strongest gradient); skimage = iBims-1's public Python script's (scikit-image's "
                         "Canny, absolute thresholds), the figures papers that run that script publish")
    ev.add_argument("--dbe-region", choices=("valid", "image"), default="valid",
                    help="where the DBE scores edges: valid (default) = only where the GT is valid; image = the whole "
                         "image against the dataset's annotated edges, as iBims-1's public script does (with "
                         "--dbe-canny skimage: that script's DBE)")
    ev.add_argument("--overwrite", action="store_true",
                    help="discard results already at --out (a rerun otherwise resumes, and refuses when it differs)")
    _add_noise_args(ev)

    tr = sub.add_parser("train", help="train a stage from a YAML recipe (key=value overrides)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EPILOG)
    tr.add_argument("recipe", type=Path,
                    help="recipe YAML: a path, or a shipped recipe such as recipes/tiny/complete.yaml or tiny/complete "
                         "(`depthkit recipes ls`)")
    tr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=200")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    _add_noise_args(tr)

    ic = sub.add_parser("init-checkpoint", help="write a random-weight tiny checkpoint (smoke test of every path)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=INIT_EPILOG)
    ic.add_argument("out", type=Path, help="checkpoint directory to create")
    ic.add_argument("--tiny", action="store_true", required=True, help="tiny random weights (the only kind for now)")
    ic.add_argument("--stages", default=None, help="stages to include (default: every available stage)")
    ic.add_argument("--seed", type=int, default=0, help="random seed of the tiny weights (default 0)")
    ic.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")

    im = sub.add_parser("import-checkpoint", help="convert released SharpDepth / Lotus weights to depthkit's layout",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=IMPORT_EPILOG)
    im.add_argument("--sharpdepth", default=None, help="SharpDepth release: diffusers pipeline folder or hub id")
    im.add_argument("--lotus", default=None, help="Lotus release: diffusers folder or hub id")
    im.add_argument("--out", type=Path, required=True, help="depthkit checkpoint directory to write")
    im.add_argument("--norm", choices=("depth", "disparity"), default=None,
                    help="the release's depth normalisation (default: read from the release name)")
    im.add_argument("--overwrite", action="store_true",
                    help="replace the checkpoint's sharpen/ stage (or write into a non-empty folder)")
    im.add_argument("--processing-resolution", type=int, default=768,
                    help="longest image side (pixels) inference runs at; 0 = the input's size (default 768)")

    sub.add_parser("ls", help="list stages, completion methods, datasets, recipes and checkpoints",
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=LS_EPILOG)

    rc = sub.add_parser("recipes", help="list the shipped training recipes, or copy one to edit",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RECIPES_EPILOG)
    rsub = rc.add_subparsers(dest="recipes_verb", metavar="ACTION", parser_class=_Parser, required=True)
    rsub.add_parser("ls", help="list the shipped recipes")
    cp = rsub.add_parser("cp", help="copy a shipped recipe to a file you can edit")
    cp.add_argument("name", help="recipe name as `depthkit recipes ls` shows it, e.g. tiny/complete")
    cp.add_argument("dest", type=Path, help="file (or existing folder) to copy it to")
    for verb_parser in sub.choices.values():  # usage errors found by a verb name the verb's usage and help
        verb_parser.set_defaults(verb_parser=verb_parser)
    return parser


def _add_model_args(group) -> None:
    from depthkit.dtypes import DTYPE_NAMES

    group.add_argument("--stages", default=None,
                       help="comma-separated stages to run (default: the checkpoint manifest's default_stages, "
                            "complete,sharpen for the embedded default; complete when it names none or the "
                            "completion method is not its own)")
    group.add_argument("--method", default=None, help="completion method (`depthkit ls` lists them)")
    group.add_argument("--checkpoint", default=None, help="checkpoint directory or hub id owner/name (default: embedded)")
    group.add_argument("--device", default="auto",
                       help="auto | cpu | cuda | cuda:N for the learned stages (default auto: CUDA when present; "
                            "classical methods run on the CPU)")
    group.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                       help="weights' dtype for the learned stages (default float32; bfloat16/float16 on CUDA)")
    group.add_argument("--option", action="append", default=[], metavar="STAGE.KEY=VALUE",
                       help="stage option, repeatable, e.g. complete.query_budget=2048 complete.batch_size=64")


def _add_noise_args(parser) -> None:
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--quiet", "-q", action="store_true", help="print only errors and warnings about the data")
    noise.add_argument("--verbose", "-v", action="store_true",
                       help="also show libraries' progress bars, logs and warnings (hidden by default)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    from depthkit.cli_ls import cmd_ls, cmd_recipes

    handler = {"run": _cmd_run, "eval": _cmd_eval, "train": _cmd_train, "init-checkpoint": _cmd_init_checkpoint,
               "import-checkpoint": _cmd_import_checkpoint, "ls": cmd_ls, "recipes": cmd_recipes}[args.verb]
    from depthkit.cli_output import output_policy

    with output_policy(args.verb, verbose=getattr(args, "verbose", False)):
        try:
            code = handler(args, args.verb_parser)
            sys.stdout.flush()  # output still buffered meets a reader that left here, not in the exit's flush
            return code
        except BrokenPipeError:  # the reader stopped early (`depthkit ls | head`): stop quietly, as a shell tool does
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return 141  # 128 + SIGPIPE: what a shell reports for a writer its reader left
        except (ValueError, OSError) as exc:  # bad input, missing files, a hub id asked for with the network off
            from depthkit.cli_output import traceback_asked

            if traceback_asked():
                raise
            print(f"depthkit {args.verb}: error: {exc}", file=sys.stderr)
            return 2


def _cmd_run(args, parser) -> int:
    from depthkit.cli_run import run_command

    return run_command(args, parser, _build_pipeline)


def parse_stage_options(items: list[str]) -> dict[str, dict]:
    """``["complete.query_budget=2048", ...]`` → ``{"complete": {"query_budget": 2048}}`` (values parsed as YAML)."""
    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            raise ValueError(f"--option {item!r} must look like STAGE.KEY=VALUE, e.g. complete.query_budget=2048")
        options.setdefault(stage, {})[name] = _yaml_value(value, f"--option {item!r}")
    return options


def _yaml_value(value: str, where: str):
    """``value`` parsed as YAML with YAML 1.2's numbers (:func:`depthkit.yaml_values.yaml_loader`: ``0100`` is 100,
    not octal 64; ``1:30`` is text, not 90; ``1e3`` is 1000.0), or ``ValueError`` naming ``where`` (the option as
    given) when it is not YAML or is empty (an empty value would read as null, which means something of its own)."""
    import yaml

    from depthkit.yaml_values import yaml_loader

    if not value.strip():
        raise ValueError(f"{where} has no value after '='. Give one, e.g. KEY=2048; KEY=null sets none explicitly "
                         "(what none means is the option's own: see its help).")
    try:
        return yaml.load(value, Loader=yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: the value {value!r} is not valid YAML ({problem}). Values are YAML: a number "
                         "(2048), a word, a list [1, 2] or a mapping {key: 1}; check its brackets and quotes.") from exc


def _check_checkpoint_arg(spec: str) -> None:
    """Refuse a missing ``--checkpoint`` that looks local, listing checkpoints nearby (not taken for a hub id)."""
    from depthkit.checkpoints import MANIFEST, is_hub_id

    path = Path(spec).expanduser()
    if path.exists():
        return
    parent = path.parent
    looks_local = (not is_hub_id(spec) or str(spec).startswith((".", "/", "~"))
                   or (str(parent) not in ("", ".") and parent.exists()))
    if not looks_local:
        return
    base = next((p for p in [parent, *parent.parents] if p.is_dir()), Path("."))
    found = sorted({str(m.parent) for pattern in (MANIFEST, f"*/{MANIFEST}", f"*/*/{MANIFEST}")
                    for m in base.glob(pattern)})[:10]
    nearby = ", ".join(found) if found else f"none under {base}"
    raise ValueError(f"no such checkpoint folder: {spec}. Checkpoints nearby: {nearby}. A training run writes them "
                     "under its run folder (e.g. runs/NAME/final); `depthkit init-checkpoint --tiny DIR` makes one.")


def _build_pipeline(args):
    from depthkit.checkpoints import CheckpointRef
    from depthkit.data.baselines import CLASSICAL_METHODS
    from depthkit.pipeline import Pipeline
    from depthkit.stages import default_stages, parse_stages

    options = parse_stage_options(args.option)
    if args.checkpoint is not None:
        _check_checkpoint_arg(args.checkpoint)
    checkpoint = CheckpointRef.open(args.checkpoint) if args.checkpoint is not None else CheckpointRef.default()
    stages = parse_stages(args.stages) if args.stages is not None else default_stages(checkpoint, args.method, options)
    if args.method in CLASSICAL_METHODS and stages == ("complete",) and args.device not in ("auto", "cpu"):
        print(f"depthkit {args.verb}: note: method {args.method!r} runs on the CPU; --device {args.device} applies "
              "to learned stages only", file=sys.stderr)
    if args.checkpoint is not None:
        if args.method:
            options.setdefault("complete", {})["method"] = args.method
        return Pipeline.from_pretrained(checkpoint, stages=stages, device=args.device, dtype=args.dtype,
                                        stage_options=options)
    return Pipeline(stages=stages, method=args.method, checkpoint=checkpoint, device=args.device, dtype=args.dtype,
                    stage_options=options)


def parse_dataset_options(items: list[str]) -> dict:
    """``["length=20", "layout=h5"]`` → ``{"length": 20, "layout": "h5"}`` (values as YAML)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise ValueError(f"--dataset-option {item!r} must look like KEY=VALUE, e.g. length=20")
        options[key.strip()] = _yaml_value(value, f"--dataset-option {item!r}")
    return options


def _cmd_eval(args, parser) -> int:
    from depthkit import __version__
    from depthkit.checkpoints import checkpoint_identity
    from depthkit.data.datasets import DATASETS, build_dataset
    from depthkit.data.protocols import get_protocol
    from depthkit.evaluate import _protocol_dict, check_metrics_out, evaluate, images_to_evaluate, markdown_table

    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1; received {args.limit}")
    if args.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(DATASETS)}.")
    if args.root is None and DATASETS[args.dataset].needs_root:
        raise ValueError(f"--dataset {args.dataset} needs --root DIR, the folder holding the dataset "
                         f"(see help(depthkit.data.datasets.{DATASETS[args.dataset].__name__}) for its layout).")
    if args.root is not None and not DATASETS[args.dataset].needs_root:
        raise ValueError(f"--dataset {args.dataset} reads no files (it renders its scenes), so --root {args.root} "
                         "would be ignored; leave it out.")
    # a missing or malformed --root: the reader's own error names the path, its layout and where to get the data
    check_metrics_out(args.out)
    reader_options = parse_dataset_options(args.dataset_option)
    try:
        dataset = build_dataset(args.dataset, args.root, split=args.split, **reader_options)
    except TypeError as exc:  # an option the reader does not take
        raise ValueError(f"{exc} (given with --dataset-option)") from exc
    except ValueError as exc:  # a value the reader cannot use (e.g. sparse_seed=abc), unless its message names it
        if not reader_options or any(k in str(exc) for k in reader_options):
            raise
        raise ValueError(f"the {args.dataset} dataset with --dataset-option {reader_options}: {exc}") from exc
    protocol = getattr(dataset, "protocol", None) or get_protocol(args.dataset)
    images_to_evaluate(dataset, args.limit)  # an empty split, said before any model loads
    if args.checkpoint is not None:
        _check_checkpoint_arg(args.checkpoint)
    pipe = _build_pipeline(args)
    from depthkit.stages import ClassicalCompleteStage

    learned = any(not isinstance(stage, ClassicalCompleteStage) for stage in pipe.stages)
    loaded = getattr(pipe.checkpoint, "root", None) if learned else None  # the default's too, without --checkpoint
    fingerprint = {
        "dataset": args.dataset, "root": None if args.root is None else str(args.root.resolve()),
        "split": getattr(dataset, "split", args.split), "reader_options": reader_options,
        "protocol": _protocol_dict(protocol), "method": args.method,
        "checkpoint": checkpoint_identity(loaded), "stages": ",".join(pipe.stage_names),
        "stage_options": parse_stage_options(args.option), "dtype": args.dtype, "depthkit_version": __version__,
    }
    label = args.method or (f"checkpoint {args.checkpoint}" if args.checkpoint else repr(pipe))
    summary = evaluate(pipe, dataset, protocol, args.out, limit=args.limit, label=label, fingerprint=fingerprint,
                       overwrite=args.overwrite, progress=not args.quiet, dbe_canny=args.dbe_canny,
                       dbe_region=args.dbe_region)
    if summary is not None and not args.quiet:
        print(markdown_table({label: summary["mean"]}), end="")
        print(f"depthkit eval: {summary['n_images']} images; wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


TRAINERS = {"complete": "depthkit.complete.train", "sharpen": "depthkit.sharpen.train",
            "lotus": "depthkit.sharpen.train_lotus", "refine": "depthkit.complete.train_refiner"}
TINY_WRITERS = {"complete": "depthkit.complete.checkpoint", "sharpen": "depthkit.sharpen.checkpoint"}


def _optional_module(name: str, what: str):
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise ValueError(f"{what} is not available in this version of depthkit (module {name} is missing).")
    return importlib.import_module(name)


def _cmd_train(args, parser) -> int:
    from depthkit.config import load_recipe
    from depthkit.resources import find_recipe

    recipe = load_recipe(find_recipe(args.recipe), args.overrides)
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
    if args.out.exists() and not args.out.is_dir():
        raise FileExistsError(f"{args.out} is a file, not a folder; give a new folder for the checkpoint (nothing "
                              "was written).")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        what = ("a checkpoint (it holds depthkit.json)" if (args.out / "depthkit.json").is_file()
                else "a folder that is not empty")
        raise FileExistsError(f"{args.out} is {what}; random weights would replace what is there. Choose a new "
                              "folder, or pass --overwrite (nothing was written).")
    options = {}
    for s in stages:
        options[s] = _optional_module(TINY_WRITERS[s], f"tiny {s}").write_tiny(args.out / s, seed=args.seed)
    write_manifest(args.out, options, tiny=True)
    print(f"depthkit init-checkpoint: wrote a random-weight tiny checkpoint with stages {stages} to {args.out}")
    return 0


def _cmd_import_checkpoint(args, parser) -> int:
    if args.sharpdepth is None and args.lotus is None:
        parser.error("give --sharpdepth and/or --lotus")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give the checkpoint folder to write (it is created if missing)")
    module = _optional_module("depthkit.sharpen.importer", "import-checkpoint")
    try:
        module.check_processing_resolution(args.processing_resolution)
    except ValueError as exc:
        parser.error(f"--{exc}")
    module.import_checkpoint(args.out, sharpdepth=args.sharpdepth, lotus=args.lotus, norm=args.norm,
                             processing_resolution=args.processing_resolution or None, overwrite=args.overwrite)
    print(f"depthkit import-checkpoint: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
