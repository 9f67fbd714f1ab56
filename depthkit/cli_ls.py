"""``depthkit ls`` and ``depthkit recipes``: what is installed (stages, completion methods, datasets, recipes,
checkpoints, and how the embedded default measured) and copying a shipped recipe to edit. Light: nothing heavy is
imported."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cmd_ls", "cmd_recipes", "describe_default"]


def cmd_ls(args, parser) -> int:
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
    from depthkit.resources import recipes_dir

    print(f"recipes (depthkit train NAME; copy one to edit: depthkit recipes cp NAME DEST) in {recipes_dir()}:")
    _print_recipes("  ")
    print(f"checkpoints in {embedded_checkpoints_dir()}:")
    cks, default = available_checkpoints(), default_checkpoint()
    for p in cks:
        print(f"  {p.name}{'  (embedded default)' if p == default else ''}")
    if not cks:
        print("  none yet (the learned stages' embedded default is not trained yet)")
    if default is not None:
        for line in describe_default(default):
            print(line)
    return 0


def describe_default(root: Path) -> list[str]:
    """What the embedded default runs and how it measured against ``guided`` (the manifest's ``quality``, written
    by checkpoints/assemble_default.py from benchmarks/results/accuracy.json)."""
    from depthkit.checkpoints import CheckpointError, load_manifest
    from depthkit.complete.settings import COMPLETE_JSON, CompleteSettings

    manifest = load_manifest(root)
    method = manifest["stages"].get("complete", {}).get("method", "sdim")
    settings = root / "complete" / COMPLETE_JSON
    try:  # read as the completer's loader reads it: what it would refuse is not described as running
        refined = settings.is_file() and bool(CompleteSettings.read(settings).refiner)
    except ValueError as exc:
        raise CheckpointError(f"{exc} Re-export the checkpoint.") from None
    learned = "tiny SDIM completer" + (" + dense refiner" if refined else "")
    lines = [f"the default (no --checkpoint): complete = {method}"
             + (f" ({learned}: answers correct the guided map"
                + (", the refiner corrects every pixel as far as the frame's own points support)" if refined else ")")
                if method == "sdim" else " (classical)")
             + (f"; sharpen = tiny SharpDepth ({_sharpen_default(manifest)})" if "sharpen" in manifest["stages"] else "")]
    if refined:
        lines.append("  its gain is measured with the language model's answers off too (--option complete.query_budget=0: "
                     "the refiner alone), checkpoints/README.md")
    if method == "sdim" and manifest["stages"].get("complete", {}).get("hole_fill"):
        lines.append("  a dense sensor's holes at depth edges (ToF, stereo): their far side gets the far surface's depth "
                     "where the image's colours split them (hole_fill; --option complete.hole_fill=null turns it off)")
    if method == "sdim" and manifest["stages"].get("complete", {}).get("occlusion_fill") == "auto":
        lines.append("  a stereo matcher's map: where its holes show the reference camera's side, the strips that camera "
                     "alone sees get the background's depth (occlusion_fill=auto; =left / =right names the side, =null "
                     "turns it off)")
    elif method == "sdim" and manifest["stages"].get("complete", {}).get("occlusion_fill") is None:
        lines.append("  a stereo matcher's map (left camera the reference): add --option complete.occlusion_fill=left "
                     "(measured: README, Benchmarks)")
    if manifest["stages"].get("sharpen", {}).get("keep_placed"):
        lines.append("  the sharpener leaves the depth these fills placed (keep_placed; --option sharpen.keep_placed=false "
                     "lets it change them)")
    if method != "sdim" and (root / "complete").is_dir():
        lines.append(f"  its learned completer ({learned}) is shipped but not on by default: it did not beat guided on "
                     "every pattern below; run it with --method sdim")
    quality = manifest.get("quality")
    if not isinstance(quality, dict) or not isinstance(quality.get("complete"), dict):
        return lines + ["  quality: not measured (see benchmarks/results/accuracy.md)"]
    try:
        return lines + _quality_lines(quality)
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        return lines + [f"  quality: unreadable in {root / 'depthkit.json'} ({type(exc).__name__}: {exc}); rewrite it "
                        "with checkpoints/assemble_default.py --accuracy (checkpoints/README.md)"]


def _quality_lines(quality: dict) -> list[str]:
    """The manifest's ``quality`` (written by checkpoints/assemble_default.py) as ``depthkit ls`` prints it; a
    malformed entry raises (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) for the caller to
    report."""
    lines = []
    n = "/".join(str(k) for k in quality.get("n_images_per_pattern") or []) or "?"
    lines.append(f"  learned completer vs guided, MAE on the synthetic test split ({n} images per pattern):")
    for pattern, q in quality["complete"].items():
        lines.append(f"    {pattern:<11} {q['mae']:.4f} m vs {q['guided_mae']:.4f} m ({100 * q['change']:+.2f} %)")
    if quality.get("sharpen"):
        lines.append("  sharpener on the completer's output (DBE-acc px, MAE m; input -> output):")
        for pattern, q in quality["sharpen"].items():
            lines.append(f"    {pattern:<11} DBE {q['input_dbe_acc']:.3f} -> {q['dbe_acc']:.3f}, "
                         f"MAE {q['input_mae']:.4f} -> {q['mae']:.4f} ({100 * (q['mae'] / q['input_mae'] - 1):+.1f} %)")
        lines.append("  sharpener " + ("meets" if quality.get("sharpen_passes") else "does not meet")
                     + " its bar (better DBE, MAE within 2 % of its input, on every pattern)")
    lines.append(f"  measured by: {quality.get('command')} ({quality.get('date')}); table: "
                 "benchmarks/results/accuracy.md")
    return lines


def _sharpen_default(manifest: dict) -> str:
    """Whether a run given no --stages sharpens (the manifest's ``default_stages``), and how to change that."""
    if "sharpen" in (manifest.get("default_stages") or ()):
        config = manifest["stages"]["sharpen"].get("config")
        scan = config.get("keep_scanline_frames") if isinstance(config, dict) else None
        return ("run by default: depthkit run without --stages runs both stages" + (
            ", and LiDAR frames (scan lines) come back as completed" if scan else "")
            + "; --stages complete for the completion alone")
    return "run it with --stages complete,sharpen"


def _recipe_title(path: Path) -> str:
    """A recipe's first comment line (what it trains), or its kind."""
    for line in path.read_text().splitlines():
        text = line[1:].strip() if line.startswith("#") else None
        if text and not line.startswith("#  ") and not text.startswith(("depthkit ", "accelerate ", "(", "--")):
            return text[:90]
    return ""


def _print_recipes(indent: str) -> None:
    """The shipped training recipes, then the accelerate launch configs (not recipes: `depthkit train` refuses them)."""
    from depthkit.resources import list_launch_configs, list_recipes

    for name, path in list_recipes().items():
        print(f"{indent}{name:<28} {_recipe_title(path)}")
    print(f"{indent}accelerate launch configs (accelerate launch --config_file PATH -m depthkit.cli train RECIPE):")
    for name, path in list_launch_configs().items():
        print(f"{indent}  {name:<26} {path}")


def cmd_recipes(args, parser) -> int:
    import shutil

    from depthkit.resources import find_recipe

    if args.recipes_verb == "ls":
        _print_recipes("")
        return 0
    src = find_recipe(args.name)
    dest = args.dest / src.name if args.dest.is_dir() else args.dest
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another destination (nothing was copied).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"depthkit recipes: copied {src} to {dest}; edit it, then: depthkit train {dest}")
    return 0
