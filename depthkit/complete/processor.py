"""Image + text processing for Qwen2.5-VL without torchvision, and THE patchify used for every map fed to the model.

transformers' own ``Qwen2_5_VLProcessor.__init__`` checks its sub-processors against classes that need torchvision
(not installable here, see SPEC section 8), and ``AutoProcessor`` then silently returns a bare tokenizer.
:class:`SDIMProcessor` is that processor with a plain ``__init__``: a PIL image processor
(``Qwen2VLImageProcessorPil``) plus a tokenizer; images only (no video). Its ``__call__`` is the stock one, so
placeholder expansion and outputs are transformers' own: ``input_ids``, ``attention_mask``, ``pixel_values``
(sum_i N_i x C*T*P*P), ``image_grid_thw`` (num_images x 3) and always ``mm_token_type_ids`` (without them Qwen2.5-VL
silently falls back to 1-D positions).

Geometry (all sizes in pixels):

- :func:`resized_size` — the size the image processor resizes an HxW image to (``smart_resize``: multiples of
  ``patch_size * merge_size``, 28 for Qwen2.5-VL, pixel count within [min_pixels, max_pixels]).
- :func:`patchify_like_processor` — turns any CxH'xW' map at the resized size into the exact flattened patch layout
  the image processor gives ``pixel_values`` (merge-window order, channel-major, temporal copies), so the depth
  branch's output is tokenised exactly like RGB. :func:`unpatchify_like_processor` is its inverse (first temporal
  copy) and :func:`rgb_from_pixel_values` recovers the resized [0, 1] RGB the vision tower saw.
- :func:`map_to_resized` — which resized pixel an input pixel lands on (pixel-centre convention, as image
  resampling uses); defined in :mod:`depthkit.sparse_resize`, which scatters sparse maps with it, and re-exported
  here for the prompt coordinates.
- :func:`process_image_text` — the processor call for one RGB image and its text, channel format stated.

Loading: :func:`load_processor` takes a local directory in the released layout (``preprocessor_config.json`` +
tokenizer files, e.g. a downloaded ``Qwen/Qwen2.5-VL-3B-Instruct``) or a hub id (network or HF cache).
``SDIMProcessor.save_pretrained(dir)`` writes that same layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from depthkit.sparse_resize import map_to_resized

# `SDIMProcessor` is also public; it is created on first access (module __getattr__) because defining it imports
# transformers' processing stack (seconds).
__all__ = [
    "load_processor",
    "build_tiny_processor",
    "processor_geometry",
    "resized_size",
    "map_to_resized",
    "patchify",
    "patchify_like_processor",
    "unpatchify_like_processor",
    "rgb_from_pixel_values",
    "process_image_text",
]


def _processor_class():
    # Built lazily: importing transformers' processing stack costs seconds, and depthkit.complete must stay light.
    global _SDIM_PROCESSOR_CLASS
    if _SDIM_PROCESSOR_CLASS is not None:
        return _SDIM_PROCESSOR_CLASS
    from transformers import Qwen2_5_VLProcessor

    class SDIMProcessor(Qwen2_5_VLProcessor):
        """``Qwen2_5_VLProcessor`` for images + text with a plain ``__init__`` (no torchvision needed).

        Args:
            image_processor: a ``Qwen2VLImageProcessorPil`` (or any object with the same ``__call__`` output and
                ``patch_size``, ``merge_size``, ``temporal_patch_size``, ``size``, ``image_mean``, ``image_std``).
            tokenizer: the matching tokenizer (must know ``<|image_pad|>``).
            chat_template: defaults to the tokenizer's.
        """

        def __init__(self, image_processor, tokenizer, chat_template=None):
            # Deliberately not calling ProcessorMixin.__init__: its class checks import torchvision-only classes.
            self.image_processor = image_processor
            self.tokenizer = tokenizer
            self.chat_template = chat_template if chat_template is not None else tokenizer.chat_template
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
                raise ValueError(
                    f"the tokenizer has no {self.image_token!r} token; use a Qwen2.5-VL tokenizer "
                    "(or depthkit.complete.tokenizer.build_offline_tokenizer())."
                )

        def save_pretrained(self, save_directory, **kwargs):
            """Write the released layout: tokenizer files, ``preprocessor_config.json``, ``chat_template.jinja``."""
            save_directory = Path(save_directory)
            save_directory.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(str(save_directory))
            self.image_processor.save_pretrained(str(save_directory))
            if self.chat_template:
                (save_directory / "chat_template.jinja").write_text(self.chat_template)
            return [str(save_directory)]

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
            return load_processor(pretrained_model_name_or_path, **kwargs)

    _SDIM_PROCESSOR_CLASS = SDIMProcessor
    return SDIMProcessor


_SDIM_PROCESSOR_CLASS = None


def __getattr__(name):  # `from depthkit.complete.processor import SDIMProcessor` builds the class on first use
    if name == "SDIMProcessor":
        return _processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def process_image_text(processor, image, text: str) -> dict:
    """``processor(images=[image], text=[text], return_tensors="pt")`` for one HxWx3 RGB image, with the channel
    format stated (``channels_last``): left to itself the image processor guesses it, and takes an image 1, 3 or 4
    pixels tall for channels-first. Every caller in depthkit (engine, training batches, the per-pixel reference)
    goes through here."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB (channels last); got shape {image.shape}.")
    return processor(images=[image], text=[text], return_tensors="pt", input_data_format="channels_last")


