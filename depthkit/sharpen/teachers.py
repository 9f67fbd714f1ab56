"""Metric depth sources for SharpDepth training: the map d that the sharpener learns to sharpen.

SharpDepth is label-free: for every unlabelled training image a *metric* model predicts d, Lotus predicts an
affine-invariant map, and their discrepancy drives the losses. A source is chosen by a spec string:

==================  =================================================================================================
``complete[:M]``    depthkit's ``complete`` stage on the sample's sparse input: a classical method (``guided``,
                    ``ip_basic``, ``nearest``; default ``guided``) or ``sdim`` with a checkpoint. Needs sparse input.
``unidepth[:ID]``   UniDepth (the paper's source), when the ``unidepth`` package is installed; ``ID`` is a hub id or
                    local folder, default ``lpiccinelli/unidepth-v1-vitl14`` (the one SharpDepth's code uses).
``hf:DIR``          any transformers depth-estimation model folder (``AutoModelForDepthEstimation`` + its image
                    processor), e.g. ZoeDepth, Depth Pro or a metric Depth Anything. ``options.output`` says what it
                    predicts: ``metric`` (metres), ``relative_disparity`` or ``relative_depth`` (then aligned to the
                    sparse input by least squares, which needs >= 2 measured pixels). ``auto`` (default) reads the
                    config's ``depth_estimation_type`` and refuses to guess when it is absent.
``npy:DIR``         precomputed ``DIR/<name>.npy`` (HxW float32 metres) per image; ``<name>`` is the dataset item's
                    name (for image folders the path relative to the root, without suffix), else its last part.
==================  =================================================================================================

Every source is a callable ``source(image, sparse=None, name=None) -> HxW float32 metres`` (0 = unknown) at the
image's resolution; :func:`build_metric_source` also accepts such a callable as it is (tests, custom models).
Light module: torch, transformers and unidepth are imported when a source is built, not at import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "DEFAULT_UNIDEPTH", "parse_source_spec", "build_metric_source", "MetricSource",
           "CompleteSource", "UniDepthSource", "HFDepthSource", "NpySource", "CallableSource", "check_metric"]

SOURCES = ("complete", "unidepth", "hf", "npy")
DEFAULT_UNIDEPTH = "lpiccinelli/unidepth-v1-vitl14"
HF_OUTPUTS = ("auto", "metric", "relative_disparity", "relative_depth")


def parse_source_spec(spec: str) -> tuple[str, str | None]:
    """``"kind[:arg]"`` → ``(kind, arg)``; raises ``ValueError`` naming the allowed forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"metric source must be a non-empty string; received {spec!r}. Allowed: complete[:METHOD], "
                         "unidepth[:MODEL_ID], hf:DIR, npy:DIR.")
    kind, _, arg = spec.strip().partition(":")
    arg = arg or None
    if kind not in SOURCES:
        raise ValueError(f"unknown metric source {spec!r}; allowed: complete[:METHOD], unidepth[:MODEL_ID], hf:DIR, "
                         "npy:DIR.")
    if kind in ("hf", "npy") and arg is None:
        raise ValueError(f"metric source {kind!r} needs a folder: {kind}:DIR.")
    return kind, arg


