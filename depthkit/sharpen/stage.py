"""The ``sharpen`` pipeline stage: SharpDepth on the previous stage's metric depth (or a metric depth input).

``Pipeline(stages=("complete", "sharpen"))`` feeds the completed depth here; ``Pipeline(stages=("sharpen",))``
takes ``depth=`` (``depthkit run --stages sharpen --image X --depth D.npy``). One call runs the UNet twice — once as
Lotus on pure noise (discrepancy), once as the sharpener on the gated latent — and returns the sharpened metric depth
with ``extras["discrepancy"]`` (HxW, [0, 1]) and ``extras["lotus"]`` (HxW affine-invariant pass-1 map, [0, 1]).
Measured sparse pixels are returned exactly and get e = 0, so sharpening never moves a measurement. A frame the
limits would leave as it is (``keep_scanline_frames`` on a LiDAR frame) skips the UNet: :meth:`SharpenStage.leaves_as_input`.

The factory receives the checkpoint the Pipeline resolved once (a :class:`~depthkit.checkpoints.CheckpointRef`) and
loads ``<checkpoint>/sharpen`` with :meth:`~depthkit.sharpen.model.SharpDepth.from_dir` (no second resolution);
:meth:`SharpenStage.run` receives arrays the :class:`~depthkit.pipeline.Pipeline` has validated and calls
:meth:`~depthkit.sharpen.model.SharpDepth.sharpen_checked`, which does not check them again.

Light module (imported by the stage table, depthkit/stages.py, on every pipeline build): torch and diffusers load in
the factory.
"""

from __future__ import annotations

import numpy as np

from depthkit.outputs import StageResult, keep_placed_depth

__all__ = ["PROCESSING_SIDE_OPTIONS", "SharpenStage", "UPSAMPLE_WARNING", "UPSAMPLE_WARNING_MIN_SIDE",
           "build_sharpen_stage", "over_stored_options"]

UPSAMPLE_WARNING = 4
"""A processing resolution more than this many times the image's longest side is warned about (once per stage) ...
"""
UPSAMPLE_WARNING_MIN_SIDE = 1024
"""... when it is at least this many pixels (a checkpoint's 320 on a thumbnail costs nothing worth a warning)."""


