"""The ``depthkit run`` verb: find the inputs (one image or a folder), read and check them, refuse to replace
existing outputs unless told (``--overwrite`` / ``--skip-existing``), then build the pipeline, run it image by
image and write ``<stem>_depth.npy``, ``<stem>_depth.png``, ``<stem>_color.png`` (and ``<stem>.ply``).

Every input file is read by this module (arrays go to the pipeline), and a single image's files are read before
any model loads. Each image prints one line (time, depth range, files written); a bad file in a folder is reported
once and skipped.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path


def _find_pairs(input_dir: Path, sparse_dir: Path | None) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    from depthkit.io import IMAGE_SUFFIXES

    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input-dir {input_dir} is not a folder")
    sparse_dir = sparse_dir or input_dir
    if not sparse_dir.is_dir():
        raise FileNotFoundError(f"--sparse-dir {sparse_dir} is not a folder")
    # not is_file(): a link to a missing file is an input that fails, said in the summary, not one left out
    files = [p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
    stems = {p.stem for p in files}
    # sparse maps, and depthkit's own outputs (NAME_depth.png / NAME_color.png beside NAME's image): not inputs;
    # a dataset's own frame_color.png (without frame.png) is, and so is NAME_color.jpg (depthkit writes no .jpg)
    images = sorted(p for p in files if not p.stem.endswith("_sparse")
                    and not (p.suffix == ".png" and any(p.stem.endswith(tag) and p.stem[:-len(tag)] in stems
                                                        for tag in ("_depth", "_color"))))
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {input_dir}"
                                + (" other than sparse maps (NAME_sparse.*) and depthkit's outputs" if files else ""))
    _refuse_shared_stems(input_dir, images)
    pairs, missing = [], []
    same_folder = sparse_dir.resolve() == input_dir.resolve()  # however each is spelled: an image is not its own map
    for img in images:
        candidates = [sparse_dir / f"{img.stem}_sparse{ext}" for ext in (".npy", ".png")]
        if not same_folder:
            candidates += [sparse_dir / f"{img.stem}{ext}" for ext in (".npy", ".png")]
        found = [c for c in candidates if c.is_file() or c.is_symlink()]  # a broken link fails when read
        pairs.append((img, found[0] if len(found) == 1 else None))
        if not found:
            missing.append((img.name, "no sparse file NAME_sparse.npy|png found"))
        elif len(found) > 1:
            missing.append((img.name, f"{len(found)} sparse files ({', '.join(c.name for c in found)}); keep one"))
    return pairs, missing


def _refuse_shared_stems(input_dir: Path, images: list[Path]) -> None:
    """Refuse (``ValueError``, before anything runs) images whose outputs would overwrite each other in one run:
    ``x.png`` and ``x.jpg`` both write ``x_depth.npy``... (letter case aside, as on macOS and Windows)."""
    by_stem: dict[str, list[str]] = {}
    for img in images:
        by_stem.setdefault(img.stem.casefold(), []).append(img.name)
    shared = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
    if shared:
        raise ValueError(f"--input-dir {input_dir} holds images that share a name: {'; '.join(shared[:5])}"
                         f"{f' (and {len(shared) - 5} more)' if len(shared) > 5 else ''}. Their outputs "
                         "(NAME_depth.npy, NAME_depth.png, NAME_color.png) would overwrite each other. Rename or move "
                         "all but one of each; nothing was run.")


def output_paths(out_dir: Path, stem: str, ply: bool = False) -> list[Path]:
    """The files ``depthkit run`` writes for input ``stem``."""
    names = [f"{stem}_depth.npy", f"{stem}_depth.png", f"{stem}_color.png"] + ([f"{stem}.ply"] if ply else [])
    return [out_dir / n for n in names]


def write_outputs(out_dir: Path, stem: str, depth, image=None, png_scale: float | None = None,
                  intrinsics=None, ply: bool = False, measured=None) -> list[Path]:
    """Write ``<stem>_depth.npy``, ``<stem>_depth.png`` (uint16, scale in its ``depth_scale`` text chunk; None =
    chosen to fit, holding the ``measured`` depths (metres, 0 = none) exactly where a fitting scale can),
    ``<stem>_color.png`` and optionally ``<stem>.ply``. The PNG scale is checked first, so a depth
    that cannot fit (or would round to 0 at ``png_scale``) raises before any file is written; if a later write
    fails, the files this call wrote are removed (a result is whole or absent)."""
    from depthkit import io

    # checked (and chosen: one that holds the ``measured`` depths exactly, when one fits) before any file is written
    what = ("the output depth (a completion may reach beyond the sparse input's deepest value, which --png-scale was "
            "checked against before the model ran)" if png_scale is not None and measured is not None else "depth")
    png_scale = io.choose_png_scale(depth, png_scale, what=what, exact=measured)
    writers = [(f"{stem}_depth.npy", lambda p: io.write_depth_npy(p, depth)),
               (f"{stem}_depth.png", lambda p: io.write_depth_png16(p, depth, scale=png_scale)),
               (f"{stem}_color.png", lambda p: io.write_colorized(p, depth))]
    if ply:
        writers.append((f"{stem}.ply", lambda p: io.write_point_cloud(p, depth, intrinsics, image=image)))
    paths: list[Path] = []
    try:
        for name, write in writers:
            paths.append(write(out_dir / name))
    except BaseException:  # no partial result: --skip-existing would take it for a finished one
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    return paths


def _bundled(path: Path | None, what: str) -> Path | None:
    """``examples/...`` given from a folder without it: the example shipped with depthkit (said on stderr)."""
    if path is None or path.exists() or path.is_absolute() or path.parts[:1] != ("examples",):
        return path
    from depthkit.resources import examples_dir

    candidate = examples_dir().joinpath(*path.parts[1:])
    if candidate.is_file():
        print(f"depthkit run: {what} {path} is not here; using the example shipped with depthkit: {candidate}",
              file=sys.stderr)
        return candidate
    return path


def _read_inputs(img_path: Path, sparse_path: Path | None, depth_path: Path | None, args):
    """Read and check one input triple: image HxWx3 uint8, sparse and depth HxW float32 metres (or None). The sparse
    map's measurements must fit the depth PNG (the output keeps them) at ``--png-scale``, or at some scale when it is
    not given; checked before the model runs."""
    from depthkit.io import choose_png_scale, read_depth, read_image, resize_sparse

    image = read_image(img_path)
    maps = []
    for path, what in ((sparse_path, "sparse"), (depth_path, "depth")):
        arr = None if path is None else read_depth(path, depth_scale=args.depth_scale, what=what)
        if arr is not None and args.resize_sparse and arr.shape != image.shape[:2]:
            if what == "depth":  # scattering would leave a dense map mostly holes
                raise ValueError(f"--resize-sparse scatters sparse points; the dense --depth {Path(path).name} is "
                                 f"{arr.shape[1]}x{arr.shape[0]} and the image {image.shape[1]}x{image.shape[0]}. "
                                 "Resize the depth map to the image's size first (e.g. nearest-neighbour), or pass "
                                 "the matching image.")
            arr = resize_sparse(arr, image.shape[:2], what=what)
        maps.append(arr)
    if maps[0] is not None:  # without --png-scale: one must exist that holds them (a 70 km stray value does not)
        choose_png_scale(maps[0], args.png_scale, what=f"sparse {Path(sparse_path).name}")
    return image, maps[0], maps[1]


def _say_odd_principal_point(intrinsics, shape: tuple[int, int]) -> bool:
    """Say on stderr (and return True) when the principal point lies far outside an image of ``shape`` (H, W): more
    than half the image beyond an edge, as when fx,fy,cx,cy were given in another order or for another resolution;
    the point cloud would be skewed. Intrinsics that look divided by the image size (focal lengths under 2 px, the
    principal point within [0, 1.5] px) are said too, scaled to this image."""
    h, w = shape
    k = intrinsics
    if k.fx < 2 and k.fy < 2 and 0 <= k.cx <= 1.5 and 0 <= k.cy <= 1.5 and min(h, w) >= 8:
        print(f"depthkit run: --intrinsics {k.fx:g},{k.fy:g},{k.cx:g},{k.cy:g} look normalised by the image size "
              f"(fractions, not pixels): a focal length under 2 px would make the point cloud hundreds of times too "
              f"wide. For this {w}x{h} image: --intrinsics {k.fx * w:.6g},{k.fy * h:.6g},{k.cx * w:.6g},"
              f"{k.cy * h:.6g} (the point cloud is written as given)", file=sys.stderr)
        return True
    if intrinsics.fits(shape):
        return _say_other_resolution(intrinsics, shape)
    print(f"depthkit run: the principal point ({intrinsics.cx:g}, {intrinsics.cy:g}) lies far outside the {w}x{h} "
          "image; check --intrinsics: the order is fx,fy,cx,cy in pixels of this image (the point cloud is written "
          "as given)", file=sys.stderr)
    return True


def _say_other_resolution(intrinsics, shape: tuple[int, int]) -> bool:
    """Say on stderr (and return True) when the principal point is off the centre of an image of ``shape`` (H, W) by
    the same factor k across and down, k outside [0.75, 1.33] (a camera's own offset is a few percent): intrinsics
    of the same camera at k times this size (a sensor's full resolution for a resized photo). The message gives them
    scaled to this image."""
    h, w = shape
    kx, ky = (intrinsics.cx + 0.5) / (w / 2), (intrinsics.cy + 0.5) / (h / 2)  # 1, 1: the centre of this image
    k = (kx + ky) / 2
    if k < 0.2 or 0.75 <= k <= 1.33 or abs(kx - ky) > 0.1 * k:
        return False
    scaled = (f"{intrinsics.fx / k:.6g},{intrinsics.fy / k:.6g},{(intrinsics.cx + 0.5) / k - 0.5:.6g},"
              f"{(intrinsics.cy + 0.5) / k - 0.5:.6g}")
    print(f"depthkit run: the principal point ({intrinsics.cx:g}, {intrinsics.cy:g}) is {k:.3g}x as far from the "
          f"corner as the centre of the {w}x{h} image, across and down: --intrinsics look like the same camera's at "
          f"{k:.3g}x this size (a sensor's full resolution?). For this image resized from it: --intrinsics {scaled} "
          "(the point cloud is written as given)", file=sys.stderr)
    return True


def _say_sideways_intrinsics(intrinsics, img_path: Path, shape: tuple[int, int]) -> bool:
    """Say on stderr (and return True) when ``img_path`` was turned upright by a 90-degree EXIF orientation (tags 5-8)
    into ``shape`` (H, W) and the principal point lies nearer the centre of the image as stored (sideways) than of
    the image as read: intrinsics for the stored pixels, whose point cloud would be skewed. For tags 6 and 8 the
    message gives the values for the image as read (fx and fy swapped, the principal point turned with the
    pixels)."""
    from depthkit.orientation import ORIENTATIONS, exif_orientation

    tag = exif_orientation(img_path)
    h, w = shape
    if tag not in (5, 6, 7, 8) or abs(h - w) < 0.05 * min(h, w):  # (near-)square: the two centres say nothing
        return False
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    # pixel centres are whole numbers: an H x W image's centre is ((W - 1) / 2, (H - 1) / 2)
    if math.hypot(cx - (h - 1) / 2, cy - (w - 1) / 2) >= math.hypot(cx - (w - 1) / 2, cy - (h - 1) / 2):
        return False
    turned = {6: (fy, fx, w - 1 - cy, cx), 8: (fy, fx, cy, h - 1 - cx)}.get(tag)
    advice = (f" (for these values as the stored photo's: --intrinsics {','.join(f'{v:.6g}' for v in turned)})"
              if turned else "")
    print(f"depthkit run: {Path(img_path).name} was read upright by its EXIF orientation {tag} ({ORIENTATIONS[tag]}) "
          f"as {w}x{h} (WxH), but the principal point ({cx:g}, {cy:g}) is nearer the centre of the photo as "
          f"stored ({h}x{w}, sideways): --intrinsics look like the stored photo's. Give them for the image as read: fx and "
          f"fy swapped and the principal point turned with the pixels{advice}; the point cloud is written as given",
          file=sys.stderr)
    return True


def _check_intrinsics_size(intrinsics, size: tuple[int, int] | None, shape: tuple[int, int], source) -> None:
    """Refuse (``ValueError``) intrinsics whose file says they are for another image size than ``shape`` (H, W):
    the point cloud would be stretched. The message gives the values scaled to this image (right for a resized
    image, not for a crop)."""
    if size is None or tuple(size) == tuple(shape):
        return
    (h0, w0), (h, w) = size, shape
    sx, sy = w / w0, h / h0
    said = f"--intrinsics {source} are for a {w0}x{h0} image (its width and height), but this image is {w}x{h}"
    if (h0, w0) == (w, h):
        raise ValueError(f"{said}: the image is rotated by 90 degrees against them (a phone photo read upright by "
                         "its EXIF orientation?). Give intrinsics for the image as read: fx and fy swapped, and the "
                         "principal point rotated with it.")
    if abs(sx / sy - 1) > 0.01:
        raise ValueError(f"{said}, another aspect ratio (a crop, or another camera); give intrinsics for this image.")
    scaled = (f"{intrinsics.fx * sx:.6g},{intrinsics.fy * sy:.6g},{(intrinsics.cx + 0.5) * sx - 0.5:.6g},"
              f"{(intrinsics.cy + 0.5) * sy - 0.5:.6g}")
    raise ValueError(f"{said}; give intrinsics for this size — for the same camera resized, --intrinsics {scaled} "
                     "(not for a crop).")


def _check_folder_intrinsics_size(intrinsics, size: tuple[int, int], pairs, source) -> None:
    """Refuse a folder run none of whose images (``pairs`` left to run) has the size the intrinsics file gives, read
    from their headers: every point cloud would fail, so say it before the models load, with
    :func:`_check_intrinsics_size`'s advice for the first image. Folders where some images match run, and the others
    fail one by one; so do folders with an image whose size the header does not tell (it may match)."""
    from depthkit.orientation import image_size

    sizes = [image_size(image) for image, _ in pairs]
    if any(s is None or tuple(s) == tuple(size) for s in sizes):
        return
    try:
        _check_intrinsics_size(intrinsics, size, sizes[0], source)
    except ValueError as exc:
        raise ValueError(f"none of the {len(pairs)} image(s) in --input-dir has the size the intrinsics are for; "
                         f"the first, {Path(pairs[0][0]).name}: {exc}") from None


def run_command(args, parser, build_pipeline) -> int:
    """``depthkit run`` with parsed ``args``; ``build_pipeline(args)`` makes the pipeline once the inputs are read
    and the outputs checked. Returns the exit code (0, or 1 when an input failed)."""
    from depthkit.stages import parse_stages

    single = args.image is not None or args.sparse is not None
    try:
        # in their order: sharpen alone (default stages start with complete: depthkit.stages.default_stages)
        starts_with_sharpen = args.stages is not None and parse_stages(args.stages)[0] == "sharpen"
    except ValueError as err:
        parser.error(f"--stages {args.stages}: {err}")
    if single and args.input_dir is not None:
        parser.error("give either --image with --sparse, or --input-dir (not both)")
    if not single and args.input_dir is None:
        parser.error("nothing to run: give --image with --sparse (one image), or --input-dir (a folder of images)")
    if single and args.image is None:
        parser.error("--sparse needs --image")
    if single and args.sparse is None and not starts_with_sharpen:
        parser.error("--image needs --sparse (sparse depth to complete)")
    if starts_with_sharpen and not single:
        parser.error("--stages sharpen alone sharpens one --depth map: give --image with --depth (folders: not "
                     "supported yet; --stages complete,sharpen runs on a folder of images with their sparse maps)")
    if starts_with_sharpen and args.depth is None and single:
        parser.error("--stages sharpen alone needs --depth (a metric depth map to sharpen)")
    if args.depth is not None and not starts_with_sharpen:
        parser.error("--depth is the metric input of --stages sharpen; this run starts with complete, which makes its "
                     "own from --sparse. Drop --depth, or pass --stages sharpen to sharpen it")
    if args.depth is not None and not single:
        parser.error("--depth goes with --image (folders: not supported yet)")
    if args.ply and args.intrinsics is None:
        parser.error("--ply needs --intrinsics fx,fy,cx,cy (pixels) or a JSON/TXT file")
    if args.png_scale is not None and not (math.isfinite(args.png_scale) and args.png_scale > 0):
        parser.error(f"--png-scale must be a finite number > 0 (units per metre, e.g. 1000 = millimetres); received "
                     f"{args.png_scale}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for the outputs (it is created if missing).")
    from depthkit.io import check_output_parent

    check_output_parent(args.out)
    say = (lambda *a, **k: None) if args.quiet else print
    intrinsics = intrinsics_size = None
    if args.intrinsics is not None:
        from depthkit.intrinsics import intrinsics_image_size
        from depthkit.io import parse_intrinsics

        intrinsics = parse_intrinsics(args.intrinsics)
        intrinsics_size = intrinsics_image_size(args.intrinsics)
        if not args.ply:
            print("depthkit run: --intrinsics is used by --ply only (the point cloud); without it they are checked "
                  "and unused", file=sys.stderr)

    # every input is found (and a single image's files read) before any model loads
    failures: list[tuple[str, str]] = []
    preread = None
    if single:
        args.image, args.sparse, args.depth = (_bundled(args.image, "--image"), _bundled(args.sparse, "--sparse"),
                                               _bundled(args.depth, "--depth"))
        pairs = [(args.image, args.sparse)]
        preread = _read_inputs(args.image, args.sparse, args.depth, args)
        if args.ply:  # before any model loads
            _check_intrinsics_size(intrinsics, intrinsics_size, preread[0].shape[:2], args.intrinsics)
    else:
        pairs, missing = _find_pairs(args.input_dir, args.sparse_dir)
        for name, why in missing:
            failures.append((name, why))
            print(f"depthkit run: {name}: {why}", file=sys.stderr)
        pairs = [p for p in pairs if p[1] is not None]

    # a stem's depth files say an earlier result is there (a <stem>.ply alone may be the user's own scan)
    existing = [pair for pair in pairs if any(p.exists() for p in output_paths(args.out, Path(pair[0]).stem))]
    if existing and not (args.overwrite or args.skip_existing):
        first = next(p for p in output_paths(args.out, Path(existing[0][0]).stem) if p.exists())
        raise ValueError(f"outputs for {len(existing)} of {len(pairs)} input(s) already exist in {args.out} "
                         f"(e.g. {first.name}). Pass --overwrite to replace them, --skip-existing to keep them and "
                         "run only the rest, or another --out.")
    # ... so a lone <stem>.ply that --ply would write is not replaced without --overwrite
    done = set(existing)
    lone_ply = [] if not args.ply or args.overwrite else [
        out for pair in pairs if pair not in done for out in [args.out / f"{Path(pair[0]).stem}.ply"] if out.exists()]
    if lone_ply:
        more = f" (and {len(lone_ply) - 1} more .ply)" if len(lone_ply) > 1 else ""
        raise ValueError(f"{lone_ply[0]} already exists{more} without depth outputs beside it (perhaps not a depthkit "
                         "result), and --ply would replace it. Pass --overwrite to replace it, or another --out.")
    if args.skip_existing and existing:  # kept only when every output is there (e.g. not the .ply a new --ply asks)
        existing = [pair for pair in existing
                    if all(p.exists() for p in output_paths(args.out, Path(pair[0]).stem, args.ply))]
        pairs = [p for p in pairs if p not in existing]
        if existing:
            say(f"depthkit run: kept {len(existing)} existing result(s) in {args.out} (--skip-existing)")
    if not pairs:
        say(f"depthkit run: nothing to do; {len(failures)} input(s) failed" if failures else
            "depthkit run: nothing to do; every output already exists")
        return 1 if failures else 0
    if not single and args.ply and intrinsics_size is not None:  # the images left to run, before any model loads
        _check_folder_intrinsics_size(intrinsics, intrinsics_size, pairs, args.intrinsics)

    import warnings

    from depthkit.io import UnitWarning

    try:  # before the models load: a folder that cannot be made fails in a second, not after them
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the output folder --out {args.out} ({exc.strerror or exc}); give a folder you "
                      "can write to.") from exc
    pipe = build_pipeline(args)
    done, n_replaced, t_start, odd_intrinsics_said, sideways_said = 0, 0, time.perf_counter(), False, False
    for img_path, sparse_path in pairs:
        name, t0 = Path(img_path).name, time.perf_counter()
        replaced = (img_path, sparse_path) in existing
        try:
            image, sparse, depth = preread if single else _read_inputs(img_path, sparse_path, None, args)
            if args.ply and not single:  # (a single image was checked before any model loaded)
                _check_intrinsics_size(intrinsics, intrinsics_size, image.shape[:2], args.intrinsics)
            if args.ply and not odd_intrinsics_said:
                odd_intrinsics_said = _say_odd_principal_point(intrinsics, image.shape[:2])
            if args.ply and intrinsics_size is None and not sideways_said:  # a file's size was checked above
                sideways_said = _say_sideways_intrinsics(intrinsics, img_path, image.shape[:2])
            with warnings.catch_warnings():  # the units were checked (and warned about) when the file was read
                warnings.simplefilter("ignore", UnitWarning)
                out = pipe(image, sparse, depth=depth)
            paths = write_outputs(args.out, Path(img_path).stem, out.depth, image=image, png_scale=args.png_scale,
                                  measured=sparse,
                                  intrinsics=intrinsics, ply=args.ply)
            # --overwrite of a whole earlier result: its .ply, not rewritten now, would be another depth's cloud
            stale = [p for p in output_paths(args.out, Path(img_path).stem, ply=True)
                     if replaced and args.overwrite and p not in paths and p.exists()]
            for p in stale:
                p.unlink()
        except Exception as exc:  # one bad input must not stop a folder run; it is reported once and counted
            if single and isinstance(exc, (ValueError, OSError)):
                raise
            why = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
            print(f"depthkit run: {name}: failed: {why}", file=sys.stderr)
            if single:
                return 1
            failures.append((name, why))
            continue
        done, n_replaced = done + 1, n_replaced + replaced
        d = out.depth[out.depth > 0]
        rng = f"{d.min():.3g}-{d.max():.3g} m" if d.size else "empty"
        say(f"{name}: {time.perf_counter() - t0:.2f} s, depth {rng}, "
            f"{'replaced' if replaced else 'wrote'} {', '.join(p.name for p in paths)}"
            + (f"; removed {', '.join(p.name for p in stale)} (an earlier run's)" if stale else ""))
    summary = f"depthkit run: {done} image(s) in {time.perf_counter() - t_start:.1f} s to {args.out}"
    if existing:
        summary += (f"; replaced {n_replaced} existing (--overwrite)" if args.overwrite
                    else f"; kept {len(existing)} existing (--skip-existing)")
    say(summary + f"; {pipe!r}")
    if failures:
        print(f"depthkit run: {len(failures)} input(s) failed: {', '.join(n for n, _ in failures)}", file=sys.stderr)
        return 1
    return 0