def load_processor(path_or_id: str | Path, min_pixels: int | None = None, max_pixels: int | None = None, **kwargs):
    """Load a released Qwen2.5-VL processor as an :class:`SDIMProcessor` (offline-first).

    Args:
        path_or_id: a directory with ``preprocessor_config.json`` and tokenizer files, or a hub id (needs the
            network or a populated HF cache; with ``HF_HUB_OFFLINE=1`` only the cache is used).
        min_pixels, max_pixels: override the resize bounds (pixels, H*W), e.g. ``max_pixels=448*448`` to cap the
            number of image tokens.
        kwargs: passed to both ``from_pretrained`` calls (``revision``, ``cache_dir``, ...).
    """
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from depthkit.checkpoints import is_hub_id

    local = Path(path_or_id).expanduser()
    text = str(path_or_id)
    if not is_hub_id(text) and not local.exists():
        raise FileNotFoundError(
            f"{local} does not exist (and is not a hub id of the form 'org/name'); give a Qwen2.5-VL model "
            "directory or a hub id such as 'Qwen/Qwen2.5-VL-3B-Instruct'."
        )
    if local.exists() and not (local / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{local} has no preprocessor_config.json; point at a Qwen2.5-VL model directory (it holds "
            "preprocessor_config.json and tokenizer files) or write one with SDIMProcessor.save_pretrained(dir)."
        )
    size_kwargs = {}
    if min_pixels is not None:
        size_kwargs["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        size_kwargs["max_pixels"] = int(max_pixels)
    try:
        source = str(local) if local.exists() else text
        kwargs["trust_remote_code"] = False  # never run code shipped with a checkpoint (no prompt either)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source, **kwargs, **size_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load a processor from {str(path_or_id)!r}: {err}\nGive a local directory, or a hub id that "
            "is in the HF cache (offline) or reachable (unset HF_HUB_OFFLINE)."
        ) from err
    chat_template = None
    if local.is_dir():
        if (local / "chat_template.jinja").is_file():
            chat_template = (local / "chat_template.jinja").read_text()
        elif (local / "chat_template.json").is_file():
            chat_template = json.loads((local / "chat_template.json").read_text()).get("chat_template")
    return _processor_class()(image_processor, tokenizer, chat_template=chat_template)


def build_tiny_processor(tokenizer=None, min_pixels: int = 28 * 28, max_pixels: int = 112 * 112, **image_kwargs):
    """A processor for tiny test models: offline tokenizer (built if not given) + PIL image processor with Qwen's
    patch 14 / merge 2 / temporal 2 and small pixel bounds so test images stay a few dozen tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if tokenizer is None:
        from depthkit.complete.tokenizer import build_offline_tokenizer

        tokenizer = build_offline_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, **image_kwargs)
    return _processor_class()(image_processor, tokenizer)


def processor_geometry(processor) -> dict:
    """``patch_size``, ``merge_size``, ``temporal_patch_size``, ``min_pixels``, ``max_pixels``, ``image_mean``,
    ``image_std`` of a processor or of its image processor."""
    ip = getattr(processor, "image_processor", processor)
    for name in ("patch_size", "merge_size", "temporal_patch_size", "size"):
        if not hasattr(ip, name):
            raise TypeError(f"{type(ip).__name__} has no {name!r}; pass a Qwen2-VL-style (image) processor.")
    size = dict(ip.size)
    return {
        "patch_size": int(ip.patch_size),
        "merge_size": int(ip.merge_size),
        "temporal_patch_size": int(ip.temporal_patch_size),
        "min_pixels": int(size.get("shortest_edge", size.get("min_pixels", 56 * 56))),
        "max_pixels": int(size.get("longest_edge", size.get("max_pixels", 28 * 28 * 1280))),
        "image_mean": tuple(float(v) for v in ip.image_mean),
        "image_std": tuple(float(v) for v in ip.image_std),
    }


def resized_size(height: int, width: int, processor) -> tuple[int, int]:
    """(H', W') in pixels that ``processor`` resizes an HxW image to (multiples of patch*merge; 28 for Qwen)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    g = processor_geometry(processor)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}.")
    return smart_resize(int(height), int(width), factor=g["patch_size"] * g["merge_size"],
                        min_pixels=g["min_pixels"], max_pixels=g["max_pixels"])