class SharpenStage:
    """Wraps a :class:`~depthkit.sharpen.model.SharpDepth`; ``run(image, sparse, depth) -> StageResult``."""

    name = "sharpen"

    def __init__(self, sharpdepth, processing_resolution: int | None = None, source: str = "",
                 keep_placed: bool = False, max_processing_resolution: int | None = None):
        if processing_resolution is not None and max_processing_resolution is not None:
            raise ValueError(f"the sharpen stage takes processing_resolution (a fixed longest side) or "
                             f"max_processing_resolution (the image's own, at most this), not both; received "
                             f"{processing_resolution!r} and {max_processing_resolution!r}.")
        self.model = sharpdepth
        self.processing_resolution = processing_resolution
        self.max_processing_resolution = max_processing_resolution
        """The longest side (pixels) the UNet runs at is the image's own up to this, and this for larger images
        (None: the model's ``default_processing_resolution``)."""
        self.source = source
        self.keep_placed = keep_placed
        """True: the Pipeline gives back the input's depth wherever an earlier stage placed it by rule (its
        ``extras["placed"]``: the complete stage's occlusion and hole fills), as it does at measured pixels."""
        self._warned_upsampling = False

    def run(self, image: np.ndarray, sparse: np.ndarray | None, depth: np.ndarray | None) -> StageResult:
        """``image`` HxWx3 uint8, ``sparse`` HxW float32 metres (0 = missing; may be None or all zero), ``depth``
        HxW float32 metres (the metric input; 0 = unknown, regenerated from the image), as the Pipeline validated
        them: they are not checked again."""
        if depth is None:
            raise ValueError("the sharpen stage needs a metric depth to sharpen: put 'complete' before it "
                             "(stages=('complete', 'sharpen')) or pass depth=HxW metres (--depth on the CLI).")
        measured = sparse is not None and bool((sparse > 0).any())
        side = self.processing_side(image)
        if (side is not None and side >= UPSAMPLE_WARNING_MIN_SIDE and side > UPSAMPLE_WARNING * max(image.shape[:2])
                and not self._warned_upsampling):
            import warnings

            from depthkit.io import DepthkitWarning

            self._warned_upsampling = True
            warnings.warn(f"processing_resolution {side} for a {image.shape[1]}x{image.shape[0]} image: the UNet runs "
                          f"{side / max(image.shape[:2]):.0f} times larger than the image (time and memory grow with "
                          "its square) and gains nothing; leave processing_resolution unset or near the image's "
                          "longest side.", DepthkitWarning, stacklevel=2)
        if measured and self.leaves_as_input(sparse, depth):
            return StageResult(depth=np.where(sparse > 0, sparse, depth).astype(np.float32))
        out = self.model.sharpen_checked(image, depth, sparse if measured else None, processing_resolution=side)
        return StageResult(depth=out.depth.astype(np.float32),
                           extras={"discrepancy": out.discrepancy.astype(np.float32),
                                   "lotus": out.lotus.astype(np.float32)})

    def leaves_as_input(self, sparse: np.ndarray, depth: np.ndarray) -> bool:
        """True when the sharpener's limits would give back ``depth`` (HxW metres) as it is, so the UNet need not
        run: ``keep_scanline_frames`` is on and ``sparse`` (HxW metres, 0 = missing) is a scan-line frame
        (:func:`depthkit.sharpen.limits.scanline_frames`), with no missing pixel in ``depth`` (those the sharpener
        fills whatever its limits). Such a frame's output is then the one the model gives, without the
        ``discrepancy`` and ``lotus`` extras; a LiDAR frame costs the detector's time instead of two UNet passes."""
        if not self.model.config.keep_scanline_frames or not bool((depth > 0).all()):
            return False
        import torch

        from depthkit.sharpen.limits import scanline_frames

        return bool(scanline_frames(torch.from_numpy(np.ascontiguousarray(sparse > 0))[None, None])[0])

    def processing_side(self, image: np.ndarray) -> int | None:
        """The longest side (pixels) the UNet runs at for ``image`` (HxWx3): the stage's ``processing_resolution``;
        else the image's own up to ``max_processing_resolution``; else the model's default (None = the image's own
        size, capped at MAX_WORKING_SIDE)."""
        from depthkit.checkpoints import working_side

        if self.max_processing_resolution is not None:  # not None: that would be the model's default
            return working_side(None, image.shape, cap=self.max_processing_resolution) or max(image.shape[:2])
        return self.processing_resolution or working_side(self.model.model.default_processing_resolution, image.shape)

    def limit_configs(self, settings: dict[str, dict]) -> dict:
        """``{name: SharpDepthConfig}``: this stage's config with each setting's overrides of
        :data:`depthkit.sharpen.limits.LIMIT_FIELDS`, checked (a setting that is not an object, names another field
        — which would change the UNet pass itself — or gives a bad value raises ValueError naming it)."""
        import dataclasses

        from depthkit.sharpen.limits import LIMIT_FIELDS

        configs = {}
        for name, overrides in settings.items():
            if not isinstance(overrides, dict):
                raise ValueError(f"limit setting {name!r} must be an object of {list(LIMIT_FIELDS)}; received "
                                 f"{overrides!r}.")
            other = sorted(set(overrides) - set(LIMIT_FIELDS))
            if other:
                raise ValueError(f"limit setting {name!r} changes {other}; it may only set {list(LIMIT_FIELDS)} "
                                 "(build a stage with those options and call run() instead).")
            try:
                configs[name] = dataclasses.replace(self.model.config, **overrides)
            except ValueError as err:
                raise ValueError(f"limit setting {name!r}: {err}") from None
        return configs

    def run_limits(self, image: np.ndarray, sparse: np.ndarray | None, depth: np.ndarray,
                   settings: dict[str, dict], placed: np.ndarray | None = None,
                   pass1_depth: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One UNet pass, many run-time limit settings: ``{name: HxW float32 metres}``, each equal to the depth a
        Pipeline gives for this stage with that setting's config overrides.

        ``settings`` maps a name to overrides of :data:`depthkit.sharpen.limits.LIMIT_FIELDS` only (the fields
        that act on the sharpener's free output; see :meth:`limit_configs`). ``image``, ``sparse``, ``depth`` as
        :meth:`run` takes them; ``placed`` (HxW bool, or None) the pixels the complete stage placed by rule (its
        ``extras["placed"] > 0``), which keep ``depth`` when :attr:`keep_placed` is True, as in a Pipeline.
        ``pass1_depth`` (HxW metres, or None): a diagnostic that replaces the sharpener's pass-1 Lotus prediction
        (``pass1_depth`` of :meth:`~depthkit.sharpen.model.SharpDepth.sharpen_tensors`; e.g. the GT, an oracle).
        Used to score a grid of limits (``benchmarks/sharpen_switches.py``)."""
        import torch

        from depthkit.sharpen.limits import limit_output, processing_inputs
        from depthkit.sharpen.lotus import image_to_tensor
        from depthkit.sharpen.model import depth_tensor
        from depthkit.sharpen.normalize import valid_depth

        if depth is None:
            raise ValueError("run_limits needs the metric depth to sharpen (HxW metres); received None.")
        if placed is not None:
            placed = np.asarray(placed)
            if placed.shape != depth.shape or placed.dtype != bool:
                raise ValueError(f"run_limits: placed must be an HxW bool mask the size of depth {depth.shape} (the "
                                 f"complete stage's extras['placed'] > 0); received {placed.dtype} {placed.shape}.")
        configs = self.limit_configs(settings)
        measured = sparse is not None and bool((sparse > 0).any())
        x, d = image_to_tensor(image), depth_tensor(depth)
        sp = depth_tensor(sparse) if measured else None
        side = self.processing_side(image)
        if pass1_depth is not None and np.shape(pass1_depth) != depth.shape:
            raise ValueError(f"run_limits: pass1_depth must be HxW metres the size of depth {depth.shape}; received "
                             f"shape {np.shape(pass1_depth)}.")
        given = None if pass1_depth is None else depth_tensor(np.asarray(pass1_depth, np.float32))
        out = self.model.sharpen_tensors(x, d, sp, processing_resolution=side, pass1_depth=given)
        free = out["free"]
        d = d.to(free.device)
        sp = None if sp is None else sp.to(free.device)
        mask = None if sp is None else valid_depth(sp)  # the measured pixels, as sharpen_tensors finds them
        lotus = self.model.model
        size = lotus.processing_size(*depth.shape, side)
        padded = lotus.padded_size(*size)
        at_processing = processing_inputs(d, mask, size, padded)
        results = {}
        for name, config in configs.items():
            limited, _ = limit_output(config, free, d, mask, size, padded, at_processing=at_processing)
            if mask is not None:
                limited = torch.where(mask, sp, limited)
            results[name] = limited[0, 0].float().cpu().numpy()
            if placed is not None and self.keep_placed:
                results[name] = keep_placed_depth(results[name], depth, placed)
        return results

    def __repr__(self) -> str:
        """The weights' folder, the processing size, keep_placed and the run-time SharpDepthConfig fields that differ
        from the paper's defaults (the limits in force; the training-only fields are left out)."""
        from dataclasses import fields

        from depthkit.sharpen.config import SharpDepthConfig

        config, paper = self.model.config, SharpDepthConfig()
        training = ("gate_prob", "recons_weight")  # and lambda_*, ema_*, sds_*: they do not act at run time
        changed = {f.name: getattr(config, f.name) for f in fields(config)
                   if getattr(config, f.name) != getattr(paper, f.name) and f.name not in training
                   and not f.name.startswith(("lambda_", "ema_", "sds_"))}
        return (f"SharpenStage({self.source!r}, processing_resolution={self.processing_resolution}, "
                f"max_processing_resolution={self.max_processing_resolution}, "
                f"keep_placed={self.keep_placed}, config={changed})")


PROCESSING_SIDE_OPTIONS = ("processing_resolution", "max_processing_resolution")
"""The two ways of saying the size the UNet runs at; they exclude each other."""


def over_stored_options(stored: dict, options: dict) -> dict:
    """Stage options ``options`` over a manifest's ``stored`` ones (other than ``config``, merged by field in
    :func:`build_sharpen_stage`): a key given replaces the stored one, and naming either of
    :data:`PROCESSING_SIDE_OPTIONS` drops the stored other, since the two exclude each other."""
    if any(k in options for k in PROCESSING_SIDE_OPTIONS):
        stored = {k: v for k, v in stored.items() if k not in PROCESSING_SIDE_OPTIONS}
    return {**stored, **options}


def build_sharpen_stage(checkpoint, device: str = "cpu", dtype: str = "float32",
                        options: dict | None = None) -> SharpenStage:
    """The ``sharpen`` stage from the ``sharpen/`` part of ``checkpoint`` (a resolved
    :class:`~depthkit.checkpoints.CheckpointRef`, or None when there is none).

    Options (the manifest's, overridden by ``options``): ``processing_resolution`` (longest side in pixels the UNet
    runs at), ``max_processing_resolution`` (instead: the input's own longest side, at most this many pixels; giving
    one of the two as an option drops the manifest's other, so with both None, e.g. ``--option
    sharpen.max_processing_resolution=null``, the UNet runs at the model's ``default_processing_resolution``: 320 px
    for the embedded default), ``keep_placed`` (True: in a Pipeline, the pixels the complete stage's rules placed
    keep their depth, :attr:`SharpenStage.keep_placed`; False, the default: the paper's sharpener, which
    may change them) and ``config`` (overrides of single SharpDepthConfig fields, e.g.
    ``{"fit_threshold": 0.3}``, on top of the manifest's ``config`` and then the stored ``sharpdepth.json``: a field
    named in neither keeps its stored value, so turning a shipped switch off means setting it to 0).
    """
    from depthkit.dtypes import torch_dtype

    if checkpoint is None:
        raise ValueError(
            "the sharpen stage needs a checkpoint with a sharpen/ part and this install's embedded default has "
            "none. Pass --checkpoint DIR: a random-weight one from `depthkit init-checkpoint --tiny DIR`, "
            "released SharpDepth weights via `depthkit import-checkpoint --sharpdepth RELEASE --out DIR`, or "
            "your own from `depthkit train recipes/sharpen/...`.")
    if not checkpoint.has_part("sharpen"):
        raise ValueError(f"checkpoint {checkpoint.root} has no sharpen/ folder. Add one with `depthkit "
                         f"import-checkpoint --sharpdepth RELEASE --out {checkpoint.root}` or `depthkit "
                         "init-checkpoint --tiny DIR`.")
    stored, options = checkpoint.options("sharpen"), dict(options or {})
    config, shipped = options.pop("config", None), stored.pop("config", None)
    for where, value in (("the sharpen option config", config), (f"{checkpoint.root}/depthkit.json's sharpen config",
                                                                  shipped)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where} must be an object of SharpDepthConfig fields, e.g. "
                             f"{{\"fit_threshold\": 0.3}}; received {value!r}.")
    # a caller's config overrides single fields: the manifest's run-time switches it does not name stay on
    config = {**(shipped or {}), **(config or {})} or None
    options = over_stored_options(stored, options)
    processing_resolution = options.pop("processing_resolution", None)
    max_processing_resolution = options.pop("max_processing_resolution", None)
    keep_placed = options.pop("keep_placed", None)
    keep_placed = False if keep_placed is None else keep_placed  # null: unset, the paper's sharpener
    if options:
        raise ValueError(f"the sharpen stage takes the options processing_resolution, max_processing_resolution, "
                         f"keep_placed and config; received {sorted(options)}.")
    if not isinstance(keep_placed, bool):
        raise ValueError(f"keep_placed must be true or false (keep the depth the complete stage's fills placed); "
                         f"received {keep_placed!r}.")
    from depthkit.checkpoints import BOUNDS, bounded, loading
    from depthkit.sharpen.model import SharpDepth

    part = checkpoint.part("sharpen")
    for name, side in zip(PROCESSING_SIDE_OPTIONS, (processing_resolution, max_processing_resolution)):
        if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side <= 0):
            raise ValueError(f"{name} must be a positive int (pixels) or None; received {side!r}.")
        bounded(name, side, *BOUNDS["processing_resolution"], part, optional=True)
    # a malformed part (wrong types, missing tensors) becomes one CheckpointError naming the folder
    with loading(part, "the sharpen part (sharpdepth.json, lotus.json, unet/, vae/)", passthrough=(ValueError,)):
        model = SharpDepth.from_dir(part, device=device, dtype=torch_dtype(dtype), config=config)
    return SharpenStage(model, processing_resolution, source=str(part), keep_placed=keep_placed,
                        max_processing_resolution=max_processing_resolution)
