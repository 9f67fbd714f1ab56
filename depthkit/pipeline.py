"""``Pipeline``: validates inputs, chains the stages, handles batches and records per-stage timings.

    pipe = Pipeline(stages=("complete",))
    out = pipe(image, sparse)            # image HxWx3 uint8 RGB (ndarray, PIL, tensor or path); sparse HxW metres
    out.depth, out.confidence, out.stages["complete"].depth, out.timings

Every input is checked here, once, before any stage runs (``ValueError`` saying what was received, what is allowed
and what to do); stages trust what they receive. A checkpoint is resolved and its manifest read once, here, and
handed to the stage factories of :data:`depthkit.stages.STAGES`. Measured sparse values are restored exactly after
every stage, so no stage can lose a measurement.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from depthkit.checkpoints import CheckpointRef, check_finite_output
from depthkit.dtypes import canonical_dtype_name
from depthkit.outputs import DepthOutput, StageResult, keep_placed_depth
from depthkit.stages import STAGE_ORDER, STAGES, ClassicalCompleteStage, default_stages, parse_stages

__all__ = ["Pipeline", "DepthOutput", "StageResult", "check_image", "check_sparse", "restore_measurements"]


def restore_measurements(depth: np.ndarray, sparse: np.ndarray) -> np.ndarray:
    """Return ``depth`` with every measured pixel (sparse > 0) set to its measured value exactly (float32)."""
    out = np.array(depth, dtype=np.float32, copy=True)
    measured = sparse > 0
    out[measured] = sparse[measured]
    return out


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when a CUDA device is present, else ``"cpu"``; check ``"cuda"``/``"cuda:N"`` exists.

    Raises ``ValueError`` saying what was asked, what this machine has and what to pass instead.
    """
    device = str(device)
    if device == "cpu":
        return device
    if not (device in ("auto", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if n else "cpu"
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for but this machine has no Apple GPU; use --device cpu.")
        return device
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= n:
        have = f"{n} CUDA device(s) (cuda:0..cuda:{n - 1})" if n else "no CUDA device (or torch was built without CUDA)"
        raise ValueError(f"device {device!r} was asked for but this machine has {have}. "
                         "Use --device cpu, or --device auto to take CUDA when it is present.")
    return device


def _to_numpy(x, what: str) -> np.ndarray:
    """``x`` as a numpy array when it is a tensor, a PIL image or a sparse matrix; anything else as given. A sparse
    tensor or scipy.sparse matrix is made dense: its implicit zeros are what 0 means in a depth map (missing)."""
    if type(x).__module__.startswith("scipy.sparse") and hasattr(x, "toarray"):
        return x.toarray()
    if type(x).__module__.startswith("torch"):
        if getattr(x, "is_meta", False):
            raise ValueError(f"{what} is a tensor on the meta device, which holds no values; pass one with data.")
        if getattr(x, "layout", None) is not None and str(x.layout) != "torch.strided":
            x = x.to_dense()  # sparse COO / CSR layouts
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.dtype.itemsize < 4:  # bfloat16 has no numpy dtype; float16 widens exactly
            x = x.float()
        return x.numpy()
    if type(x).__module__.startswith("PIL"):
        return _pil_rgb(x) if what == "image" else np.asarray(x)
    return x


PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
"""Pillow's 16-bit grey modes (a 16-bit PNG or TIFF opens in one), which an image given as PIL reads as its file does."""


def _pil_rgb(im) -> np.ndarray:
    """PIL image ``im`` as HxWx3 uint8 RGB, as :func:`depthkit.io.read_image` reads the file it came from: upright per
    its EXIF orientation (a phone photo is stored sideways); 8-bit modes (L, LA, P, RGBA, CMYK, ...) converted to RGB,
    alpha dropped; 16-bit grey (:data:`PIL_16BIT_MODES`) scaled by 1/257 and replicated (Pillow's own conversion clips
    every value above 255 to white). 32-bit modes (``I``, ``F``) have no fixed range: ``ValueError`` saying how to
    convert them."""
    from depthkit.orientation import upright_pil

    if im.mode in ("I", "F"):
        kind, hint = (("integer", "16-bit values: Image.fromarray((np.asarray(im) / 257).round().astype(np.uint8))")
                      if im.mode == "I" else
                      ("float", "floats in [0, 1]: Image.fromarray((np.asarray(im) * 255).round().astype(np.uint8))"))
        raise ValueError(f"image is a PIL image in mode {im.mode!r} (32-bit {kind}), which has no fixed range to map "
                         "to 8-bit RGB (Pillow's convert('RGB') would clip it to 0..255 without a word); expected "
                         f"8-bit RGB, grey or palette, or 16-bit grey (I;16). Convert it first, e.g. for {hint}.")
    im = upright_pil(im)
    if im.mode not in PIL_16BIT_MODES:
        return np.asarray(im.convert("RGB"))
    from depthkit.io import to_8bit

    grey = to_8bit(np.asarray(im))  # as read_image scales a 16-bit file
    return np.repeat(grey[:, :, None], 3, axis=2)


def _with_prefix(err: Exception, prefix: str) -> Exception:
    """A new exception of ``err``'s type whose message is ``prefix`` + ``err``'s; a ``ValueError`` when that type
    cannot be built from one message (``UnicodeDecodeError``, ``json.JSONDecodeError`` take several arguments)."""
    try:
        return type(err)(f"{prefix}{err}")
    except TypeError:
        return ValueError(f"{prefix}{err}")


def check_image(image) -> np.ndarray:
    """Return ``image`` as a contiguous HxWx3 uint8 RGB array or raise ``ValueError`` saying what is wrong."""
    if isinstance(image, (str, os.PathLike)):  # then checked as an array is (its size)
        from depthkit.io import read_image

        image = read_image(image)
    tensor = type(image).__module__.startswith("torch")
    given_dtype = str(image.dtype).removeprefix("torch.") if tensor else None  # bfloat16 is widened on the way
    image = _to_numpy(image, "image")
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image must be an HxWx3 uint8 RGB array, a PIL image, a tensor or a file path; received "
            f"{type(image).__name__}."
        )
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
        raise ValueError(
            f"image has shape {image.shape} (channels first); expected HxWx3. Transpose it: "
            + ("image.permute(1, 2, 0)." if tensor else "image.transpose(1, 2, 0).")
        )
    if image.ndim == 4 and image.shape[-1] == 3:
        raise ValueError(f"image has shape {image.shape}, a stack of {image.shape[0]} images; expected one HxWx3 RGB "
                         "image. For a batch pass a list: pipe(list(images), list(sparse_maps)).")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image has shape {image.shape}; expected HxWx3 RGB. Grey images: np.repeat(img[..., None], 3, -1); "
            "RGBA: img[..., :3]."
        )
    if image.dtype != np.uint8:
        hint = _float_image_hint(image) if image.dtype.kind == "f" else ""
        raise ValueError(f"image has dtype {given_dtype or image.dtype}; expected uint8 RGB in [0, 255].{hint}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} pixels; expected at least 2x2.")
    return np.ascontiguousarray(image)