def check_metric(depth, shape: tuple[int, int], source: str) -> np.ndarray:
    """A source's output as HxW float32 metres; non-finite values become 0 (unknown), negatives are an error."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.shape != tuple(shape):
        raise ValueError(f"metric source {source} returned shape {d.shape}; the image is {tuple(shape)} (HxW).")
    d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
    if (d < 0).any():
        raise ValueError(f"metric source {source} returned negative depth (min {float(d.min()):.3g}); metric depth "
                         "is metres >= 0 with 0 = unknown.")
    return d


class MetricSource:
    """Base class: ``source(image, sparse=None, name=None) -> HxW float32 metres``."""

    name = "metric source"
    needs_sparse = False

    @property
    def identity(self) -> str:
        """What determines this source's maps besides its inputs (a cache key part, :class:`MetricCache`): by
        default its name (for a callable, its name alone: give distinct callables distinct names); a learned
        completer and a transformers model folder add a hash of their files, their options and dtype."""
        return self.name

    def predict(self, image: np.ndarray, sparse: np.ndarray | None, name: str | None) -> np.ndarray:
        raise NotImplementedError

    def predict_placed(self, image: np.ndarray, sparse: np.ndarray | None,
                       name: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(depth, placed)``: :meth:`predict`'s depth and the pixels the source set by rule (HxW bool; the
        complete stage's ``extras["placed"] > 0``), or None for a source without such rules (the default)."""
        return self.predict(image, sparse, name), None

    def with_placed(self, image: np.ndarray, sparse: np.ndarray | None = None,
                    name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(HxW float32 metres, HxW bool placed or None)``, inputs checked as by :meth:`__call__`."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{self.name}: image must be HxWx3 uint8 RGB; received {image.dtype} {image.shape}.")
        if self.needs_sparse and (sparse is None or not (np.asarray(sparse) > 0).any()):
            raise ValueError(f"{self.name} needs sparse input (metres, 0 = missing) for image {name or '?'}, and it "
                             "has none. Give a dataset with sparse input (synthetic, hypersim, vkitti2 draw it from "
                             "GT), a sparse_dir for image folders, or another metric source.")
        depth, placed = self.predict_placed(image, sparse, name)
        if placed is not None:
            placed = np.asarray(placed)
            if placed.shape != image.shape[:2] or placed.dtype != bool:
                raise ValueError(f"metric source {self.name} reported placed pixels as {placed.dtype} {placed.shape}; "
                                 f"they must be an HxW bool mask the size of the image {image.shape[:2]}.")
        return check_metric(depth, image.shape[:2], self.name), placed

    def __call__(self, image: np.ndarray, sparse: np.ndarray | None = None, name: str | None = None) -> np.ndarray:
        return self.with_placed(image, sparse, name)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class CompleteSource(MetricSource):
    """depthkit's ``complete`` stage (classical method or learned SDIM) on the sparse input."""

    needs_sparse = True

    def __init__(self, method: str | None = None, checkpoint=None, device: str = "cpu", dtype: str = "float32",
                 **options):
        from depthkit.checkpoints import CheckpointRef
        from depthkit.stages import DEFAULT_METHOD, LEARNED_METHOD, build_complete_stage

        method = method or (LEARNED_METHOD if checkpoint is not None else DEFAULT_METHOD)
        ref = CheckpointRef.open(checkpoint) if checkpoint is not None else None
        self.stage = build_complete_stage(ref, device=device, dtype=dtype, options={"method": method, **options})
        self.name = f"complete:{method}"
        from depthkit.checkpoints import checkpoint_identity

        self._identity = json.dumps({"source": self.name, "checkpoint": checkpoint_identity(ref and ref.root),
                                     "options": options, "dtype": dtype}, sort_keys=True, default=str)

    @property
    def identity(self) -> str:
        return self._identity

    def predict(self, image, sparse, name):
        return self.predict_placed(image, sparse, name)[0]

    def predict_placed(self, image, sparse, name):
        result = self.stage.run(image, np.asarray(sparse, np.float32), None)
        placed = result.extras.get("placed")
        return result.depth, None if placed is None else placed > 0


class UniDepthSource(MetricSource):
    """UniDepth (V1 or V2 by the model id) from the ``unidepth`` package; weights from the hub or a folder."""

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32"):
        try:
            import unidepth.models as unidepth_models
        except ImportError as exc:
            raise ImportError(
                "metric source 'unidepth' needs the unidepth package, which is not installed. Install it from "
                "https://github.com/lpiccinelli-eth/UniDepth (pip install git+https://github.com/lpiccinelli-eth/"
                "UniDepth), or choose another source: complete[:METHOD], hf:DIR (a transformers depth model) or "
                "npy:DIR (precomputed metric depth)."
            ) from exc
        import torch

        from depthkit.dtypes import torch_dtype

        self.model_id = model_id or DEFAULT_UNIDEPTH
        cls = unidepth_models.UniDepthV2 if "v2" in self.model_id.lower() else unidepth_models.UniDepthV1
        self.model = cls.from_pretrained(self.model_id).to(device=device, dtype=torch_dtype(dtype)).eval()
        self.device, self.torch = device, torch
        self.name = f"unidepth:{self.model_id}"

    def predict(self, image, sparse, name):
        torch = self.torch
        rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)
        with torch.inference_mode():
            out = self.model.infer(rgb)
        return out["depth"].reshape(image.shape[:2]).float().cpu().numpy()


