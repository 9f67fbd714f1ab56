"""Real frames, for development checks only (never for training): Middlebury's "Aloe" and "Motorcycle".

Usage (from the repository root)::

    python benchmarks/real_frame.py                                 # nearest, guided and the embedded default
    python benchmarks/real_frame.py --checkpoint CKPT --seeds 0 1 2
    python benchmarks/real_frame.py --patterns all                  # every sparse pattern of benchmarks/accuracy.py
    python benchmarks/real_frame.py --patterns stereo_sgbm --option complete.occlusion_fill=left   # a stage option
    python benchmarks/real_frame.py --frame motorcycle --patterns all,stereo_sgbm   # the metric indoor frame

``--frame aloe`` (the default; ``apt-get install opencv-doc`` provides the files): Middlebury 2006 Aloe,
``examples/data/aloeL.jpg`` with ``aloeGT.png`` (8-bit disparity, 0 = unknown, 1282x1110). Depth is ``1 /
disparity`` up to scale, scaled so its median is 1.5 (relative scale only: MAE is in those units), both resized to
320x276 (image: area; disparity: the source pixel under each output pixel's centre, ``cv2.INTER_NEAREST_EXACT``, so
the GT lies where its image does; until session 13 it was ``cv2.INTER_NEAREST``, which takes the top-left source
pixel of each ~4x4 block and put the GT ~0.4 px up and left of the area-averaged image).

``--frame motorcycle`` (``pip install scikit-image``, whose wheel bundles the files; no network): Middlebury 2014
Motorcycle as scikit-image ships it, ``skimage/data/motorcycle_left.png``, ``motorcycle_right.png`` and
``motorcycle_disp.npz`` (float disparity, non-finite = unknown, 741x500: the full images shrunk 4x), used at that size. Its
calibration (:data:`MOTORCYCLE_CALIBRATION`) makes the depth metric: ``f·B / (disparity + doffs)``, 2.1-5.0 m, MAE in
metres; its intrinsics place the LiDAR pattern's beams.

Sparse input: ``--points`` random GT pixels per seed, or with ``--patterns`` each named pattern of
``benchmarks/accuracy.py`` (random 100/500/2000, 64-beam LiDAR, ToF holes, noisy points) drawn from the GT per seed,
and ``stereo_sgbm``: OpenCV's semi-global matcher on the frame's own rectified pair, one run. When the checkpoint's
completer has a dense refiner, a row "refiner as trained" runs it without the per-frame check
(``refine_check=false``). Reported per method: MAE, RMSE (:func:`depthkit.metrics.depth_metrics`) and DBE accuracy
(:func:`~depthkit.metrics.dbe_metrics`; ``--dbe-canny skimage``: on iBims-1's public-script edges) against the GT,
the mean over seeds, and the preservation error
(:func:`~depthkit.metrics.preservation_error`: max |output - sparse| over the measured pixels, in the MAE's units; the
largest over seeds; must be 0). SPEC section 7 gives guided 0.062 and
nearest 0.095 MAE at 500 points on Aloe (seed-dependent).

Writes ``<out>/<name>.json`` and ``<out>/<name>.md`` (``--name``, default ``real_frame`` for Aloe and
``real_frame_<frame>`` for another frame).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts: _results, accuracy
from _results import results_name, run_info, run_main, write_results  # noqa: E402

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OUT = Path(__file__).resolve().parent / "results"


REAL_PATTERNS = {"stereo_sgbm": "OpenCV's semi-global matcher on the frame's own rectified pair"}
"""Sparse inputs only a real frame has, run by name with ``--patterns`` (alone or beside the synthetic names): a
real stereo matcher's map of the frame's own pair, with its real matching errors (:attr:`Frame.stereo`)."""
SGBM_DISPARITY_RANGE = (32, 224)
"""The matcher's disparity search range on Aloe at full size (pixels): the scene's working range, as stereo
benchmarks give each scene's (the GT spans 43-211); below it a match would put a surface far beyond the scene (a
disparity of 1 px is a depth 90 times the median), above it nearer than its nearest object."""
MOTORCYCLE_CALIBRATION = {"f": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline_m": 0.193001}
"""Middlebury 2014 Motorcycle's calibration at scikit-image's size (741x500), as scikit-image's ``stereo_motorcycle``
docstring gives it (the full-size calibration divided by 4): focal length, the left camera's principal point and
``doffs`` (the right principal point's x minus the left's) in pixels, baseline in metres."""
MOTORCYCLE_SIZE = (500, 741)
"""(H, W) of scikit-image's copy, the size :data:`MOTORCYCLE_CALIBRATION` is for."""
MOTORCYCLE_SGBM_RANGE = (0, 64)
"""The matcher's disparity search range on Motorcycle (pixels, 741x500): the GT spans 7.2-59.9. Matches below 1 px
(beyond 6.0 m, past the scene's back wall at 5.0 m) are dropped as :func:`disparity_to_depth`'s default drops
them."""
_MOTORCYCLE_FILES = ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz")