def _float_image_hint(image: np.ndarray) -> str:
    """How to turn a float HxWx3 ``image`` into uint8 RGB, from its range: NaN/inf to replace first (a cast makes them
    garbage), negative values (a normalised tensor) to un-normalise, else [0, 1] or [0, 255] scaling."""
    finite = np.isfinite(image)
    if not finite.all():
        return (f" It also holds {int((~finite).sum())} NaN/inf value(s), which no conversion turns into colours: "
                "replace them first (e.g. np.nan_to_num).")
    low, top = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < 0:
        return (f" Its values span [{low:g}, {top:g}]: a normalised image? Undo the normalisation (e.g. img * std + "
                "mean) to [0, 1] first, then (img * 255).round().astype(np.uint8).")
    return (" Floats in [0, 1]: (img * 255).round().astype(np.uint8)." if top <= 1.0 else
            f" Floats in [0, 255] (max {top:g}): np.clip(img, 0, 255).round().astype(np.uint8).")


def check_sparse(sparse, shape: tuple[int, int], what: str = "sparse", depth_scale: float | None = None,
                 allow_empty: bool = False) -> np.ndarray:
    """Return ``sparse`` as HxW float32 metres (0 = missing) or raise ``ValueError`` saying what is wrong.

    ``shape`` is the image's (H, W). Integer maps (raw sensor units) are divided by ``depth_scale`` (units per
    metre) and refused without one; float maps are metres (a scale given with one is not applied; a warning says
    so). NaN, inf and negative values are refused rather than silently zeroed: mark missing measurements with 0.
    A numpy masked array's masked pixels are missing (0), whatever values lie under the mask.
    A torch sparse tensor or a scipy.sparse matrix is made dense: its implicit zeros are missing pixels.
    """
    from depthkit.io import check_depth_values, depth_to_metres, hxw_depth_map, read_depth, unmasked

    sparse = unmasked(sparse)
    if isinstance(sparse, (str, os.PathLike)):
        sparse = read_depth(sparse, depth_scale=depth_scale, what=what)
        depth_scale = None  # applied by the reader: what it returns is metres
    sparse = _to_numpy(sparse, what)
    if not isinstance(sparse, np.ndarray):
        hint = (f" Convert it first: numpy.asarray({what}, dtype=numpy.float32)."
                if isinstance(sparse, (list, tuple)) else "")
        raise ValueError(f"{what} must be an HxW float array in metres or a file path; received "
                         f"{type(sparse).__name__}.{hint}")
    sparse = hxw_depth_map(sparse, what)
    if tuple(sparse.shape) != tuple(shape):
        hint = ""
        if tuple(sparse.shape) == tuple(shape[::-1]):
            hint = (" It matches the image turned sideways: if the image is a photo with an EXIF orientation, "
                    "depthkit read it upright as viewers show it; give the sparse map in that orientation.")
        advice = (" If the sparse map comes from a camera of another resolution, scatter its points at scaled "
                  "coordinates (--resize-sparse on the CLI, depthkit.io.resize_sparse in Python); do not resize it like "
                  "an image, which turns each point into a block of copies when upsampling.")
        if what == "depth":  # a sharpen stage's dense metric input: a map that resizes like an image
            advice = (" A dense depth map of another resolution can be resized to the image's size like an image, "
                      "with nearest-neighbour sampling so that no depth is blended across an edge (e.g. cv2.resize "
                      "with cv2.INTER_NEAREST).")
        raise ValueError(
            f"{what} is {sparse.shape[0]}x{sparse.shape[1]} but the image is {shape[0]}x{shape[1]}; they must be "
            "pixel-aligned at the same resolution." + hint + advice
        )
    sparse = depth_to_metres(sparse, depth_scale, what=what).astype(np.float32)
    check_depth_values(sparse, what)
    if not allow_empty and not (sparse > 0).any():
        need = ("sharpening needs metric depth to sharpen (values > 0)" if what == "depth"
                else "completion needs at least one value > 0")
        raise ValueError(f"{what} has no measured pixel (all zeros); {need}.")
    return np.ascontiguousarray(sparse)


