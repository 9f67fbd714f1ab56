"""The ``complete/`` part of a depthkit checkpoint: save, load, and a random-weight tiny one.

Layout of ``<checkpoint>/complete/`` (everything needed to run offline)::

    complete.json                  settings (depthkit.complete.settings.CompleteSettings): prompt_prior,
                                   pixel_reference, readout, prompt_version, min/max_pixels, "weights" (how the base
                                   model is stored), "residual_head", "format"
    config.json, model.safetensors[.index.json + shards], generation_config.json
                                   the base Qwen2.5-VL (save_pretrained; LoRA merged in, the
                                   merged matrices float32 whatever the base's dtype)            weights.kind = full
    adapter/adapter_config.json, adapter/adapter_model.safetensors
                                   instead of the above when LoRA is kept separate; the base is
                                   complete.json's weights.base_model: "hub:owner/name" or a
                                   folder named relative to complete/ that stays inside it       weights.kind = adapter
    depth_modules.safetensors, sdim_config.json          SDIM depth branch + proj2 (SDIMModel.save_depth_modules)
    tokenizer.json, tokenizer_config.json, preprocessor_config.json, chat_template.jinja     the processor
    residual_head.safetensors      only with readout = residual_head (its constructor args in complete.json)
    refiner.safetensors            optional dense refiner run after the fill (depthkit.complete.refiner; its
                                   constructor args in complete.json's "refiner")

:func:`save_complete` writes into a temporary sibling folder and renames it into place
(:func:`depthkit.run_state.atomic_export`), so a reader never sees a
half-written checkpoint. :func:`load_complete` treats the folder as untrusted input: safetensors only,
``trust_remote_code=False`` and no ``auto_map`` or escaping symlink (:func:`depthkit.checkpoints.check_tree`),
paths named in ``complete.json`` resolved with :func:`depthkit.checkpoints.safe_join`, every size in the JSON files
within :data:`depthkit.checkpoints.BOUNDS`, transformers' loading report checked (no weight left randomly
initialised), and every missing, unreadable or mismatched file reported by name as a
:class:`depthkit.checkpoints.CheckpointError`.

Merging LoRA (``merge_lora=True``) never modifies the model being saved: the merged weights ``W + delta`` are built
in a separate state dict (peft's own ``get_delta_weight``), so training can go on after an export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from depthkit.checkpoint_errors import exception_text
from depthkit.checkpoints import (
    BOUNDS,
    CheckpointError,
    bounded,
    check_attn_implementation,
    check_finite_weights,
    check_loading_info,
    check_tree,
    hub_offline,
    is_hub_id,
    loading,
    read_json,
    safe_join,
)
from depthkit.complete.settings import COMPLETE_JSON, CompleteSettings
from depthkit.dtypes import torch_dtype
from depthkit.weight_budget import check_config_fits_weights

__all__ = [
    "LoadedCompleter", "save_complete", "load_complete", "write_tiny",
    "load_base_model",
]

ADAPTER_DIR = "adapter"
HUB_PREFIX = "hub:"
"""``weights.base_model`` of an adapter checkpoint names a hub base explicitly as ``hub:owner/name``."""
_RESERVED = ("format", "format_version", "weights", "residual_head", "refiner")


@dataclass
class LoadedCompleter:
    """A loaded completer: the SDIM model (eval mode), its processor, its ``complete.json`` and the optional head."""

    model: nn.Module
    processor: object
    settings: CompleteSettings
    residual_head: nn.Module | None = None
    refiner: nn.Module | None = None


# ---------------------------------------------------------------------------------------------------------- building


def load_base_model(name_or_path, dtype="float32", attn_implementation: str | None = None):
    """A stock ``Qwen2_5_VLForConditionalGeneration`` from a local directory or a hub id (``owner/name`` or
    ``hub:owner/name``; safetensors only, ``trust_remote_code=False``).

    Raises:
        CheckpointError: a local directory whose files do not load, or whose weights do not match the model
            (missing, unexpected or mismatched keys: nothing is left randomly initialised).
        OSError: a hub id that needs the network or the HF cache and neither has it; the message says what was
            asked, whether ``HF_HUB_OFFLINE`` is set, and what to do.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    # ignore_mismatched_sizes: a tensor of the wrong shape is then reported in ``info`` (check_loading_info names it
    # and refuses) rather than raised as a RuntimeError that points at a report the CLI's output policy hides
    kwargs = {"dtype": torch_dtype(dtype), "use_safetensors": True, "trust_remote_code": False,
              "output_loading_info": True, "ignore_mismatched_sizes": True}
    if attn_implementation:
        kwargs["attn_implementation"] = check_attn_implementation(attn_implementation, "attn_implementation")
    text = str(name_or_path)
    text = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    if Path(text).expanduser().is_dir():  # a local folder: any failure is the folder's, never "not in the cache"
        check_tree(text)
        check_config_fits_weights(text, "model", lambda: Qwen2_5_VLForConditionalGeneration._from_config(
            Qwen2_5_VLConfig.from_pretrained(text)), "a Qwen2.5-VL base model")
        with loading(text, "the base model (config.json, model.safetensors)"):
            model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(text, **kwargs)
        check_loading_info(info, text, "the base model weights")
        return model
    try:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(text, **kwargs)
    except OSError as exc:
        why = ("HF_HUB_OFFLINE is set, so only the local hub cache was searched and it is not there"
               if hub_offline() else "it is not a local directory and the hub could not be reached (network down?) or "
               "has no such repository")
        raise OSError(f"could not load the base model {text!r}: {why}.\nWhat to do: where the network works, run "
                      f"`huggingface-cli download {text}` (fills the HF cache), or download it to a folder and give "
                      "that folder instead (in a recipe: model.base=/that/folder); or unset HF_HUB_OFFLINE.\n"
                      f"(transformers said: {exception_text(exc) or type(exc).__name__})") from exc
    check_loading_info(info, text, "the base model weights")
    return model