def _files(data: Path | None, install: str, *names: str) -> list[Path]:
    hint = f"{install}, or pass --data DIR holding {', '.join(names)}."
    if data is None:
        raise SystemExit(f"real_frame: the frame's files are not installed; {hint}")
    paths = [Path(data) / n for n in names]
    if not all(p.is_file() for p in paths):
        raise SystemExit(f"real_frame: {' / '.join(map(str, paths))} not found; {hint}")
    return paths


def _to_depth(disp, size: tuple[int, int], scale: float | None = None):
    """Full-size disparity (0 = unknown) → ``(HxW float32 depth at size (H, W), the scale)``: the source pixel under
    each output pixel's centre, where the area-averaged image is centred too (plain INTER_NEAREST takes each block's
    top-left pixel: GT ~0.4 px up and left of the image at 320x276), depth = scale / disparity, the scale making the
    median 1.5 unless given."""
    import cv2
    import numpy as np

    disp = cv2.resize(disp.astype(np.float32), size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    depth = np.where(disp > 0, 1.0 / np.maximum(disp, 1e-6), 0).astype(np.float32)
    scale = 1.5 / float(np.median(depth[depth > 0])) if scale is None else scale
    return (depth * scale).astype(np.float32), scale


_ALOE_INSTALL = "install Debian's opencv-doc package (apt-get install opencv-doc)"


def load_aloe(data: Path = DATA, size: tuple[int, int] = (276, 320)):
    """(HxWx3 uint8 RGB, HxW float32 depth with median 1.5, 0 = unknown) at ``size`` (H, W)."""
    import cv2

    left, gt = _files(data, _ALOE_INSTALL, "aloeL.jpg", "aloeGT.png")
    image = cv2.resize(cv2.cvtColor(_read_bgr(left), cv2.COLOR_BGR2RGB), size[::-1],
                       interpolation=cv2.INTER_AREA)
    return image, _to_depth(cv2.imread(str(gt), cv2.IMREAD_UNCHANGED), size)[0]


def aloe_stereo(data: Path = DATA, size: tuple[int, int] = (276, 320)):
    """HxW float32 depth of the Aloe pair as a stereo rig measures it, in :func:`load_aloe`'s units (0 = no match):
    OpenCV's semi-global block matcher (:func:`depthkit.data.stereo_match.sgbm_disparity`: 5x5 blocks, disparities
    in :data:`SGBM_DISPARITY_RANGE` at full size) with its left-right consistency check (1 px; no effect with OpenCV
    5.0), uniqueness (10 %) and speckle (100 px, 2 px) filters, so occlusions,
    textureless patches and the band left of the matcher's range are missing and the matched values carry its
    errors. Its disparities are in the GT's units (the median ratio over pixels both have is 1.001), so the GT's
    scale turns them into depth; resampled to ``size`` as the GT is."""
    import cv2

    from depthkit.data.stereo_match import sgbm_disparity

    left, right, gt = _files(data, _ALOE_INSTALL, "aloeL.jpg", "aloeR.jpg", "aloeGT.png")
    low, high = SGBM_DISPARITY_RANGE
    disp = sgbm_disparity(_read_bgr(left), _read_bgr(right), low, high - low)  # 0 = no match
    scale = _to_depth(cv2.imread(str(gt), cv2.IMREAD_UNCHANGED), size)[1]
    return _to_depth(disp, size, scale)[0]


def skimage_data() -> Path | None:
    """scikit-image's bundled data folder, found without importing scikit-image; None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    return Path(spec.origin).parent / "data" if spec is not None and spec.origin else None


_MOTORCYCLE_INSTALL = "pip install scikit-image (its wheel bundles them)"


def _motorcycle_depth(disp):
    """Disparity at 741x500 (pixels; non-finite or below 1 = unknown: the file marks unknown pixels with inf) → HxW
    float32 metres by the frame's calibration."""
    from depthkit.data.stereo_match import disparity_to_depth

    c = MOTORCYCLE_CALIBRATION
    return disparity_to_depth(disp, c["f"] * c["baseline_m"], doffs_px=c["doffs"])


def _motorcycle_paths(data: Path | None) -> list[Path]:
    """The frame's three files in ``data`` (default: :func:`skimage_data`); SystemExit saying how to get them."""
    return _files(skimage_data() if data is None else data, _MOTORCYCLE_INSTALL, *_MOTORCYCLE_FILES)


def _read_bgr(path: Path):
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"real_frame: {path} is not an image OpenCV can read; reinstall the package it came from.")
    return image


