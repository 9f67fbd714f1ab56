"""Lotus: single-step, x0-predicting diffusion depth estimation built from diffusers parts (native, no pipeline).

Lotus (He et al., "Lotus: Diffusion-based Visual Foundation Model for High-quality Dense Prediction") fine-tunes a
Stable Diffusion ``UNet2DConditionModel`` to predict the clean depth latent x0 in one step at the fixed timestep
t = 999. What makes it small enough to write once here:

- **Task switch.** One 4-dim embedding ``cat(sin v, cos v)``, v = [1, 0] for depth and [0, 1] for the RGB
  reconstruction "detail preserver", enters the UNet through ``class_embed_type="projection"``
  (``projection_class_embeddings_input_dim=4``). :func:`task_embedding` is the only place it is built.
- **Layouts.** Lotus-G (``mode="generative"``): the UNet sees 8 channels, ``cat(image latent, depth-or-noise
  latent)``; inference feeds pure Gaussian noise as the second half. Lotus-D (``mode="direct"``): 4 channels, the
  image latent alone. SharpDepth's sharpener is a Lotus-G UNet that receives a *gated* latent instead of noise.
- **Latents.** ``AutoencoderKL`` encodes with the posterior mean (no sampling: deterministic), times
  ``vae.config.scaling_factor`` (minus ``shift_factor`` where a VAE has one); depth is decoded as the mean of the
  3 output channels. Depth is normalised to [-1, 1] by :mod:`depthkit.sharpen.normalize`.
- **Text.** The UNet is conditioned on the CLIP embedding of the empty prompt, tokenised *without padding* as the
  public Lotus and SharpDepth code do (BOS + EOS: ``1 x 2 x 1024`` for SD2's encoder; a 77-token padded prompt would
  add 75 cross-attention keys and change every output). It is a constant, so it is computed once when weights are
  imported (:func:`compute_empty_prompt_embeds`) and stored beside them as ``empty_prompt_embeds.safetensors``; no
  text encoder is ever loaded at run time.
- **Timestep.** t is passed explicitly: diffusers' ``set_timesteps(1)`` would give t = 0 unless
  ``timestep_spacing="trailing"``.

Checkpoint layout written by :meth:`LotusModel.save_pretrained` and read by :meth:`LotusModel.from_pretrained`::

    DIR/unet/       diffusers UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)
    DIR/vae/        diffusers AutoencoderKL
    DIR/scheduler/  DDPMScheduler config (its alphas_cumprod drive SDS noising during SharpDepth training)
    DIR/empty_prompt_embeds.safetensors   {"empty_prompt_embeds": 1 x L x cross_attention_dim} (L = 2 imported)
    DIR/lotus.json  {"format": "depthkit-lotus", "mode", "norm", "timestep", "default_processing_resolution", ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthkit.checkpoint_errors import CheckpointError
from depthkit.dtypes import torch_dtype
from depthkit.sharpen.folders import (  # noqa: F401  (EMBEDS_KEY, HUB_PATTERNS, resolve_model_dir: re-exported)
    EMBEDS_FILE,
    EMBEDS_KEY,
    HUB_PATTERNS,
    LOTUS_JSON,
    check_model_dir,
    load_diffusers_model,
    load_empty_prompt_embeds,
    resolve_model_dir,
)
from depthkit.sharpen.normalize import SPACES, replicate3

__all__ = [
    "TASKS", "LOTUS_MODES", "LOTUS_JSON", "EMBEDS_FILE", "HUB_PATTERNS", "task_embedding", "check_lotus_mode",
    "default_scheduler_config", "image_to_tensor", "resize_bilinear", "pad_to_multiple", "LotusModel", "resolve_model_dir",
]

TASKS = {"depth": (1.0, 0.0), "rgb": (0.0, 1.0)}
LOTUS_MODES = ("generative", "direct")
"""Lotus-G (8-channel UNet input: image latent + depth-or-noise latent) and Lotus-D (image latent alone)."""
FORMAT = "depthkit-lotus"
FORMAT_VERSION = 1


def has_safetensors(folder) -> bool:
    """True when a model folder holds ``.safetensors`` weights (loaders then refuse to fall back to ``.bin``)."""
    return any(Path(folder).glob("*.safetensors"))


@dataclass
class LotusJson:
    """The schema of ``lotus.json`` (:meth:`LotusModel.config_dict`), checked by ``check_typed_fields`` on read."""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    depthkit_version: str = ""
    mode: str | None = None
    norm: str | None = None
    timestep: int = 999
    task: str = "depth"
    default_processing_resolution: int | None = None
    vae_scale_factor: int | None = None
    sharpener: bool = False
    """True when :meth:`SharpDepth.save_pretrained` wrote the folder: its ``sharpdepth.json`` must then be there
    (:func:`depthkit.sharpen.folders.check_sharpener_files`); absent or false in a bare Lotus folder."""


def task_embedding(task: str = "depth", batch_size: int = 1, device=None, dtype=None) -> torch.Tensor:
    """Lotus's task switch: ``B x 4`` tensor ``cat(sin v, cos v)`` with v = [1, 0] (depth) or [0, 1] (rgb)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}; received {task!r}.")
    v = torch.tensor(TASKS[task], dtype=torch.float32)
    emb = torch.cat([torch.sin(v), torch.cos(v)])
    return emb.expand(int(batch_size), 4).to(device=device, dtype=dtype or torch.float32)