# ------------------------------------------------------------------------------------------------------------ saving


def _merged_state_dict(peft_model) -> dict:
    """State dict of the model inside ``peft_model`` with every LoRA delta added to its base weight (no mutation).

    A merged weight is float32 whatever its base's dtype: rounded back to a bfloat16 base (the full-size recipes'
    ``model.dtype``), a typical delta (std ~1e-4 on weights of std ~0.02) would lose a third of its elements, so
    the export would not be the model that was trained and validated. Loaded in float32 the merge is that model up
    to float rounding; a bfloat16 load rounds it as any bfloat16 inference does."""
    from peft.tuners.lora import LoraLayer

    inner = peft_model.get_base_model()
    deltas = {}
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            total = None
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    d = module.get_delta_weight(adapter)
                    total = d if total is None else total + d
            if total is not None:
                deltas[f"{name}.weight"] = total
    out = {}
    for key, value in inner.state_dict().items():
        if ".lora_" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        if clean in deltas:
            value = value.float() + deltas[clean].float()
        out[clean] = value
    return out


def _is_peft(module) -> bool:
    return hasattr(module, "peft_config") and hasattr(module, "get_base_model")


def save_complete(directory, model, processor, settings: dict, residual_head: nn.Module | None = None,
                  merge_lora: bool = True, refiner: nn.Module | None = None) -> Path:
    """Write a completer to ``directory`` (the checkpoint's ``complete/`` folder) atomically; returns the path.

    Args:
        model: :class:`depthkit.complete.model.SDIMModel` (its base plain or a peft LoRA model).
        processor: the :class:`~depthkit.complete.processor.SDIMProcessor` it was trained with.
        settings: inference settings for ``complete.json`` (``prompt_prior``, ``pixel_reference``, ``readout``, ...);
            ``prompt_version``, ``min_pixels``, ``max_pixels`` are filled in when absent. With
            ``merge_lora=False`` give ``base_model`` (``hub:owner/name`` — a bare ``owner/name`` that is not an
            existing path is stored with the prefix — or a path relative to ``directory``) — where the base
            weights come from at load time.
        residual_head: a :class:`~depthkit.complete.readout.ResidualHead` (required for ``readout=residual_head``).
        merge_lora: store LoRA merged into full base weights (default; loads without peft) or as an adapter.
        refiner: an optional :class:`~depthkit.complete.refiner.DenseRefiner` (run after the fill).
    """
    from safetensors.torch import save_file

    from depthkit.complete.processor import processor_geometry
    from depthkit.run_state import atomic_export

    directory = Path(directory)
    settings = dict(settings)
    bad = [k for k in _RESERVED if k in settings]
    if bad:
        raise ValueError(f"settings must not contain the reserved keys {bad}; save_complete writes them itself.")
    base_model = settings.pop("base_model", None)
    settings.setdefault("readout", "residual_head" if residual_head is not None else "text")
    if settings["readout"] == "residual_head" and residual_head is None:
        raise ValueError("settings say readout=residual_head but no residual_head module was given.")
    geometry = processor_geometry(processor)
    settings.setdefault("min_pixels", geometry["min_pixels"])
    settings.setdefault("max_pixels", geometry["max_pixels"])

    base = model.base
    peft = _is_peft(base)
    if peft and not merge_lora:
        ref = base_model or base.peft_config["default"].base_model_name_or_path
        if not ref:
            raise ValueError("merge_lora=False needs settings['base_model']: the hub id (or a path inside the "
                             "checkpoint) of the base model the adapter belongs to.")
        ref = str(ref)
        if os.path.isabs(ref):
            raise ValueError(f"base_model {ref!r} is an absolute path; a checkpoint may only name a hub id or a "
                             "path inside itself. Use merge_lora=True (self-contained) or a hub id.")
        if not ref.startswith(HUB_PREFIX) and is_hub_id(ref) and not os.path.exists(ref):
            ref = HUB_PREFIX + ref  # a bare owner/name given here is a hub id: stored explicitly
        weights = {"kind": "adapter", "base_model": ref, "adapter": ADAPTER_DIR}
    else:
        weights = {"kind": "full", "lora_merged": bool(peft)}
    head_info = None
    if residual_head is not None:
        from depthkit.complete.readout import RESIDUAL_HEAD_FILE

        head_info = {"file": RESIDUAL_HEAD_FILE, **residual_head.config()}
    refiner_info = None
    if refiner is not None:
        from depthkit.complete.refiner import REFINER_FILE

        refiner_info = {"file": REFINER_FILE, **refiner.config()}
    info = CompleteSettings.from_dict({**settings, "weights": weights, "residual_head": head_info,
                                       "refiner": refiner_info},
                                      source=f"the settings for {directory / COMPLETE_JSON}")
    info.prompt_config()  # refuses a prompt version other than this depthkit's

    def write(tmp: Path) -> None:
        if weights["kind"] == "adapter":
            base.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True)
        elif peft:
            inner = base.get_base_model()
            inner.save_pretrained(str(tmp), state_dict=_merged_state_dict(base), safe_serialization=True)
        else:
            base.save_pretrained(str(tmp), safe_serialization=True)
        model.save_depth_modules(tmp)
        processor.save_pretrained(str(tmp))
        if residual_head is not None:
            tensors = {k: v.detach().float().contiguous().cpu() for k, v in residual_head.state_dict().items()}
            save_file(tensors, str(tmp / head_info["file"]), metadata={"format": "pt"})
        if refiner is not None:
            refiner.save(tmp)
        info.write(tmp / COMPLETE_JSON)

    return atomic_export(directory, write)


