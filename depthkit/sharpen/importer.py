"""Import released SharpDepth / Lotus weights (diffusers pipeline folders) into depthkit's checkpoint layout.

A release is a diffusers pipeline directory (or hub id)::

    model_index.json   unet/   vae/   scheduler/   text_encoder/   tokenizer/

The text encoder is used exactly once, here: it turns the empty prompt into the constant UNet conditioning, stored as
``empty_prompt_embeds.safetensors``; depthkit never loads a text encoder at run time. The result is
``<out>/depthkit.json`` (stage ``sharpen``; other stages an existing manifest lists are kept) and ``<out>/sharpen/``
(see :mod:`depthkit.sharpen.checkpoint`):

- ``--sharpdepth R``: the sharpener is R's UNet, run twice at inference (pass 1 as Lotus), as the release does;
- ``--sharpdepth R --lotus L``: pass 1 runs L's UNet instead (stored as ``sharpen/lotus_unet/``);
- ``--lotus L`` alone: the sharpener *is* Lotus (untrained; the two passes then give Lotus fitted to the metric
  input) — the starting point of ``depthkit train recipes/sharpen/...``. Needs Lotus-G (8-channel UNet).

The normalisation space is read from the release name when not given: names containing "disparity" (e.g.
``jingheya/lotus-depth-g-v2-1-disparity``) predict disparity, others depth (SharpDepth builds on
``jingheya/lotus-depth-g-v1-0``, a depth model). The processing resolution defaults to 768 px, both models' demo
setting (SharpDepth's app.py, Lotus's pipeline); SharpDepth's published figures come from its evaluation script at
1024 px (``--processing-resolution 1024``).

:func:`lotus_from_stable_diffusion` builds the Lotus starting point from a Stable Diffusion 2 folder the same way
(the Lotus recipe's ``model.init``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["RELEASE_PARTS", "DEFAULT_PROCESSING_RESOLUTION", "resolve_release", "check_release", "load_release",
           "lotus_from_release", "lotus_from_stable_diffusion", "check_processing_resolution", "import_checkpoint",
           "compute_empty_prompt_embeds"]

RELEASE_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
DEFAULT_PROCESSING_RESOLUTION = 768
_PATTERNS = ["model_index.json", "unet/*.json", "unet/*.safetensors", "vae/*.json", "vae/*.safetensors",
             "scheduler/*", "text_encoder/*.json", "text_encoder/*.safetensors", "tokenizer/*"]

_BIN_WEIGHTS = {"unet": "unet/diffusion_pytorch_model.bin", "vae": "vae/diffusion_pytorch_model.bin",
                "text_encoder": "text_encoder/pytorch_model.bin"}


def _error(message: str) -> Exception:
    from depthkit.checkpoints import CheckpointError

    return CheckpointError(message)


def resolve_release(path_or_hub_id) -> Path:
    """A local release folder, or a hub snapshot of ``owner/name`` (configs and safetensors; ``.bin`` weights only for
    parts that have no safetensors, see :func:`depthkit.checkpoints.download_hub_snapshot`); ``HF_HUB_OFFLINE=1``
    restricts it to the local cache."""
    from depthkit.checkpoints import download_hub_snapshot, is_hub_id

    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    if path.exists() or not is_hub_id(text):
        raise _error(f"release {text!r} not found: not a folder, and not a hub id (owner/name). Give the folder of "
                     "a diffusers pipeline (model_index.json, unet/, vae/, scheduler/, text_encoder/, tokenizer/).")
    root = download_hub_snapshot(text, "release", _PATTERNS)
    # a release with only PyTorch pickles (.bin) gets those too; diffusers and transformers read them with
    # torch.load(weights_only=True), which refuses anything but tensors
    bins = [name for part, name in _BIN_WEIGHTS.items()
            if (root / part).is_dir() and not any((root / part).glob("*.safetensors"))]
    return download_hub_snapshot(text, "release", _PATTERNS + bins) if bins else root


def check_release(root: Path) -> dict:
    """Validate a release folder and return its ``model_index.json`` (``{}`` when absent); a CheckpointError lists
    every missing part and what the folder holds."""
    root = Path(root)
    missing = [p for p in RELEASE_PARTS if not (root / p).is_dir()]
    missing += [f"{p}/config.json" for p in ("unet", "vae", "text_encoder")
                if (root / p).is_dir() and not (root / p / "config.json").is_file()]
    if (root / "scheduler").is_dir() and not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    if missing:
        found = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
        hint = (" It looks like a depthkit/Lotus folder already (lotus.json): use it directly, no import needed."
                if (root / "lotus.json").is_file() else "")
        raise _error(f"{root} is not a complete diffusers pipeline release: missing {', '.join(missing)} "
                     f"(found: {found}).{hint}")
    index = {}
    if (root / "model_index.json").is_file():
        try:
            index = json.loads((root / "model_index.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _error(f"{root / 'model_index.json'} is corrupt (not valid JSON: {exc}).") from exc
    return index


def load_release(root) -> dict:
    """Load a release's parts (float32, CPU): ``{"unet", "vae", "scheduler", "embeds", "model_index"}``; the text
    encoder runs once for the empty prompt and is dropped."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from depthkit.checkpoints import CheckpointError, check_tree
    from depthkit.sharpen.lotus import has_safetensors, load_diffusers_model

    root = Path(root)
    index = check_release(root)
    check_tree(root)  # no auto_map (code transformers would offer to run), no symlink out of the release
    try:
        # safetensors when the part has them; else its .bin through torch.load(weights_only=True), tensors only;
        # a key the config's model lacks or needs and the file lacks is refused (load_diffusers_model)
        unet = load_diffusers_model(UNet2DConditionModel, root / "unet", "the release's UNet weights",
                                    use_safetensors=has_safetensors(root / "unet"))
        vae = load_diffusers_model(AutoencoderKL, root / "vae", "the release's VAE weights",
                                   use_safetensors=has_safetensors(root / "vae"))
        # SDS noising needs only the betas; a DDIM config (what releases ship) loads as DDPM with the same schedule
        scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(str(root / "scheduler")))
        embeds = compute_empty_prompt_embeds(root / "text_encoder", root / "tokenizer")
    except CheckpointError:
        raise
    except Exception as exc:  # a release is untrusted input: any failure (a refused pickle too) is one clear error
        from depthkit.checkpoint_errors import exception_text

        raise _error(f"could not load release {root}: {type(exc).__name__}: {exception_text(exc)}. The folder may be "
                     "truncated, hold weights that are not plain tensors, or not be a Stable-Diffusion-style "
                     "pipeline.") from exc
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "embeds": embeds, "model_index": index}


