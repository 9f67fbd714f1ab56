"""Lotus / SharpDepth model folders on disk: where one comes from (a local folder, or a hub snapshot restricted to
the files it needs), what it must hold (:func:`check_model_dir`), and the checked reads of its parts — the diffusers
UNet and VAE with their loading report (:func:`load_diffusers_model`), the stored empty-prompt embedding,
``sharpdepth.json`` (:func:`read_sharpdepth_json`) and a separate pass-1 UNet's fit to the sharpener
(:func:`check_pass1_unet`). Every failure is a :class:`depthkit.checkpoints.CheckpointError` (or ``ValueError``)
naming the file and what to do. :mod:`depthkit.sharpen.lotus` and :mod:`depthkit.sharpen.model` load through these.

Layout (:meth:`depthkit.sharpen.lotus.LotusModel.save_pretrained`, :meth:`depthkit.sharpen.model.SharpDepth.save_pretrained`)::

    DIR/unet/ DIR/vae/ DIR/scheduler/   diffusers parts (config + safetensors weights, whole or sharded)
    DIR/empty_prompt_embeds.safetensors {"empty_prompt_embeds": 1 x L x cross_attention_dim}
    DIR/lotus.json                      Lotus settings ("sharpener": true in a sharpener's: sharpdepth.json required)
    DIR/sharpdepth.json                 SharpDepth settings (a sharpener; absent in a bare Lotus-G folder)
    DIR/lotus_unet/                     a separate pass-1 UNet (when sharpdepth.json says separate_lotus_unet)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from depthkit.checkpoint_errors import CheckpointError
from depthkit.sharpen.config import SharpDepthConfig

if TYPE_CHECKING:
    import torch

__all__ = ["EMBEDS_FILE", "EMBEDS_KEY", "HUB_PATTERNS", "LOTUS_JSON", "LOTUS_UNET_DIR", "SHARPDEPTH_JSON",
           "load_diffusers_model", "load_empty_prompt_embeds", "resolve_model_dir",
           "check_model_dir", "check_sharpener_files", "read_sharpdepth_json", "check_pass1_unet",
           "load_pass1_unet"]

LOTUS_JSON = "lotus.json"
SHARPDEPTH_JSON = "sharpdepth.json"
LOTUS_UNET_DIR = "lotus_unet"
EMBEDS_FILE = "empty_prompt_embeds.safetensors"
EMBEDS_KEY = "empty_prompt_embeds"
HUB_PATTERNS = ["unet/*", f"{LOTUS_UNET_DIR}/*", "vae/*", "scheduler/*", EMBEDS_FILE, LOTUS_JSON, SHARPDEPTH_JSON]
"""The files a hub snapshot of a Lotus / SharpDepth folder is restricted to."""


def load_diffusers_model(cls, folder, what: str, **kwargs):
    """``cls.from_pretrained(folder, **kwargs)`` (a diffusers ``ModelMixin`` class: the UNet or the VAE) with its
    loading report checked by :func:`depthkit.checkpoints.check_loading_info`: a tensor the config's model lacks
    (dropped by diffusers with only a log line: e.g. a config without the mid block its weights have) or one it
    needs and the file lacks (left randomly initialised) is a :class:`~depthkit.checkpoints.CheckpointError` naming
    ``what``, ``folder`` and the first keys, never a model that runs on other weights than those stored. A config
    asking for more parameters than the weights hold is refused before the model is built
    (:func:`depthkit.weight_budget.check_config_fits_weights`)."""
    from depthkit.checkpoints import check_loading_info
    from depthkit.weight_budget import check_config_fits_weights

    check_config_fits_weights(folder, "diffusion_pytorch_model", lambda: cls.from_config(cls.load_config(str(folder))),
                              f"a {cls.__name__}")
    model, info = cls.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    check_loading_info(info, folder, what)
    return model


def load_empty_prompt_embeds(path) -> torch.Tensor:
    """Read ``empty_prompt_embeds.safetensors`` (``1 x L x D``); a corrupt file gives a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt or unreadable ({exc}). Re-create it with "
                              "compute_empty_prompt_embeds() from the release's text_encoder/ and tokenizer/.") from exc
    if EMBEDS_KEY not in tensors:
        raise CheckpointError(f"{path} has no tensor named {EMBEDS_KEY!r} (found {sorted(tensors)}).")
    return tensors[EMBEDS_KEY]