def load_motorcycle(data: Path | None = None, size: tuple[int, int] | None = None):
    """(HxWx3 uint8 RGB, HxW float32 metres, 0 = unknown) of Middlebury 2014 Motorcycle at scikit-image's 500x741
    (``data``: the folder with its files, default :func:`skimage_data`; ``size`` is unused: the frame is used at
    the size its calibration is for)."""
    import cv2
    import numpy as np

    left, _, gt = _motorcycle_paths(data)
    image = cv2.cvtColor(_read_bgr(left), cv2.COLOR_BGR2RGB)
    with np.load(gt) as archive:
        disp = archive[archive.files[0]]
    if disp.shape != image.shape[:2] or image.shape[:2] != MOTORCYCLE_SIZE:
        raise SystemExit(f"real_frame: received an image of {image.shape[:2]} pixels (rows, columns) and a disparity "
                         f"map of {disp.shape} ({left}, {gt}); the frame's calibration is for scikit-image's "
                         f"{MOTORCYCLE_SIZE} copy: use the files of one scikit-image install.")
    return image, _motorcycle_depth(disp)


def motorcycle_stereo(data: Path | None = None, size: tuple[int, int] | None = None):
    """HxW float32 metres of the Motorcycle pair as a stereo rig measures it (0 = no match): the matcher of
    :func:`aloe_stereo` over :data:`MOTORCYCLE_SGBM_RANGE`, its disparities turned into depth by the frame's
    calibration."""
    from depthkit.data.stereo_match import sgbm_disparity

    left, right, _ = _motorcycle_paths(data)
    low, high = MOTORCYCLE_SGBM_RANGE
    return _motorcycle_depth(sgbm_disparity(_read_bgr(left), _read_bgr(right), low, high - low))


def _motorcycle_intrinsics(height: int, width: int):
    from depthkit.geometry import Intrinsics

    c = MOTORCYCLE_CALIBRATION
    return Intrinsics(fx=c["f"], fy=c["f"], cx=c["cx"], cy=c["cy"])


def _fov_intrinsics(height: int, width: int):
    from depthkit.data.synthetic import intrinsics_from_fov

    return intrinsics_from_fov(height, width, 60.0)


class Frame(NamedTuple):
    """One real frame: its report's title, the units of its MAE, where its files are by default (a callable: None
    when they are not installed), its loader (data folder → RGB, depth), its stereo map (data folder, (H, W) →
    depth) and its intrinsics ((H, W) → Intrinsics, for the LiDAR pattern's beams)."""

    title: str
    units: str
    data: Callable[[], Path | None]
    load: Callable
    stereo: Callable
    intrinsics: Callable


FRAMES = {
    "aloe": Frame("Middlebury 2006 Aloe (opencv-doc), 320x276, depth median 1.5",
                  "the frame's relative units (depth median 1.5)", lambda: DATA, load_aloe, aloe_stereo,
                  _fov_intrinsics),
    "motorcycle": Frame("Middlebury 2014 Motorcycle (scikit-image's copy), 741x500, metric (2.1-5.0 m)", "metres",
                        skimage_data, load_motorcycle, motorcycle_stereo, _motorcycle_intrinsics),
}
"""``--frame`` names → :class:`Frame`. Aloe's intrinsics are a 60° field of view (its calibration is not shipped);
Motorcycle's are its calibration."""


def frame_patterns(text: str) -> dict:
    """A ``--patterns`` value → ``{name: spec}`` in order: the synthetic names of benchmarks/accuracy.py (or ``all``,
    :func:`accuracy.pattern_names`) first, then this frame's own (:data:`REAL_PATTERNS`). ValueError names both
    lists."""
    from accuracy import SYNTHETIC_PATTERNS, pattern_names

    names = [n for n in text.split(",") if n]
    synthetic = [n for n in names if n not in REAL_PATTERNS]
    try:
        synthetic = pattern_names(",".join(synthetic)) if synthetic or not names else []
    except ValueError as err:
        raise ValueError(f"{err} On this frame {', '.join(REAL_PATTERNS)} is its own real pair's map.") from None
    return {name: REAL_PATTERNS[name] if name in REAL_PATTERNS else SYNTHETIC_PATTERNS[name]
            for name in [*synthetic, *(n for n in names if n in REAL_PATTERNS)]}