def _norm_from_name(source, norm: str | None) -> str:
    if norm is not None:
        return norm
    return "disparity" if "disparity" in str(source).lower() else "depth"


def lotus_from_release(source, norm: str | None = None,
                       processing_resolution: int | None = DEFAULT_PROCESSING_RESOLUTION):
    """A :class:`~depthkit.sharpen.lotus.LotusModel` from a released Lotus / SharpDepth pipeline folder or hub id
    (mode from the UNet's input channels)."""
    from depthkit.sharpen.lotus import LotusModel

    root = resolve_release(source)
    parts = load_release(root)
    unet, vae = parts["unet"], parts["vae"]
    mode = "generative" if unet.config.in_channels == 2 * vae.config.latent_channels else "direct"
    try:
        model = LotusModel(unet, vae, parts["embeds"], mode=mode, norm=_norm_from_name(source, norm),
                           scheduler=parts["scheduler"], default_processing_resolution=processing_resolution)
    except ValueError as exc:
        raise _error(f"{root} is not a Lotus-style release: {exc}") from exc
    return model.eval()


def lotus_from_stable_diffusion(source, mode: str = "generative", norm: str = "depth",
                                processing_resolution: int | None = DEFAULT_PROCESSING_RESOLUTION, seed: int = 0):
    """Lotus's starting point from a Stable Diffusion (2) pipeline folder or hub id.

    As in the Lotus paper: for Lotus-G the UNet's ``conv_in`` takes 8 channels, its weights duplicated over the two
    halves and halved (so ``cat(z, z)`` gives SD's response to ``z``); a projection class embedding (4-dim task
    switch → time-embedding size, randomly initialised with ``seed``) is added. Every other weight is SD's.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from depthkit.sharpen.lotus import LotusModel, check_lotus_mode

    check_lotus_mode(mode)  # before any download
    root = resolve_release(source)
    parts = load_release(root)
    sd_unet, vae = parts["unet"], parts["vae"]
    latent = int(vae.config.latent_channels)
    if sd_unet.config.in_channels != latent:
        raise _error(f"{root}/unet has in_channels={sd_unet.config.in_channels}; a Stable Diffusion UNet takes the "
                     f"VAE's {latent} latent channels. Is this already a Lotus model? Then use it as model.init "
                     "after `depthkit import-checkpoint --lotus`.")
    config = dict(sd_unet.config)
    config.update(in_channels=2 * latent if mode == "generative" else latent, class_embed_type="projection",
                  projection_class_embeddings_input_dim=4)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DConditionModel(**config)
    state = sd_unet.state_dict()
    w = state.pop("conv_in.weight")
    if mode == "generative":
        w = torch.cat([w, w], dim=1) * 0.5
    state["conv_in.weight"] = w
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise _error(f"{root}/unet does not match the Lotus layout (missing {missing[:5]}, unexpected "
                     f"{unexpected[:5]}).")
    return LotusModel(unet, vae, parts["embeds"], mode=mode, norm=norm, scheduler=parts["scheduler"],
                      default_processing_resolution=processing_resolution).eval()


def check_processing_resolution(value: int | None) -> None:
    """Refuse a default processing resolution the checkpoint's loader would refuse (``ValueError`` naming the
    allowed range); None or 0 = the input's size."""
    from depthkit.checkpoints import BOUNDS

    low, high = BOUNDS["processing_resolution"]
    if value not in (None, 0) and not low <= value <= high:
        raise ValueError(f"processing-resolution must be {low} to {high} pixels (the longest side the sharpener works "
                         f"at), or 0 for the input's size; received {value}")