def default_scheduler_config() -> dict:
    """DDPM schedule of Stable Diffusion 2 (what Lotus was fine-tuned from), predicting x0 ("sample")."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="sample", clip_sample=False, steps_offset=1, timestep_spacing="trailing")


def check_lotus_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`LOTUS_MODES`."""
    if mode not in LOTUS_MODES:
        raise ValueError(f"mode must be one of {LOTUS_MODES}; received {mode!r}.")


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``B x C x H x W`` (antialiased when shrinking, unless ``antialias`` is False), computed in
    float32, input dtype out."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = antialias and (size[0] < x.shape[-2] or size[1] < x.shape[-1])
    y = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return y.to(x.dtype)


def pad_to_multiple(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad ``B x C x h x w`` at the bottom and right to ``size`` by repeating the last row / column (the Marigold
    image processor's "replicate" padding); crop back with ``x[..., :h, :w]``."""
    ph, pw = int(size[0]) - x.shape[-2], int(size[1]) - x.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to the smaller {tuple(size)}.")
    if ph == 0 and pw == 0:
        return x
    return F.pad(x.float(), (0, pw, 0, ph), mode="replicate").to(x.dtype)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB → ``1 x 3 x H x W`` float32 in [-1, 1] (CPU). No checks: the caller validated ``image``
    (:meth:`LotusModel.prepare_image` for public entries, :class:`depthkit.pipeline.Pipeline` for stages)."""
    # a copy: torch warns about (and could write to) a read-only array, such as np.asarray of a PIL image
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


class LotusModel(nn.Module):
    """A Lotus depth model: UNet + VAE + stored empty-prompt embedding.

    Args:
        unet: ``UNet2DConditionModel`` with ``class_embed_type="projection"``, ``projection_class_embeddings_input_dim
            =4`` and ``in_channels`` = 2 x (generative) or 1 x (direct) the VAE's latent channels.
        vae: ``AutoencoderKL``.
        empty_prompt_embeds: ``1 x L x cross_attention_dim`` (or ``L x D``) text embedding of "".
        mode: ``"generative"`` (Lotus-G) or ``"direct"`` (Lotus-D).
        norm: the space the model predicts in, ``"depth"`` or ``"disparity"`` (see :mod:`.normalize`).
        scheduler: a diffusers DDPM-family scheduler; default :func:`default_scheduler_config`.
        timestep: the fixed timestep; default ``num_train_timesteps - 1`` (999).
        default_processing_resolution: longest side (pixels) used by :meth:`predict` when none is given; None means
            the input's own size (padded to a multiple of :attr:`vae_scale_factor`). Released models use 768.
    """

    def __init__(self, unet, vae, empty_prompt_embeds: torch.Tensor, mode: str = "generative", norm: str = "depth",
                 scheduler=None, timestep: int | None = None, default_processing_resolution: int | None = None):
        super().__init__()
        check_lotus_mode(mode)
        if norm not in SPACES:
            raise ValueError(f"norm must be one of {SPACES}; received {norm!r}.")
        cfg = unet.config
        if cfg.class_embed_type != "projection" or cfg.projection_class_embeddings_input_dim != 4:
            raise ValueError(
                f"the UNet must take Lotus's 4-dim task embedding (class_embed_type='projection', "
                f"projection_class_embeddings_input_dim=4); received class_embed_type={cfg.class_embed_type!r}, "
                f"projection_class_embeddings_input_dim={cfg.projection_class_embeddings_input_dim}."
            )
        latent = int(vae.config.latent_channels)
        expected = 2 * latent if mode == "generative" else latent
        if cfg.in_channels != expected or cfg.out_channels != latent:
            other = "direct" if mode == "generative" else "generative"
            raise ValueError(
                f"mode={mode!r} needs a UNet with in_channels={expected}, out_channels={latent} (VAE latent channels "
                f"{latent}); received in_channels={cfg.in_channels}, out_channels={cfg.out_channels}. "
                f"Is this a Lotus-{'D' if mode == 'generative' else 'G'} model? Then use mode={other!r}."
            )
        embeds = torch.as_tensor(empty_prompt_embeds)
        if embeds.ndim == 2:
            embeds = embeds[None]
        if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[1] < 1 or embeds.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(
                f"empty_prompt_embeds must be 1 x L x {cfg.cross_attention_dim} (L >= 1 tokens; the UNet's "
                "cross_attention_dim last); "
                f"received {tuple(embeds.shape)}."
            )
        if scheduler is None:
            from diffusers import DDPMScheduler

            scheduler = DDPMScheduler(**default_scheduler_config())
        n_train = int(scheduler.config.num_train_timesteps)
        timestep = n_train - 1 if timestep is None else int(timestep)
        if not 0 <= timestep < n_train:
            raise ValueError(f"timestep must be in [0, {n_train - 1}]; received {timestep}.")
        if default_processing_resolution is not None and int(default_processing_resolution) <= 0:
            raise ValueError(f"default_processing_resolution must be a positive int or None; received "
                             f"{default_processing_resolution!r}.")
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.mode = mode
        self.norm = norm
        self.timestep = timestep
        self.default_processing_resolution = (None if default_processing_resolution is None
                                              else int(default_processing_resolution))
        self.register_buffer("empty_prompt_embeds", embeds.detach().clone(), persistent=True)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side: 2 ** (VAE blocks − 1); 8 for Stable Diffusion."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution_multiple(self) -> int:
        """Training crops are multiples of this: vae_scale_factor x 2 ** (UNet down blocks − 1); 64 for SD. (At
        inference sizes are only padded to a multiple of :attr:`vae_scale_factor`; the UNet upsamples to the skip
        connections' sizes.)"""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.down_block_types) - 1)

    # ----------------------------------------------------------------- latents
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in [-1, 1] → scaled latent ``B x C x H/f x W/f`` (posterior mean, f = vae_scale_factor)."""
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        shift = self.vae.config.shift_factor or 0.0
        return (dist.mean - shift) * self.vae.config.scaling_factor

    def encode_depth(self, depth_norm: torch.Tensor) -> torch.Tensor:
        """Normalised depth ``B x 1 x H x W`` in [-1, 1] → latent (replicated to 3 channels first)."""
        return self.encode(replicate3(depth_norm))

    def decode_depth(self, latent: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        """Latent → ``B x 1 x H x W`` normalised depth (mean of the 3 decoded channels); ``clamp`` to [-1, 1].

        Training keeps ``clamp=False`` so losses see (and can pull back) values outside the range.
        """
        shift = self.vae.config.shift_factor or 0.0
        z = latent.to(self.vae.dtype) / self.vae.config.scaling_factor + shift
        out = self.vae.decode(z).sample.mean(dim=1, keepdim=True)
        return out.clamp(-1.0, 1.0) if clamp else out

    def prompt_embeds(self, batch_size: int) -> torch.Tensor:
        return self.empty_prompt_embeds.expand(int(batch_size), -1, -1).to(self.dtype)

    def timesteps(self, batch_size: int, timestep=None) -> torch.Tensor:
        """``[B]`` long tensor of the fixed timestep (or of ``timestep``: an int or a ``[B]`` tensor)."""
        if timestep is None:
            timestep = self.timestep
        if isinstance(timestep, torch.Tensor) and timestep.ndim == 1:
            return timestep.to(self.device, torch.long)
        return torch.full((int(batch_size),), int(timestep), device=self.device, dtype=torch.long)

    def noise_like(self, latent: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard Gaussian noise shaped like ``latent`` (drawn in float32, so a seed gives the same noise in any
        dtype)."""
        noise = torch.randn(latent.shape, generator=generator, device=latent.device, dtype=torch.float32)
        return noise.to(latent.dtype)

    def predict_latent(self, image_latent: torch.Tensor, depth_latent_or_noise: torch.Tensor | None = None, *,
                       timestep=None, task: str = "depth", unet=None) -> torch.Tensor:
        """One UNet step: the predicted clean latent x0, ``B x C x h x w``.

        Args:
            image_latent: :meth:`encode` of the image.
            depth_latent_or_noise: generative mode only: pure noise (Lotus inference), a gated latent (SharpDepth)
                or a noised latent (SDS teacher). Must be None in direct mode.
            timestep: int or ``[B]`` tensor; default the fixed :attr:`timestep` (999).
            task: ``"depth"`` or ``"rgb"`` (detail preserver).
            unet: run another UNet with the same layout (an EMA copy, a frozen teacher); default ``self.unet``.
        """
        unet = self.unet if unet is None else unet
        b = image_latent.shape[0]
        if self.mode == "generative":
            if depth_latent_or_noise is None:
                raise ValueError("a generative (Lotus-G) model needs depth_latent_or_noise: pass noise_like(latent) "
                                 "for plain Lotus inference.")
            if depth_latent_or_noise.shape != image_latent.shape:
                raise ValueError(f"depth_latent_or_noise has shape {tuple(depth_latent_or_noise.shape)}; it must "
                                 f"match image_latent {tuple(image_latent.shape)}.")
            # the image latent comes first: Lotus-G's conv_in was trained with this channel order
            sample = torch.cat([image_latent, depth_latent_or_noise], dim=1)
        else:
            if depth_latent_or_noise is not None:
                raise ValueError("a direct (Lotus-D) model takes the image latent alone; pass "
                                 "depth_latent_or_noise=None.")
            sample = image_latent
        dtype = next(unet.parameters()).dtype
        context = self.prompt_embeds(b).to(dtype)
        return unet(sample.to(dtype), self.timesteps(b, timestep), encoder_hidden_states=context,
                    class_labels=task_embedding(task, b, device=sample.device, dtype=dtype), return_dict=False)[0]

    # ----------------------------------------------------------------- images
    def processing_size(self, height: int, width: int, processing_resolution: int | None = None) -> tuple[int, int]:
        """Size the image is resized to before padding: the longest side becomes ``processing_resolution`` (default
        :attr:`default_processing_resolution`; None = the input's own size) and the other keeps the aspect ratio,
        ``side · res // longest`` as diffusers' Marigold image processor (which the public SharpDepth pipeline uses)
        computes it. :func:`pad_to_multiple` then pads it to a multiple of :attr:`vae_scale_factor` (8 for SD)."""
        res = self.default_processing_resolution if processing_resolution is None else processing_resolution
        if res is not None and (isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res <= 0):
            raise ValueError(f"processing_resolution must be a positive int (pixels, longest side) or None; "
                             f"received {processing_resolution!r}.")
        if res is None:
            return int(height), int(width)
        longest = max(height, width)
        return max(1, int(height) * int(res) // longest), max(1, int(width) * int(res) // longest)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` rounded up to multiples of :attr:`vae_scale_factor`, and to at least twice
        :attr:`resolution_multiple` (the UNet's lowest level then has 2 x 2 cells, so a tiny input is padded rather
        than refused): what the UNet sees. The floor is a depthkit choice: the public SharpDepth code pads to a
        multiple of 8 only, which differs for a side under 128 px with SD's UNet (a strip above about 6:1 at
        768 px)."""
        f, least = self.vae_scale_factor, 2 * self.resolution_multiple
        return max(least, -(-int(height) // f) * f), max(least, -(-int(width) // f) * f)

    def prepare_image(self, image) -> tuple[torch.Tensor, bool]:
        """HxWx3 uint8 ndarray or ``B x 3 x H x W`` float tensor in [-1, 1] → ``(tensor in [-1, 1] on the model's
        device, float32; single)`` where ``single`` says the input was one ndarray image."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image must be an HxWx3 uint8 RGB array; received shape {image.shape}, dtype "
                                 f"{image.dtype}. For tensors pass B x 3 x H x W floats in [-1, 1].")
            return image_to_tensor(image).to(self.device), True
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
                raise ValueError(f"a tensor image must be B x 3 x H x W floating point in [-1, 1]; received shape "
                                 f"{tuple(image.shape)}, dtype {image.dtype}.")
            lo, hi = float(image.min()), float(image.max())
            if lo < -1.001 or hi > 1.001:
                raise ValueError(f"a tensor image must be in [-1, 1]; received values in [{lo:.3g}, {hi:.3g}]. "
                                 "Map uint8 with x / 127.5 - 1.")
            return image.to(self.device, torch.float32), False
        raise ValueError(f"image must be an HxWx3 uint8 ndarray or a B x 3 x H x W tensor; received "
                         f"{type(image).__name__}.")

    def predict_normalized(self, image: torch.Tensor, generator: torch.Generator | None = None,
                           unet=None) -> torch.Tensor:
        """``B x 3 x h x w`` image in [-1, 1] (already at processing size) → ``B x 1 x h x w`` prediction in
        Lotus's normalised space (unclamped); pure noise as the second input in generative mode."""
        z_img = self.encode(image)
        second = self.noise_like(z_img, generator) if self.mode == "generative" else None
        return self.decode_depth(self.predict_latent(z_img, second, unet=unet))

    def predict(self, image, processing_resolution: int | None = None, generator: torch.Generator | None = None):
        """Affine-invariant depth (``norm="depth"``: 0 = near, 1 = far) or disparity (1 = near), in [0, 1], at the
        input resolution.

        Args:
            image: HxWx3 uint8 RGB ndarray (→ HxW float32 ndarray) or ``B x 3 x H x W`` tensor in [-1, 1]
                (→ ``B x 1 x H x W`` float32 tensor on the model's device).
            processing_resolution: longest side in pixels the model runs at (see :meth:`processing_size`; the
                image is padded to a multiple of the VAE factor, and the prediction cropped and resized back
                bilinearly).
            generator: noise for Lotus-G; default a fresh generator seeded 0, so calls are repeatable.
        """
        x, single = self.prepare_image(image)
        h, w = x.shape[-2:]
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0)
        with torch.inference_mode():
            hr, wr = self.processing_size(h, w, processing_resolution)
            x = pad_to_multiple(resize_bilinear(x, (hr, wr)), self.padded_size(hr, wr))
            pred = self.predict_normalized(x, generator)[..., :hr, :wr]
            unit = ((resize_bilinear(pred.float(), (h, w)) + 1.0) * 0.5).clamp(0.0, 1.0)
        return unit[0, 0].cpu().numpy() if single else unit

    # ----------------------------------------------------------------- save / load
    def config_dict(self) -> dict:
        from depthkit import __version__

        return {"format": FORMAT, "format_version": FORMAT_VERSION, "depthkit_version": __version__,
                "mode": self.mode, "norm": self.norm, "timestep": self.timestep, "task": "depth",
                "default_processing_resolution": self.default_processing_resolution,
                "vae_scale_factor": self.vae_scale_factor}

    def save_pretrained(self, directory, sharpener: bool = False) -> Path:
        """Write ``unet/``, ``vae/``, ``scheduler/``, the embeds file and ``lotus.json`` into ``directory``;
        ``sharpener``: mark the folder as a SharpDepth sharpener's (``"sharpener": true`` in ``lotus.json``), so that
        a copy that lost its ``sharpdepth.json`` is refused instead of loading as bare Lotus."""
        from safetensors.torch import save_file

        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(root / "unet", safe_serialization=True)
        self.vae.save_pretrained(root / "vae", safe_serialization=True)
        self.scheduler.save_pretrained(root / "scheduler")
        save_file({EMBEDS_KEY: self.empty_prompt_embeds.detach().cpu().contiguous()}, str(root / EMBEDS_FILE))
        meta = {**self.config_dict(), **({"sharpener": True} if sharpener else {})}
        (root / LOTUS_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return root

    @classmethod
    def from_pretrained(cls, path_or_hub_id, device=None, dtype=None, mode: str | None = None,
                        norm: str | None = None, unet_subfolder: str = "unet", **overrides) -> LotusModel:
        """Load a directory written by :meth:`save_pretrained` (or an imported release), local first.

        A hub id (``owner/name``) is tried only when no such local path exists, downloading only the files used
        here; ``HF_HUB_OFFLINE=1`` restricts it to the local cache. ``mode``/``norm`` override ``lotus.json``
        (without one, mode follows the UNet's in_channels and norm defaults to "depth"). ``unet_subfolder`` picks
        another UNet folder of the same checkpoint (e.g. SharpDepth's separate ``lotus_unet/``). ``device``/
        ``dtype`` (``"bfloat16"`` etc., see :mod:`depthkit.dtypes`) place the model. Raises ``CheckpointError``
        naming what is missing. This is the public entry: it resolves the location once and calls :meth:`from_dir`.
        """
        dtype = torch_dtype(dtype)  # a bad name fails before any download
        return cls.from_dir(resolve_model_dir(path_or_hub_id), device=device, dtype=dtype, mode=mode, norm=norm,
                            unet_subfolder=unet_subfolder, **overrides)

    @classmethod
    def from_dir(cls, root: Path, device=None, dtype: torch.dtype | None = None, mode: str | None = None,
                 norm: str | None = None, unet_subfolder: str = "unet", **overrides) -> LotusModel:
        """Load from ``root``, a local directory already resolved by the caller (:func:`resolve_model_dir`), with
        ``dtype`` a ``torch.dtype`` or None; the other arguments are those of :meth:`from_pretrained`."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        check_model_dir(root, unet_subfolder)
        given = {k: v for k, v in {"mode": mode, "norm": norm, **overrides}.items() if v is not None}
        meta = {}
        if (root / LOTUS_JSON).is_file():
            from depthkit.checkpoints import BOUNDS, bounded, check_format_version, check_typed_fields, read_json
            meta = check_typed_fields(LotusJson, read_json(root / LOTUS_JSON, "Lotus settings"), root / LOTUS_JSON)
            if meta.get("format") != FORMAT:  # the version: check_format_version below
                raise CheckpointError(f"{root / LOTUS_JSON} is not a depthkit-lotus v{FORMAT_VERSION} config "
                                      f"(format={meta.get('format')!r}, version={meta.get('format_version')!r}).")
            check_format_version(meta.get("format_version", FORMAT_VERSION), FORMAT_VERSION, root / LOTUS_JSON)
            bounded("default_processing_resolution", meta.get("default_processing_resolution"),
                    *BOUNDS["processing_resolution"], root / LOTUS_JSON, optional=True)
        from depthkit.checkpoints import BOUNDS, bounded, read_json

        scheduler_json = root / "scheduler" / "scheduler_config.json"
        if scheduler_json.is_file():  # its length is allocated by the scheduler: bounded before it is built
            stored = read_json(scheduler_json, "scheduler settings")
            if isinstance(stored, dict):
                bounded("num_train_timesteps", stored.get("num_train_timesteps"), *BOUNDS["num_train_timesteps"],
                        scheduler_json, optional=True)
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        kwargs["use_safetensors"] = True  # safetensors only: a pickle .bin is refused (check_model_dir names it)
        try:
            unet = load_diffusers_model(UNet2DConditionModel, root / unet_subfolder, "the UNet weights", **kwargs)
            vae = load_diffusers_model(AutoencoderKL, root / "vae", "the VAE weights", **kwargs)
            scheduler = DDPMScheduler.from_pretrained(str(root / "scheduler"))
        except CheckpointError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"could not load the diffusers parts of {root}: {type(exc).__name__}: {exc}. "
                                  "The checkpoint may be truncated or corrupt; re-create or re-download it.") from exc
        embeds = load_empty_prompt_embeds(root / EMBEDS_FILE)
        from depthkit.checkpoints import check_finite_weights

        for module, part, what in ((unet, unet_subfolder, "the UNet weights"), (vae, "vae", "the VAE weights"),
                                   ({"embeds": embeds}, EMBEDS_FILE, "the empty-prompt embedding")):
            check_finite_weights(module, root / part, what)
        if mode is None:
            mode = meta.get("mode") or ("generative" if unet.config.in_channels == 2 * vae.config.latent_channels
                                        else "direct")
        opts = {"timestep": meta.get("timestep"),
                "default_processing_resolution": meta.get("default_processing_resolution")}
        opts.update(overrides)
        try:
            model = cls(unet, vae, embeds, mode=mode, norm=norm or meta.get("norm", "depth"), scheduler=scheduler,
                        **opts)
        except ValueError as exc:  # a stored value: name the files that hold them, not the caller's options
            raise CheckpointError(f"{root} does not load: {exc} Its values are stored in {LOTUS_JSON}, {EMBEDS_FILE}, "
                                  f"scheduler/scheduler_config.json and {unet_subfolder}/config.json"
                                  f"{f' (arguments given: {given})' if given else ''}; re-export or re-import "
                                  "the checkpoint.") from None
        model.eval()
        return model.to(device=device or "cpu", dtype=dtype)