DENSE_INPUT_MIN_FRACTION = 0.5
"""A sharpen-first pipeline's metric depth input with fewer pixels known than this gets a warning: SharpDepth sharpens
dense depth (a completion), and a sparse map given as ``depth`` leaves it almost nothing to work from."""
DENSE_INPUT_MAX_MISSING = 0.01
"""... and one with at least this share of its pixels missing (0), a sensor's dense frame with holes, a warning saying
how they are filled: the sharpener's own prediction, not a completion. 1 % is more than a frame's border row or a few
dropped pixels (0.2 % is one column of a 640x480 frame) and less than any dense sensor's holes (typically 5-30 %); a
completion has none."""


def _say_depth_holes(depth: np.ndarray) -> None:
    """Warn (one :class:`~depthkit.io.DepthkitWarning`) when a sharpen-first pipeline's metric ``depth`` input (HxW
    metres, checked: 0 = missing) has :data:`DENSE_INPUT_MAX_MISSING` or more of its pixels missing, saying the share,
    how the sharpen stage fills them and how to get a learned fill; under :data:`DENSE_INPUT_MIN_FRACTION` known, that
    it is a sparse map."""
    known = float((depth > 0).mean())
    if 1.0 - known < DENSE_INPUT_MAX_MISSING:
        return
    import warnings

    from depthkit.io import DepthkitWarning

    if known < DENSE_INPUT_MIN_FRACTION:
        said = (f"the metric depth to sharpen has only {100 * known:.1f} % of its pixels known; the sharpen stage "
                "expects dense depth (a completion). For a sparse map run both stages (--stages complete,sharpen: "
                "pass it as --sparse).")
    else:
        said = (f"the metric depth to sharpen has {100 * (1.0 - known):.1f} % of its pixels missing (0); the sharpen "
                "stage does not complete them from the known depth: it regenerates them from the image (discrepancy "
                "1 there) and scales them by its fit to the known pixels. For a learned fill of the holes run both "
                "stages (--stages complete,sharpen) with this map as --sparse.")
    warnings.warn(said, DepthkitWarning, stacklevel=4)