def import_checkpoint(out, sharpdepth=None, lotus=None, norm: str | None = None,
                      processing_resolution: int | None = DEFAULT_PROCESSING_RESOLUTION,
                      overwrite: bool = False) -> Path:
    """Convert a SharpDepth release and/or a Lotus release into ``<out>/sharpen`` + ``<out>/depthkit.json``.

    Args:
        out: checkpoint directory (created; an existing manifest's other stages are kept).
        sharpdepth: SharpDepth release folder or hub id (its UNet is the sharpener and, without ``lotus``, pass 1).
        lotus: Lotus-G release folder or hub id (pass-1 UNet with ``sharpdepth``; the sharpener's start without).
        norm: "depth" or "disparity"; default from the release name (see the module docstring).
        processing_resolution: longest side (pixels) inference runs at by default; None = the input's size.
        overwrite: replace an existing ``<out>/sharpen`` (else refused, as is a non-empty ``out`` that is not a
            checkpoint), before any release is read.
    Returns:
        ``out`` as a Path.
    """
    import torch

    from depthkit.sharpen.checkpoint import write_sharpen_checkpoint
    from depthkit.sharpen.model import SharpDepth, check_pass1_unet

    if sharpdepth is None and lotus is None:
        raise ValueError("import_checkpoint needs sharpdepth=RELEASE and/or lotus=RELEASE (folders or hub ids).")
    check_processing_resolution(processing_resolution)  # before any release is read
    out = Path(out)
    if not overwrite and out.is_dir():
        if (out / "sharpen").exists():
            raise FileExistsError(f"{out / 'sharpen'} exists; the import would replace it. Pass --overwrite "
                                  "(overwrite=True), or another --out (nothing was written).")
        if not (out / "depthkit.json").is_file() and any(out.iterdir()):
            raise FileExistsError(f"{out} is a folder that is not empty and not a depthkit checkpoint (no "
                                  "depthkit.json). Choose a new folder, or pass --overwrite (nothing was written).")
    main = lotus_from_release(sharpdepth if sharpdepth is not None else lotus,
                              norm=_norm_from_name(sharpdepth if sharpdepth is not None else lotus, norm),
                              processing_resolution=processing_resolution)
    if main.mode != "generative":
        raise _error(f"{sharpdepth or lotus} is a Lotus-D (direct, {main.unet.config.in_channels}-channel) model; "
                     "SharpDepth's gating feeds a depth latent beside the image latent, which only Lotus-G "
                     "(8 channels) takes. Import a Lotus-G release (e.g. jingheya/lotus-depth-g-v1-0).")
    lotus_unet = None
    if sharpdepth is not None and lotus is not None:
        other = lotus_from_release(lotus, norm=main.norm, processing_resolution=processing_resolution)
        if other.unet.config.in_channels != main.unet.config.in_channels:
            raise _error(f"the Lotus release {lotus} has a {other.unet.config.in_channels}-channel UNet; the "
                         f"sharpener has {main.unet.config.in_channels}: pass 1 needs a Lotus-G model too.")
        try:
            check_pass1_unet(other.unet, main.unet)
        except ValueError as exc:
            raise _error(f"the Lotus release {lotus} cannot run pass 1 of {sharpdepth}: {exc}") from None
        def arch(cfg) -> dict:
            return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}

        if arch(other.vae.config) != arch(main.vae.config) or not all(
                torch.equal(a, b) for a, b in zip(other.vae.state_dict().values(), main.vae.state_dict().values())):
            raise _error(f"the Lotus release {lotus} has a different VAE from {sharpdepth}; both passes share one "
                         "VAE (the sharpener's), so they must come from the same base model.")
        lotus_unet = other.unet
    # the public inference settings (gate filled with the noised Lotus latent, as its pipeline does), stated
    # explicitly so that a later change of SharpDepthConfig's defaults cannot change what a release computes
    model = SharpDepth(main, {"gate_noise": "noised_lotus", "discrepancy_norm": "minmax",
                              "discrepancy_downsample": "nearest", "fit_threshold": 0.5}, lotus_unet=lotus_unet)
    sources = {k: str(v) for k, v in (("sharpdepth", sharpdepth), ("lotus", lotus)) if v is not None}
    options = {"processing_resolution": None}
    return write_sharpen_checkpoint(out, model, options, imported_from=sources,
                                    sharpener_trained=sharpdepth is not None)