def resolve_model_dir(path_or_hub_id) -> Path:
    """A local directory, or a hub snapshot of ``owner/name`` restricted to :data:`HUB_PATTERNS` (see
    :func:`depthkit.checkpoints.download_hub_snapshot`). The one place a Lotus / SharpDepth location is resolved."""
    from depthkit.checkpoints import download_hub_snapshot, is_hub_id

    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a Lotus / SharpDepth model is a folder with unet/, vae/, "
                                  f"scheduler/ and {EMBEDS_FILE}.")
        return path
    text = str(path_or_hub_id)
    if not is_hub_id(text):
        raise CheckpointError(f"Lotus / SharpDepth model {text!r} not found: no such directory, and it is not a hub id "
                              "(owner/name). Save one with LotusModel.save_pretrained(DIR) or build a tiny one "
                              "with depthkit.sharpen.tiny.build_tiny_lotus().")
    return download_hub_snapshot(text, "Lotus / SharpDepth model", HUB_PATTERNS)


def check_model_dir(root: Path, unet_subfolder: str = "unet") -> None:
    """Raise a CheckpointError listing every missing part of a Lotus (or SharpDepth: the same layout) folder: configs,
    the stored embedding, weights (diffusers' file names, whole or sharded; diffusers alone would say no .bin found)."""
    required = {unet_subfolder: f"{unet_subfolder}/config.json", "vae": "vae/config.json",
                "scheduler": "scheduler/scheduler_config.json", EMBEDS_FILE: EMBEDS_FILE}
    # a part that is absent is named as such (vae); one whose folder is there names the file it lacks (vae/config.json)
    absent = [name for name, rel in required.items() if not (root / rel).is_file()]
    missing = [rel if (root / name).is_dir() else name for name, rel in required.items() if name in absent]
    no_weights = [s for s in (unet_subfolder, "vae")
                  if s not in absent and not any((root / s).glob("diffusion_pytorch_model*.safetensors"))]
    missing += [f"{s}/diffusion_pytorch_model.safetensors" for s in no_weights]
    if not missing:
        return
    pickles = [str(p.relative_to(root)) for s in no_weights for p in sorted((root / s).glob("*.bin"))]
    if pickles:  # never unpickled, not even with weights_only: a depthkit folder holds safetensors only
        missing[-1] += (f" ({', '.join(pickles)}: PyTorch pickle weights, which depthkit does not load; convert them "
                        "with save_pretrained(DIR, safe_serialization=True))")
    found = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
    hint = ("This looks like a released diffusers pipeline (it has text_encoder/): import it into depthkit's layout, "
            "which computes the empty-prompt embedding once with compute_empty_prompt_embeds()."
            if (root / "text_encoder").is_dir() and missing == [EMBEDS_FILE]
            else "Write a complete one with LotusModel.save_pretrained(DIR) (SharpDepth.save_pretrained for a "
            "sharpener), or import released weights.")
    raise CheckpointError(f"{root} is not a complete Lotus / SharpDepth model folder: missing {', '.join(missing)} "
                          f"(found: {found}). {hint}")


SHARPDEPTH_JSON_KEYS = ("format", "format_version", "config", "separate_lotus_unet")
"""The keys of ``sharpdepth.json`` (:meth:`SharpDepth.save_pretrained`)."""