# ----------------------------------------------------------------------------------------------------------- loading


def _found(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return ", ".join(names) or "nothing"


def _require(directory: Path, names: list[str], what: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(
            f"completer checkpoint {directory} is incomplete: missing {', '.join(missing)} ({what}); found: "
            f"{_found(directory)}. Re-export it (depthkit train writes <run>/final/complete) or create a test one "
            "with `depthkit init-checkpoint --tiny DIR`."
        )


def _read_settings(directory: Path) -> CompleteSettings:
    if not directory.is_dir():
        raise CheckpointError(f"completer checkpoint {directory} does not exist (or is not a folder); it should hold "
                              f"{COMPLETE_JSON}, model weights, depth modules and processor files.")
    _require(directory, [COMPLETE_JSON], "settings")
    try:
        return CompleteSettings.read(directory / COMPLETE_JSON)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def _check_sizes(directory: Path) -> None:
    """Every size in the processor and SDIM configs within :data:`~depthkit.checkpoints.BOUNDS` (before anything
    allocates memory by them)."""
    from depthkit.complete.model import SDIM_CONFIG_FILE

    path = directory / "preprocessor_config.json"
    pre = read_json(path, "image processor settings")
    if not isinstance(pre, dict):
        raise CheckpointError(f"{path} must hold a JSON object; got {type(pre).__name__}.")
    size = pre.get("size") or {}
    if not isinstance(size, dict):
        raise CheckpointError(f"{path}: size must be an object; got {size!r}.")
    for key in ("shortest_edge", "longest_edge"):
        bounded(f"size.{key}", size.get(key), *BOUNDS["edge"], path, optional=True)
    for key in ("min_pixels", "max_pixels"):
        bounded(key, pre.get(key), *BOUNDS["pixels"], path, optional=True)
    for key in ("patch_size", "merge_size", "temporal_patch_size"):
        bounded(key, pre.get(key), *BOUNDS[key], path, optional=True)
    path = directory / SDIM_CONFIG_FILE
    sdim = read_json(path, "SDIM settings")
    inner = sdim.get("sdim_config") if isinstance(sdim, dict) else None
    if not isinstance(inner, dict):
        raise CheckpointError(f"{path} must hold an object with an \"sdim_config\" object.")
    for key in ("channels", "kernel_size"):
        bounded(f"sdim_config.{key}", inner.get(key), *BOUNDS[key], path, optional=True)
    for key in ("patch_size", "temporal_patch_size"):
        bounded(key, sdim.get(key), *BOUNDS[key], path, optional=True)


def _base_reference(directory: Path, ref: str) -> str:
    """``weights.base_model`` of an adapter checkpoint as something :func:`load_base_model` takes: ``hub:owner/name``
    stays a hub id; anything else is a folder relative to ``directory`` that must stay inside it."""
    if ref.startswith(HUB_PREFIX):
        if not is_hub_id(ref[len(HUB_PREFIX):]):
            raise CheckpointError(f"{directory / COMPLETE_JSON}: weights.base_model {ref!r} is not a hub id "
                                  "(hub:owner/name).")
        return ref
    path = safe_join(directory, ref)
    if not path.is_dir():
        raise CheckpointError(f"{directory / COMPLETE_JSON}: weights.base_model {ref!r} is not a folder inside the "
                              f"checkpoint ({path} does not exist). A hub base is written \"hub:owner/name\"; a local "
                              "base must be named relative to the checkpoint's complete/ folder.")
    return str(path)


def _weight_files(directory: Path) -> list[str]:
    if (directory / "model.safetensors.index.json").is_file():
        index = read_json(directory / "model.safetensors.index.json", "weight index")
        try:
            shards = sorted(set(index["weight_map"].values()))
            if not all(isinstance(x, str) for x in shards):
                raise TypeError("shard names must be strings")
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{directory / 'model.safetensors.index.json'} is corrupt ({exc}).") from exc
        for s in shards:
            safe_join(directory, s)
        return ["config.json", "model.safetensors.index.json", *shards]
    if not (directory / "model.safetensors").is_file() and any(directory.glob("*.bin")):
        raise CheckpointError(f"{directory} holds PyTorch .bin weights only; depthkit loads safetensors only "
                              "(pickle files can run code). Convert them with save_pretrained(safe_serialization=True).")
    return ["config.json", "model.safetensors"]


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); re-export or "
                              "re-download the checkpoint.") from exc