def compute_empty_prompt_embeds(text_encoder_dir_or_model, tokenizer) -> torch.Tensor:
    """The text-encoder output for the empty prompt, ``1 x L x D`` float32 on CPU (L = 2 for CLIP: BOS + EOS).

    Used only when importing released weights (a diffusers pipeline directory has ``text_encoder/`` and
    ``tokenizer/``): ``compute_empty_prompt_embeds(DIR / "text_encoder", DIR / "tokenizer")``. Either argument may
    be a loaded object instead of a directory. The prompt is tokenised *without padding* (``padding="do_not_pad"``),
    as the public Lotus and SharpDepth code encode it [code], and the last hidden state is kept. (Stable Diffusion
    pipelines pad to 77 tokens; CLIP's attention is causal, so the first two rows of that padded output equal this
    embedding, but a UNet cross-attending to the 75 extra rows gives a different result.)
    """
    import torch

    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=False)
    if isinstance(text_encoder_dir_or_model, (str, os.PathLike)):
        from transformers import CLIPTextModel

        from depthkit.checkpoints import check_loading_info
        from depthkit.sharpen.lotus import has_safetensors

        # a .bin-only release loads through torch.load(weights_only=True) (tensors only, no pickled code); a key
        # missing from the file (left randomly initialised) or not in the model would change the embedding silently
        text_encoder, info = CLIPTextModel.from_pretrained(
            str(text_encoder_dir_or_model), trust_remote_code=False, output_loading_info=True,
            use_safetensors=has_safetensors(text_encoder_dir_or_model))
        check_loading_info(info, text_encoder_dir_or_model, "the text encoder weights")
    else:
        text_encoder = text_encoder_dir_or_model
    tokens = tokenizer([""], padding="do_not_pad", truncation=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    with torch.no_grad():
        out = text_encoder(tokens["input_ids"].to(device))[0]
    return out.float().cpu()