def read_sharpdepth_json(root: Path) -> tuple[dict, bool]:
    """``root/sharpdepth.json`` read and checked: ``(stored SharpDepthConfig fields, separate_lotus_unet)``; ``({},
    False)`` when the folder has none (a bare Lotus-G folder). A wrong format or format_version, a key other than
    :data:`SHARPDEPTH_JSON_KEYS`, a non-bool ``separate_lotus_unet`` or a config that is not SharpDepthConfig's
    fields raises :class:`~depthkit.checkpoints.CheckpointError` naming the file."""
    from depthkit.checkpoints import check_format_version, check_typed_fields, read_json

    path = root / SHARPDEPTH_JSON
    if not path.is_file():
        return {}, False
    meta = read_json(path, "SharpDepth settings")
    if not isinstance(meta, dict):
        return check_typed_fields(SharpDepthConfig, meta, path), False  # raises: not an object
    unknown = sorted(set(meta) - set(SHARPDEPTH_JSON_KEYS))
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(SHARPDEPTH_JSON_KEYS)} "
                              "(SharpDepthConfig fields go inside \"config\"). Fix the file or re-export it.")
    if meta.get("format") != "depthkit-sharpdepth":
        raise CheckpointError(f"{path} is not a depthkit-sharpdepth settings file (format={meta.get('format')!r}, "
                              "expected 'depthkit-sharpdepth'). Re-export it with SharpDepth.save_pretrained.")
    check_format_version(meta.get("format_version"), 1, path)
    separate = meta.get("separate_lotus_unet", False)
    if not isinstance(separate, bool):
        raise CheckpointError(f"{path}: separate_lotus_unet must be true or false; received {separate!r}.")
    return check_typed_fields(SharpDepthConfig, meta.get("config", {}), path), separate


def check_sharpener_files(root: Path) -> None:
    """Refuse a SharpDepth folder that lost one of its two settings files, which would otherwise load as something
    else without a word: ``lotus.json`` saying ``"sharpener": true`` (what :meth:`SharpDepth.save_pretrained` writes)
    without ``sharpdepth.json`` would run the trained sharpener with the default SharpDepthConfig instead of the
    stored one, and ``sharpdepth.json`` without ``lotus.json`` would guess the Lotus mode, depth normalisation,
    timestep and processing resolution. A bare Lotus folder (neither file, or ``lotus.json`` alone without the mark)
    passes. An unreadable ``lotus.json`` is left to the Lotus loader, which names what is wrong with it."""
    import json

    lotus, sharpdepth = root / LOTUS_JSON, root / SHARPDEPTH_JSON
    if sharpdepth.is_file() and not lotus.is_file():
        raise CheckpointError(f"{root} has {SHARPDEPTH_JSON} but no {LOTUS_JSON}: SharpDepth.save_pretrained writes "
                              "both, so the folder is an incomplete copy, and loading it would guess the Lotus mode, "
                              "depth normalisation, timestep and processing resolution. Copy the checkpoint again, or "
                              f"re-export it with SharpDepth.save_pretrained (`depthkit train` writes <run>/final/sharpen).")
    if sharpdepth.is_file() or not lotus.is_file():
        return
    try:
        marked = json.loads(lotus.read_text()).get("sharpener") is True
    except (OSError, ValueError, AttributeError):
        return
    if marked:
        raise CheckpointError(f"{root}/{LOTUS_JSON} says the folder is a SharpDepth sharpener (\"sharpener\": true) "
                              f"but {SHARPDEPTH_JSON} is missing: without it the sharpener would run with default "
                              "settings instead of the ones it was trained and measured with. Copy the checkpoint "
                              "again; or, to use the UNet as a bare Lotus model on purpose, set \"sharpener\" to "
                              f"false in {LOTUS_JSON}.")


PASS1_UNET_FIELDS = ("in_channels", "out_channels", "cross_attention_dim", "class_embed_type",
                     "projection_class_embeddings_input_dim")