class HFDepthSource(MetricSource):
    """A transformers depth-estimation model folder (never ``trust_remote_code``)."""

    def __init__(self, model_dir, device: str = "cpu", dtype: str = "float32", output: str = "auto"):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from depthkit.dtypes import torch_dtype

        if output not in HF_OUTPUTS:
            raise ValueError(f"hf source option output={output!r}; allowed: {', '.join(HF_OUTPUTS)}.")
        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            present = sorted(p.name for p in path.iterdir()) if path.is_dir() else "(no such folder)"
            raise FileNotFoundError(f"hf metric source {path} is not a transformers model folder: config.json is "
                                    f"missing (found: {present}). Save one with model.save_pretrained(DIR) and "
                                    "image_processor.save_pretrained(DIR).")
        self.model = AutoModelForDepthEstimation.from_pretrained(str(path), dtype=torch_dtype(dtype))
        self.model = self.model.to(device).eval()
        try:  # the PIL backend: the torchvision one is unavailable in CPU-only installs
            self.processor = AutoImageProcessor.from_pretrained(str(path), backend="pil")
        except (TypeError, ValueError, ImportError):
            self.processor = AutoImageProcessor.from_pretrained(str(path))
        if output == "auto":
            kind = getattr(self.model.config, "depth_estimation_type", None)
            if kind not in ("metric", "relative"):
                raise ValueError(f"hf metric source {path}: its config does not say whether it predicts metric or "
                                 "relative depth (no depth_estimation_type). Set metric.options.output to metric, "
                                 "relative_disparity or relative_depth.")
            output = "metric" if kind == "metric" else "relative_disparity"
        self.output, self.device = output, device
        self.needs_sparse = output != "metric"
        self.name = f"hf:{path}"
        from depthkit.checkpoints import folder_identity

        self._identity = f"{self.name}|{folder_identity(path)}|{output}|{dtype}"

    @property
    def identity(self) -> str:
        return self._identity

    def predict(self, image, sparse, name):
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        post = self.processor.post_process_depth_estimation(out, target_sizes=[image.shape[:2]])
        pred = post[0]["predicted_depth"].float().cpu().numpy()
        if self.output == "metric":
            return pred
        from depthkit.geometry import align_depth, align_disparity

        measured = np.asarray(sparse) > 0
        if measured.sum() < 2:
            raise ValueError(f"{self.name} predicts relative depth; aligning it needs >= 2 measured sparse pixels, "
                             f"image {name or '?'} has {int(measured.sum())}.")
        if self.output == "relative_disparity":
            return align_disparity(pred, sparse, measured)
        return np.clip(align_depth(pred, sparse, measured), 0.0, None)


class NpySource(MetricSource):
    """Precomputed metric depth ``DIR/<name>.npy`` (HxW float32 metres)."""

    def __init__(self, directory):
        self.root = Path(directory).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"npy metric source folder {self.root} does not exist. Write one HxW float32 .npy "
                                    "of metres per training image, named after the image (<name>.npy).")
        self.name = f"npy:{self.root}"

    def path_for(self, name: str) -> Path:
        """``DIR/<name>.npy``, else ``DIR/<last part of name>.npy``; FileNotFoundError naming both when neither
        exists. Names cannot point outside DIR."""
        from depthkit.checkpoints import safe_join

        if not name:
            raise ValueError(f"{self.name} needs the image's name to find its .npy file.")
        candidates = [safe_join(self.root, f"{name}.npy"), self.root / f"{Path(name).name}.npy"]
        for c in candidates:
            if c.is_file():
                return c
        raise FileNotFoundError(f"{self.name}: no precomputed metric depth for image {name!r}: looked for "
                                f"{candidates[0]} and {candidates[1]}.")

    def predict(self, image, sparse, name):
        from depthkit.io import read_depth

        return read_depth(self.path_for(name))


class CallableSource(MetricSource):
    """Wraps ``fn(image, sparse, name) -> HxW metres`` (custom models, tests)."""

    def __init__(self, fn: Callable, name: str | None = None, needs_sparse: bool = False):
        self.fn, self.needs_sparse = fn, needs_sparse
        self.name = name or getattr(fn, "__name__", "callable")

    def predict(self, image, sparse, name):
        return self.fn(image, sparse, name)


def build_metric_source(spec, checkpoint=None, device: str = "cpu", dtype: str = "float32",
                        **options) -> MetricSource:
    """The metric source for ``spec`` (see the module docstring) or a callable wrapped as one.

    ``checkpoint`` goes to ``complete`` (for ``sdim``); ``options`` to the source (``output`` for hf; stage options
    for complete). Raises ``ValueError`` / ``ImportError`` / ``FileNotFoundError`` naming what is missing.
    """
    if isinstance(spec, MetricSource):
        return spec
    if callable(spec):
        return CallableSource(spec, **options)
    kind, arg = parse_source_spec(spec)
    if kind == "complete":
        return CompleteSource(arg, checkpoint=checkpoint, device=device, dtype=dtype, **options)
    if options and kind != "hf":
        raise ValueError(f"metric source {kind!r} takes no options; received {sorted(options)}.")
    if kind == "unidepth":
        return UniDepthSource(arg, device=device, dtype=dtype)
    if kind == "hf":
        return HFDepthSource(arg, device=device, dtype=dtype, **options)
    return NpySource(arg)