def checkpoint_rows(ref, stages: str, options: list[str]) -> dict:
    """The rows of checkpoint ``ref`` (a :class:`~depthkit.checkpoints.CheckpointRef`, or None: no rows) run with
    ``stages`` (``--stages``) and ``options`` (``--option`` texts, each row taking those of the stages it runs, named
    in it): ``{name: Pipeline}`` — complete; when its completer has a dense refiner, the refiner as trained
    (``refine_check`` false; left out when an option sets ``refine_check``); complete + sharpen when asked and
    present. ValueError for options without a checkpoint, for a stage not run, or malformed or repeated ones."""
    from accuracy import parse_options, row_options

    from depthkit import Pipeline

    given = parse_options(options)
    if given and ref is None:
        raise ValueError("--option applies to a checkpoint's rows, and there is none: give --checkpoint.")
    if ref is None:
        return {}
    run_stages = [s for s in stages.split(",") if s in ref.stages or s == "complete"]
    unused = [s for s in given if s not in run_stages]
    if unused:
        raise ValueError(f"--option names the stage(s) {unused}, which this run does not run (--stages "
                         f"{','.join(run_stages)}).")
    rows = {}

    def add(row, run, complete_extra=None):  # the row's --options, and complete_extra over complete's
        label, chosen = row_options(options, run)
        chosen = {s: dict(chosen.get(s, {})) for s in run}
        chosen["complete"].update(complete_extra or {})
        rows[f"{ref.root.name}{label}: {row}"] = Pipeline(stages=run, checkpoint=ref,
                                                          stage_options={s: o for s, o in chosen.items() if o})

    add("complete", ("complete",))
    settings = ref.root / "complete" / "complete.json"
    if (settings.is_file() and json.loads(settings.read_text()).get("refiner")
            and "refine_check" not in given.get("complete", {})):
        add("complete, refiner as trained", ("complete",), {"refine_check": False})
    if "sharpen" in run_stages:
        add("complete + sharpen", ("complete", "sharpen"))
    return rows


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``p.error`` before any work for a seed given twice (its draws would count twice in the mean over seeds),
    ``--points`` < 1 and a ``--stages`` name that is no stage (a typo would silently drop its row; a stage the
    checkpoint lacks is left out, as before)."""
    from depthkit.stages import STAGE_ORDER

    twice = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if twice:
        p.error(f"--seeds must be distinct (each seed's draw counts once in the mean over seeds); received "
                f"{' '.join(map(str, args.seeds))} (repeated: {' '.join(map(str, twice))}).")
    if args.points < 1:
        p.error(f"--points must be >= 1 random point per seed; received {args.points}.")
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGE_ORDER]
    if unknown or not names:
        p.error(f"--stages takes comma-separated stage names of {', '.join(STAGE_ORDER)}; received "
                f"{args.stages!r}" + (f" (unknown: {', '.join(unknown)})." if unknown else "."))


def main(argv: list[str] | None = None) -> int:
    from accuracy import add_dbe_canny_option

    p = argparse.ArgumentParser(description="Real-frame development check on Middlebury's Aloe (opencv-doc) or "
                                            "Motorcycle (scikit-image).")
    p.add_argument("--frame", choices=sorted(FRAMES), default="aloe",
                   help="aloe (default: relative depth, from opencv-doc) or motorcycle (metric, from scikit-image)")
    p.add_argument("--data", type=Path, default=None, help="the folder with the frame's files (default: where its "
                   "package installs them)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint to add (default: the embedded default, if any)")
    p.add_argument("--stages", default="complete,sharpen")
    p.add_argument("--option", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="a stage option for the checkpoint's rows, over its manifest's (repeatable; as `depthkit run "
                        "--option`); the rows' names list them")
    p.add_argument("--points", type=int, default=500, help="random points per seed (without --patterns)")
    p.add_argument("--patterns", default=None, help="comma-separated names of benchmarks/accuracy.py's "
                   "SYNTHETIC_PATTERNS, or 'all'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_dbe_canny_option(p)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--name", type=results_name, default=None,
                   help="file stem of the results in --out (default real_frame for aloe, real_frame_<frame> for "
                        "another; e.g. real_frame_stereo)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    check_args(p, args)
    import numpy as np

    from depthkit import Pipeline
    from depthkit.checkpoints import CheckpointRef, checkpoint_identity
    from depthkit.data.sparse import make_sparse, sample_random_points
    from depthkit.metrics import dbe_metrics, depth_metrics, preservation_error

    if args.patterns is None:
        patterns = {f"random {args.points}": None}
    else:
        try:
            patterns = frame_patterns(args.patterns)
        except ValueError as err:
            p.error(str(err))
    ref = CheckpointRef.open(args.checkpoint) if args.checkpoint else CheckpointRef.default()  # before the frame
    frame = FRAMES[args.frame]
    data = frame.data() if args.data is None else args.data
    stem = args.name or ("real_frame" if args.frame == "aloe" else f"real_frame_{args.frame}")
    image, depth = frame.load(data)
    intrinsics = frame.intrinsics(*depth.shape)
    methods = {"nearest": Pipeline(method="nearest"), "guided": Pipeline(method="guided")}
    try:
        methods.update(checkpoint_rows(ref, args.stages, args.option))
    except ValueError as err:
        p.error(str(err))
    rows = {pattern: {name: [] for name in methods} for pattern in patterns}
    for pattern, spec in patterns.items():
        for seed in args.seeds[:1] if pattern in REAL_PATTERNS else args.seeds:  # a real map has no draw
            if pattern in REAL_PATTERNS:
                sparse = frame.stereo(data, depth.shape)
            elif spec is None:
                sparse = sample_random_points(depth, args.points, seed=seed)
            else:
                sparse = make_sparse(depth, spec[0], seed, intrinsics=intrinsics, **spec[1]).astype(np.float32)
            for name, pipe in methods.items():
                out = pipe(image, sparse)
                m = {**depth_metrics(out.depth, depth, depth > 0),
                     **dbe_metrics(out.depth, depth, valid=depth > 0, canny=args.dbe_canny)}
                rows[pattern][name].append({**{k: float(m[k]) for k in ("mae", "rmse", "dbe_acc")},
                                            "preservation": preservation_error(out.depth, sparse)})
    # means over seeds; the preservation error is the largest (a measured value changed in any seed shows)
    table = {pattern: {name: {k: float((np.max if k == "preservation" else np.mean)([r[k] for r in rs])) for k in rs[0]}
                       for name, rs in by_name.items()} for pattern, by_name in rows.items()}
    report = {"benchmark": "real_frame", "frame": frame.title, "frame_name": args.frame, "units": frame.units,
              "intrinsics": [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy],
              **run_info(argv, __file__), "points": args.points, "patterns": list(patterns), "seeds": args.seeds,
              "dbe_canny": args.dbe_canny,
              # which weights the checkpoint rows ran (the labels name only the folder): its path and files' hash
              "checkpoint": None if ref is None else checkpoint_identity(ref.root), "stages": args.stages,
              "options": list(args.option), "mean": table, "per_seed": rows}
    what = f"{args.points} random points" if args.patterns is None else "sparse patterns as in benchmarks/accuracy.py"
    if any(name in REAL_PATTERNS for name in patterns):
        what += " (" + "; ".join(f"{n}: {REAL_PATTERNS[n]}, one run" for n in patterns if n in REAL_PATTERNS) + ")"
    lines = [f"## Real frame: {report['frame']}", "", f"{report['date']}, `{report['command']}`; {what}, mean over "
             f"seeds {args.seeds}. Development check only, never trained on. MAE and RMSE in {frame.units}; change of "
             "MAE against guided in brackets; preservation: max |output - sparse| over the measured pixels, largest "
             "over seeds, must be 0." + ("" if args.dbe_canny == "matlab" else " DBE edges found as iBims-1's public "
                                         "Python script finds them (`--dbe-canny skimage`), not as its paper."), "",
             "| pattern | method | MAE | RMSE | DBE-acc (px) | preservation |", "|---|---|---:|---:|---:|---:|"]
    for pattern, by_name in table.items():
        base = by_name["guided"]["mae"]
        for name, t in by_name.items():
            lines.append(f"| {pattern} | {name} | {t['mae']:.4f} ({100 * (t['mae'] / base - 1):+.1f} %) | "
                         f"{t['rmse']:.4f} | {t['dbe_acc']:.3f} | {t['preservation']:.2g} |")
    write_results(args.out, stem, report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