"""The UNet config fields a separate pass-1 UNet must share with the sharpener: it takes the same latents, the same
stored empty-prompt embedding (``1 x L x cross_attention_dim``) and the same 4-dim task switch."""


def check_pass1_unet(lotus_unet, sharpener_unet) -> None:
    """Raise ``ValueError`` naming the fields of :data:`PASS1_UNET_FIELDS` in which ``lotus_unet`` (pass 1) differs
    from ``sharpener_unet``: it would fail at the first image (a matrix-shape error deep in cross-attention). Loading
    and importing turn it into a ``CheckpointError`` naming the folder or release."""
    a, b = lotus_unet.config, sharpener_unet.config
    diff = {k: (getattr(a, k, None), getattr(b, k, None)) for k in PASS1_UNET_FIELDS
            if getattr(a, k, None) != getattr(b, k, None)}
    if diff:
        text = ", ".join(f"{k}={x!r} (the sharpener's: {y!r})" for k, (x, y) in diff.items())
        raise ValueError(f"the pass-1 Lotus UNet does not fit the sharpener: {text}. Both passes take the same "
                         "latents, empty-prompt embedding and task switch, so both UNets must come from the same base "
                         "model (e.g. Lotus-G and SharpDepth on Stable Diffusion 2); drop the separate Lotus UNet to "
                         "run the sharpener for both passes.")


def load_pass1_unet(root: Path, separate: bool, sharpener_unet, device=None, dtype=None):
    """The separate pass-1 Lotus UNet of the SharpDepth folder ``root`` when its ``sharpdepth.json`` says
    ``separate_lotus_unet`` (``separate``), on ``device`` in ``dtype`` (a ``torch.dtype`` or None), else None. A
    named but missing ``lotus_unet/``, non-finite weights or a UNet that does not fit ``sharpener_unet``
    (:func:`check_pass1_unet`) is a CheckpointError naming the folder; a ``lotus_unet/`` the json does not name is
    ignored with a warning (both passes then run the sharpener's UNet, as the json says)."""
    unet_dir = root / LOTUS_UNET_DIR
    if separate and not (unet_dir / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in root.iterdir()))
        raise CheckpointError(f"{root / SHARPDEPTH_JSON} says pass 1 runs a separate Lotus UNet "
                              f"(separate_lotus_unet: true), but {unet_dir}/config.json is missing "
                              f"(found: {found}); the sharpener would silently run both passes. Copy the "
                              "checkpoint again, or re-import it with `depthkit import-checkpoint --sharpdepth R "
                              "--lotus L --out CHECKPOINT --overwrite`.")
    if not separate:
        if unet_dir.exists():
            import warnings

            warnings.warn(f"{unet_dir} is ignored: {root / SHARPDEPTH_JSON} does not say "
                          "separate_lotus_unet: true, so both passes run the sharpener's UNet (a folder left from "
                          "an earlier save?). Delete it, or set separate_lotus_unet to true to run it in pass 1.",
                          stacklevel=3)
        return None
    from diffusers import UNet2DConditionModel

    from depthkit.checkpoints import check_finite_weights

    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    kwargs["use_safetensors"] = True  # never a pickle .bin beside or instead of the safetensors
    from depthkit.checkpoints import loading

    with loading(unet_dir, "the pass-1 Lotus UNet (config.json, diffusion_pytorch_model.safetensors)"):
        lotus_unet = load_diffusers_model(UNet2DConditionModel, unet_dir, "the pass-1 Lotus UNet weights", **kwargs)
    lotus_unet = lotus_unet.to(device or "cpu").eval()
    check_finite_weights(lotus_unet, unet_dir, "the pass-1 Lotus UNet weights")
    try:
        check_pass1_unet(lotus_unet, sharpener_unet)
    except ValueError as exc:
        raise CheckpointError(f"{unet_dir}: {exc}") from None
    return lotus_unet