def load_complete(directory, device="cpu", dtype="float32", attn_implementation: str | None = None,
                  base_model: str | None = None) -> LoadedCompleter:
    """Load a completer written by :func:`save_complete` (eval mode, on ``device`` in ``dtype``).

    Args:
        directory: the checkpoint's ``complete/`` folder.
        device, dtype: where and in which dtype (``"float32"``, ``"bfloat16"``, ``"float16"``) to put the model;
            the residual head stays float32 (it is tiny and reads the hidden state through a cast).
        attn_implementation: e.g. ``"sdpa"`` or ``"eager"`` (None = transformers' default).
        base_model: for adapter checkpoints, a trusted local path or hub id overriding ``weights.base_model``.

    Raises:
        CheckpointError: a file is missing, corrupt, or a path in ``complete.json`` leaves the folder.
        OSError: an adapter checkpoint's base model is a hub id that cannot be fetched (offline).
    """
    from depthkit.complete.model import DEPTH_MODULES_FILE, SDIM_CONFIG_FILE, SDIMModel
    from depthkit.complete.processor import load_processor

    directory = Path(directory)
    settings = _read_settings(directory)
    check_tree(directory)
    weights = settings.weights
    _require(directory, [DEPTH_MODULES_FILE, SDIM_CONFIG_FILE], "SDIM depth modules")
    _require(directory, ["preprocessor_config.json", "tokenizer_config.json"], "processor / tokenizer")
    if not (directory / "vocab.json").is_file() or not (directory / "merges.txt").is_file():
        # the vocabulary: tokenizer.json (what save_pretrained writes), or a slow tokenizer's vocab.json + merges.txt;
        # without either transformers builds an empty tokenizer and the error would be about digit tokens
        _require(directory, ["tokenizer.json"], "the tokenizer's vocabulary")
    _check_sizes(directory)
    check_attn_implementation(attn_implementation, f"{directory}: attn_implementation")
    head_info = settings.residual_head
    head_path = _named_file(directory, head_info, "residual head")
    refiner_path = _named_file(directory, settings.refiner, "dense refiner")

    if weights["kind"] == "full":
        files = _weight_files(directory)
        _require(directory, files, "base model weights")
        for f in files:
            if f.endswith(".safetensors"):
                _check_safetensors(directory / f)
        base = load_base_model(directory, dtype=dtype, attn_implementation=attn_implementation)
    else:
        adapter = safe_join(directory, str(weights.get("adapter", ADAPTER_DIR)))
        _require(adapter, ["adapter_config.json", "adapter_model.safetensors"], "LoRA adapter")
        _check_safetensors(adapter / "adapter_model.safetensors")
        ref = base_model or weights.get("base_model")
        if not ref or not isinstance(ref, str):
            raise CheckpointError(f"{directory / COMPLETE_JSON}: adapter checkpoint without weights.base_model "
                                  f"(got {ref!r}).")
        if base_model is None:
            ref = _base_reference(directory, ref)
        base = load_base_model(ref, dtype=dtype, attn_implementation=attn_implementation)
        from depthkit.complete.adapter import load_merged_adapter

        base = load_merged_adapter(base, adapter, ref)  # keys checked: peft itself only warns

    _check_safetensors(directory / DEPTH_MODULES_FILE)
    with loading(directory, f"the depth modules ({DEPTH_MODULES_FILE}, {SDIM_CONFIG_FILE})"):
        model = SDIMModel.from_depth_modules(base, directory)
    check_finite_weights(model, directory, "the model weights (model.safetensors / depth_modules.safetensors)")
    model = model.to(device=device, dtype=torch_dtype(dtype)).eval()

    with loading(directory, "the processor files (tokenizer, preprocessor_config.json)"):
        processor = load_processor(directory)

    head = None
    if head_path is not None:
        from safetensors.torch import load_file

        from depthkit.complete.readout import ResidualHead

        _check_safetensors(head_path)
        hidden = bounded("residual_head.hidden_size", head_info.get("hidden_size"), 1, 65536,
                         directory / COMPLETE_JSON)
        ratio = bounded("residual_head.mlp_ratio", head_info.get("mlp_ratio", 1.0), 0.01, 16,
                        directory / COMPLETE_JSON, integer=False)
        with loading(head_path, f"the residual head described in {COMPLETE_JSON}"):
            prior_input = head_info.get("prior_input", False)
            if not isinstance(prior_input, bool):
                raise ValueError(f"{directory / COMPLETE_JSON}: residual_head.prior_input must be true or false; "
                                 f"received {prior_input!r}. Re-export the checkpoint or fix the file.")
            head = ResidualHead(hidden, float(head_info["max_log_correction"]), float(ratio), prior_input)
            head.load_state_dict(load_file(str(head_path)), strict=True)
        check_finite_weights(head, head_path, "the residual head")
        head = head.to(device).eval()
    return LoadedCompleter(model=model, processor=processor, settings=settings, residual_head=head,
                           refiner=_load_refiner(refiner_path, settings.refiner, device))