class Pipeline:
    """Chains depthkit's stages over one image or a batch.

    Args:
        stages: stage names in run order, a subset of ``("complete", "sharpen")`` (or a comma-separated string);
            None = the checkpoint's default stages (:func:`depthkit.stages.default_stages`: for the embedded default
            its manifest's ``default_stages``), else ``("complete",)``.
        method: the completion method for ``complete`` (``depthkit ls`` lists them); None = the default.
        checkpoint: a checkpoint directory (or hub id) for learned stages; None = the embedded default.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; learned stages place their
            models there (classical methods run on the CPU whatever it says). A missing device is an error.
        dtype: ``"float32"`` (CPU default) or ``"bfloat16"``/``"float16"`` (CUDA).
        stage_options: per-stage keyword options, e.g. ``{"complete": {"query_stride": 4}}``.

    A Pipeline may be shared between threads: it runs one image at a time (a lock), because its stages keep per-call
    state on their models (the sharpener's attention processors are swapped in for each call, the completer keeps
    ``last_stats``); concurrent calls would gain nothing anyway, as torch already uses every core (or the one GPU).
    """

    def __init__(self, stages: Sequence[str] | str | None = None, method: str | None = None, checkpoint=None,
                 device: str = "cpu", dtype: str = "float32", stage_options: dict | None = None):
        self.checkpoint = CheckpointRef.open(checkpoint) if checkpoint is not None else CheckpointRef.default()
        defaulted = stages is None
        stages = () if defaulted else parse_stages(stages)
        dtype = canonical_dtype_name(dtype)
        device = resolve_device(device)
        if dtype == "float16" and device == "cpu":
            import warnings

            from depthkit.io import DepthkitWarning

            warnings.warn("dtype float16 on the CPU: most CPUs have no float16 arithmetic, so it runs slower than "
                          "float32 (several times, measured here) for no memory a CPU needs to save; float16 and "
                          "bfloat16 are for CUDA.", DepthkitWarning, stacklevel=2)
        if stage_options is not None and not isinstance(stage_options, dict):
            raise ValueError(f"stage_options must map stage names to option dicts, e.g. {{'complete': "
                             f"{{'query_budget': 256}}}}; received {type(stage_options).__name__}.")
        stage_options = dict(stage_options or {})
        bad = sorted(k for k, v in stage_options.items() if not isinstance(v, dict))
        if bad:
            raise ValueError(f"stage_options[{bad[0]!r}] must be a dict of that stage's options; received "
                             f"{type(stage_options[bad[0]]).__name__}.")
        unknown = set(stage_options) - set(STAGE_ORDER)
        if unknown:
            raise ValueError(f"stage_options (--option STAGE.KEY=VALUE on the command line) names {sorted(unknown)}, "
                             f"which is not a stage; stages are {', '.join(STAGE_ORDER)}.")
        if defaulted:
            stages = default_stages(self.checkpoint, method, stage_options)
        not_run = set(stage_options) - set(stages)
        if not_run:
            why = (" (the default stages for this checkpoint and completion method); pass them, e.g. "
                   "stages=('complete', 'sharpen') (--stages complete,sharpen)" if defaulted else "")
            raise ValueError(f"stage_options names stages that are not run: {sorted(not_run)}; running "
                             f"{stages}{why}.")
        if method is not None and "complete" not in stages:
            raise ValueError(f"method={method!r} chooses how the complete stage completes, but this pipeline runs "
                             f"{stages}; drop the method, or add 'complete' in front.")
        self.stage_names = stages
        self.device, self.dtype = device, dtype
        self._lock = threading.Lock()
        self.stages = []
        for s in stages:
            opts = dict(stage_options.get(s, {}))
            if s == "complete" and method is not None:
                if opts.get("method", method) != method:
                    raise ValueError(f"method={method!r} and stage_options complete.method={opts['method']!r} name "
                                     "two completion methods; give one.")
                opts["method"] = method  # an explicit method overrides a checkpoint manifest's
            self.stages.append(self._build_stage(s, opts, device, dtype))

    def _build_stage(self, name: str, opts: dict, device: str, dtype: str):
        """``STAGES[name]``'s stage; a ``ValueError`` it raises also names the options the checkpoint manifest gave
        that stage (a user who passed no option could not otherwise tell where a refused value came from)."""
        from depthkit.checkpoints import MANIFEST, CheckpointError

        try:
            return STAGES[name].factory(self.checkpoint, device=device, dtype=dtype, options=opts)
        except ValueError as exc:
            stored = self.checkpoint.options(name) if self.checkpoint is not None else {}
            if isinstance(exc, CheckpointError) or not stored:  # a CheckpointError names its file already
                raise
            given = f"; given here: {sorted(opts)}" if opts else ""
            raise ValueError(f"{exc} (the {name} stage's options {sorted(stored)} come from "
                             f"{self.checkpoint.root / MANIFEST}{given})") from exc

    @classmethod
    def from_pretrained(cls, path, stages: Sequence[str] | str | None = None, device: str = "cpu",
                        dtype: str = "float32", **kwargs) -> Pipeline:
        """Build a pipeline from a checkpoint directory or hub id (see :mod:`depthkit.checkpoints`); ``stages``
        defaults to :func:`depthkit.stages.default_stages` (the manifest's ``default_stages`` for its own completion
        method), and to every stage the manifest lists when it names none."""
        checkpoint = CheckpointRef.open(path)
        available = tuple(s for s in STAGE_ORDER if s in checkpoint.stages)
        if stages is None:
            stages = default_stages(checkpoint, kwargs.get("method"), kwargs.get("stage_options"), fallback=available)
        stages = parse_stages(stages)
        missing = [s for s in stages if s not in available]
        if missing:
            raise ValueError(f"checkpoint {checkpoint.root} has no {missing} stage(s); it provides {list(available)}.")
        return cls(stages=stages, checkpoint=checkpoint, device=device, dtype=dtype, **kwargs)

    def __call__(self, image, sparse, depth=None, depth_scale: float | None = None):
        """Run the stages on one image (arrays or paths) or on a batch (lists of them, returning a list).

        ``depth`` is the metric depth input (HxW metres) of a pipeline that starts with ``sharpen`` (refused by one
        that starts with ``complete``, which makes its own); there ``sparse`` is optional (None), for a batch too.
        ``depth_scale`` converts 16-bit PNG sparse files to metres (units per metre).
        """
        if isinstance(image, (list, tuple)):
            if image and isinstance(image[0], (list, tuple)):
                raise ValueError("image is a nested Python list; a list means a batch of images. Pass one image as "
                                 "an HxWx3 uint8 array: np.asarray(image, dtype=np.uint8).")
            if sparse is None and self.stage_names[0] != "complete":  # optional here, as for one image
                sparse = [None] * len(image)
            if not isinstance(sparse, (list, tuple)) or len(sparse) != len(image):
                got = len(sparse) if isinstance(sparse, (list, tuple)) else type(sparse).__name__
                raise ValueError(f"a batch of {len(image)} images needs a list of {len(image)} sparse maps; got {got}.")
            if isinstance(depth, (list, tuple)) and len(depth) != len(image):
                raise ValueError(f"a batch of {len(image)} images needs a list of {len(image)} depth maps (or one "
                                 f"map, or None); got a list of {len(depth)}.")
            depths = depth if isinstance(depth, (list, tuple)) else [depth] * len(image)
            checked = []
            for k, (i, s, d) in enumerate(zip(image, sparse, depths)):
                try:
                    checked.append(self._check(i, s, d, depth_scale))
                except (ValueError, FileNotFoundError) as err:  # say which item (a missing file too), same type
                    raise _with_prefix(err, f"batch item {k} (of {len(image)}): ") from None
            outs = []
            for k, c in enumerate(checked):
                try:
                    outs.append(self._run_one(*c))
                except (ValueError, FileNotFoundError) as err:  # a stage's refusal names the item too
                    raise _with_prefix(err, f"batch item {k} (of {len(image)}): ") from err
            return outs
        return self._run_one(*self._check(image, sparse, depth, depth_scale))

    def _check(self, image, sparse, depth, depth_scale):
        image = check_image(image)
        if sparse is None and self.stage_names[0] != "complete":
            sparse = np.zeros(image.shape[:2], np.float32)  # sharpen alone: measurements are optional
        elif sparse is None:
            raise ValueError("the complete stage needs a sparse depth map (HxW metres, 0 = missing); received None.")
        else:
            sparse = check_sparse(sparse, image.shape[:2], depth_scale=depth_scale,
                                  allow_empty=self.stage_names[0] != "complete")
        if depth is not None and self.stage_names[0] == "complete":
            raise ValueError("depth= (--depth) is the metric input of a pipeline that starts with 'sharpen'; this one "
                             "starts with 'complete', which makes its own from the sparse map. Drop it, or run "
                             "stages=('sharpen',) (--stages sharpen) to sharpen that depth.")
        if depth is not None:
            depth = check_sparse(depth, image.shape[:2], what="depth", depth_scale=depth_scale)
            _say_depth_holes(depth)
        elif self.stage_names[0] != "complete":
            raise ValueError(
                f"a pipeline starting with {self.stage_names[0]!r} needs a metric depth input (depth=...); "
                "or add the 'complete' stage in front."
            )
        return image, sparse, depth

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]  # a lock does not pickle; each copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _run_one(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None) -> DepthOutput:
        """One image through every stage, one call at a time (see the class docstring: threads share the models)."""
        with self._lock:
            return self._run_stages(image, sparse, depth)

    def _run_stages(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None) -> DepthOutput:
        results: dict[str, StageResult] = {}
        timings: dict[str, float] = {}
        t_all = time.perf_counter()
        confidence = None
        placed = None  # pixels an earlier stage placed by rule (its extras["placed"]), kept by stages that ask
        for stage in self.stages:
            t0 = time.perf_counter()
            res = stage.run(image, sparse, depth)
            classical = stage.method.name if isinstance(stage, ClassicalCompleteStage) else None  # no weights
            check_finite_output(stage.name, res.depth, method=classical)
            if placed is not None and getattr(stage, "keep_placed", False):
                res.depth = keep_placed_depth(res.depth, depth, placed)
            res.depth = restore_measurements(res.depth, sparse)
            if "placed" in res.extras:
                placed = res.extras["placed"] > 0
            res.seconds = time.perf_counter() - t0
            results[stage.name] = res
            timings[stage.name] = res.seconds
            depth = res.depth
            if res.confidence is not None:
                confidence = res.confidence
        timings["total"] = time.perf_counter() - t_all
        return DepthOutput(depth=depth, confidence=confidence, stages=results, timings=timings)

    def __repr__(self) -> str:
        return f"Pipeline(stages={self.stages}, device={self.device!r}, dtype={self.dtype!r})"