def _as_tensor(x):
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))


def patchify(image, patch_size: int, merge_size: int, temporal_patch_size: int):
    """CxHxW map (torch or numpy) → (N, C*T*P*P) patches in Qwen2-VL's ``pixel_values`` layout.

    N = (H/P) * (W/P). Rows go merge-window by merge-window (each ``merge x merge`` block of patches is contiguous,
    windows in raster order); each row is channel-major ``(C, T, P, P)`` with the map copied over the
    T = ``temporal_patch_size`` frames, exactly as the image processor does for a still image. Differentiable
    (pure reshape/permute/expand) for torch input. This is the one implementation in depthkit; the model and
    :func:`patchify_like_processor` both call it.
    """
    p, m, t = int(patch_size), int(merge_size), int(temporal_patch_size)
    x = _as_tensor(image)
    if x.dim() != 3:
        raise ValueError(f"patchify takes one CxHxW map; got shape {tuple(x.shape)}.")
    c, h, w = x.shape
    if h % (p * m) or w % (p * m):
        raise ValueError(
            f"map is {h}x{w} but must be a multiple of patch_size*merge_size={p * m} in both sides: resize it to "
            "resized_size(H, W, processor) first."
        )
    gh, gw = h // p, w // p
    x = x.reshape(c, gh // m, m, p, gw // m, m, p)
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, P, P)
    x = x.unsqueeze(5).expand(*x.shape[:5], t, p, p)  # temporal copies of a still image
    return x.reshape(gh * gw, c * t * p * p)


def patchify_like_processor(image, processor):
    """CxH'xW' map at the processor's resized size → (N, C*T*P*P), the exact layout of the processor's
    ``pixel_values`` (see :func:`patchify`); e.g. the depth branch's output O, patchified like RGB."""
    g = processor_geometry(processor)
    return patchify(image, g["patch_size"], g["merge_size"], g["temporal_patch_size"])


def unpatchify_like_processor(patches, grid_thw, processor, channels: int = 3):
    """Inverse of :func:`patchify_like_processor` for one image: (N, C*T*P*P) → CxH'xW' (first temporal copy).

    ``grid_thw`` = (1, H'/P, W'/P), one row of the processor's ``image_grid_thw``.
    """
    g = processor_geometry(processor)
    p, m, t = g["patch_size"], g["merge_size"], g["temporal_patch_size"]
    x = _as_tensor(patches)
    gt, gh, gw = (int(v) for v in grid_thw)
    if gt != 1:
        raise ValueError(f"grid_thw={tuple(grid_thw)}: only still images (t=1) are supported.")
    if x.shape != (gh * gw, channels * t * p * p):
        raise ValueError(f"patches have shape {tuple(x.shape)}; expected {(gh * gw, channels * t * p * p)} for "
                         f"grid {gh}x{gw}, {channels} channels, patch {p}, temporal {t}.")
    x = x.reshape(gh // m, gw // m, m, m, channels, t, p, p)[:, :, :, :, :, 0]
    x = x.permute(4, 0, 2, 5, 1, 3, 6)  # (C, gh/m, m, P, gw/m, m, P)
    return x.reshape(channels, gh * p, gw * p)


def rgb_from_pixel_values(pixel_values, image_grid_thw, processor) -> list:
    """The resized RGB images the vision tower sees, as a list of 3xH'xW' float tensors in [0, 1] (one per image),
    recovered from the processor's ``pixel_values`` by undoing patchify and mean/std normalisation."""
    import torch

    g = processor_geometry(processor)
    pv = _as_tensor(pixel_values).float()
    grids = torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()
    mean = torch.tensor(g["image_mean"]).view(3, 1, 1)
    std = torch.tensor(g["image_std"]).view(3, 1, 1)
    out, start = [], 0
    for grid in grids:
        n = grid[0] * grid[1] * grid[2]
        img = unpatchify_like_processor(pv[start:start + n], grid, processor)
        out.append((img * std + mean).clamp(0.0, 1.0))
        start += n
    if start != pv.shape[0]:
        raise ValueError(f"pixel_values has {pv.shape[0]} patches but image_grid_thw accounts for {start}.")
    return out