def _named_file(directory: Path, info, what: str) -> Path | None:
    """The weights file a ``complete.json`` entry names (None without an entry), checked to exist inside the folder."""
    if not isinstance(info, dict):
        return None
    path = safe_join(directory, str(info.get("file", "")))
    if not path.is_file():
        raise CheckpointError(f"completer checkpoint {directory} is incomplete: missing {path.name} ({what} named in "
                              f"{COMPLETE_JSON}); found: {_found(directory)}.")
    return path


def _load_refiner(path: Path | None, info: dict | None, device):
    """The dense refiner ``complete.json`` describes (None when it describes none), checked like the head."""
    if path is None:
        return None
    from depthkit.complete.refiner import DenseRefiner

    _check_safetensors(path)
    source = path.parent / COMPLETE_JSON
    width = bounded("refiner.width", info.get("width"), 1, 4096, source)
    bound = bounded("refiner.max_log_correction", info.get("max_log_correction"), 1e-3, 10.0, source, integer=False)
    with loading(path, f"the dense refiner described in {COMPLETE_JSON}"):
        refiner = DenseRefiner.load(path.parent, {"file": path.name, "width": width, "max_log_correction": bound})
    check_finite_weights(refiner, path, "the dense refiner")
    return refiner.to(device).eval()


# -------------------------------------------------------------------------------------------------------------- tiny


def write_tiny(directory, seed: int = 0, head_prior_input: bool = False, **settings) -> dict:
    """Write a random-weight tiny completer (the tiny recipe's sizes and prompt settings) to ``directory``.

    Defaults: ``prompt_prior="guided"``, ``pixel_reference="text"``, ``readout="residual_head"`` — as the tiny
    recipe trains the embedded default; the untrained head returns the prior exactly, so the checkpoint's output is
    the classical guided fill. Pass ``readout="text", prompt_prior="none"`` for the paper's text readout (random
    digits). ``head_prior_input`` gives the residual head the log(prior) input (``prompts.head_prior_input``).
    Returns the manifest options for the stage: ``{"method": "sdim"}``.
    """
    from depthkit.complete.model import SDIMModel
    from depthkit.complete.readout import ResidualHead
    from depthkit.complete.recipe import PromptsConfig
    from depthkit.complete.tiny import build_tiny_base

    prompts = PromptsConfig()
    settings = {"prompt_prior": "guided", "pixel_reference": "text", "readout": "residual_head", **settings}
    base, processor = build_tiny_base(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SDIMModel(base).eval()
        head = None
        if settings["readout"] == "residual_head":
            head = ResidualHead(base.config.text_config.hidden_size, prompts.max_log_correction,
                                prior_input=head_prior_input)
    save_complete(directory, model, processor, settings, residual_head=head)
    return {"method": "sdim"}
