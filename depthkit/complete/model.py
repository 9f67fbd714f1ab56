"""SDIM: the Sparse Depth Injection Mechanism attached to a stock Qwen2.5-VL (SPEC section 3).

The depth branch (``fusion="soft"``, the paper's design)::

    sparse features (log/inverse/linear depth + validity mask, 2 x H' x W')
        → conv(2→32) [zero init] + BN + LeakyReLU                       = Ŝ   (sparse encoder)
    resized RGB in [0, 1] (3 x H' x W') → conv(3→32) [He-normal] + BN + LeakyReLU = F̂ (RGB encoder)
    concat(F̂, Ŝ) → 2 x (conv + BN + LeakyReLU)                         = M   (fusion)
    M → conv(32→3) [zero init]                                          = O
    E = proj(I) + proj2(patchify(O))     proj2: a copy of the vision tower's patch-embedding Conv3d, init = proj

At initialisation O = 0, so the model's logits equal the base model's exactly. ``init="he"`` (ablation (b)) gives
every conv He-normal weights instead, so O != 0 from the start. ``fusion="hard_concat"`` (ablation (a)) is read as
concatenating the sparse-feature channels to the RGB channels *at the patch embedding*: no conv branch, the
2-channel features are patchified like RGB and embedded by a fresh Conv3d ``proj2`` (2 → vision hidden), i.e. the
patch embedding becomes ``Conv3d(3+2 → D)`` whose RGB part is the pretrained ``proj``. Its ``init`` selects the
fresh weights: ``"he"`` (the paper's hard fusion, depth enters at full strength) or ``"zero"``.

Gradient flow with zero init (checked by the tests): on the first backward only the output conv gets gradient
(everything upstream sees the zero weights of that conv; proj2 sees O = 0). From the second step on all convs and
proj2 get gradient — except the sparse encoder's BN scale, which needs a third step: the zero-init conv feeding it
makes its normalised input identically zero, so d/dγ = Σ g·x̂ = 0 until that conv has moved once.

How it attaches (no subclassing, see SPEC): :class:`SDIMModel` wraps the stock model (``self.base``), owns
``depth_branch`` and ``proj2``, and registers a forward hook on the vision tower's ``patch_embed``. Within
:meth:`SDIMModel.inject` (used by ``forward`` and ``generate``) the hook adds ``proj2(patchify(O))`` to the patch
embeddings of that call; outside it the hook is a no-op, so ``model.base`` alone still is the plain model. The
pending embedding is stored per thread, so one forward at a time per thread is the contract; run at most one
vision-tower forward inside one ``inject`` (that is what ``forward``/``generate`` do). The vision tower's patch
order equals ``pixel_values`` order (window permutation happens after the patch embedding), so ``O`` is
patchified with :func:`depthkit.complete.processor.patchify`, the same code that mirrors the image processor.

The settings (:class:`~depthkit.complete.depth_inputs.SDIMConfig`) and the inputs of the branch
(:func:`~depthkit.complete.depth_inputs.prepare_depth_inputs`) live in :mod:`depthkit.complete.depth_inputs`.
:func:`stock_model` finds the stock Qwen2.5-VL model inside an SDIMModel and/or a peft wrapper (everything that
drives the language model directly — training, the engine, positions — unwraps with it).

LoRA (:func:`apply_lora`) wraps only the language model's ``q,k,v,o,gate,up,down`` projections (the vision MLP
has layers of the same names; a regex excludes them). The depth modules live outside the HF model, so peft's
``modules_to_save`` does not apply: they stay fully trainable next to the PeftModel and are saved with
:meth:`SDIMModel.save_depth_modules`; adapters with ``model.base.save_pretrained(dir)``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import torch
from torch import nn

from depthkit.complete.depth_inputs import SDIMConfig
from depthkit.complete.processor import patchify

__all__ = [
    "DepthBranch",
    "SDIMModel",
    "stock_model",
    "apply_lora",
    "read_sdim_config",
    "LORA_TARGET_REGEX",
    "DEPTH_MODULES_FILE",
    "SDIM_CONFIG_FILE",
]

DEPTH_MODULES_FILE = "depth_modules.safetensors"
SDIM_CONFIG_FILE = "sdim_config.json"

# Language-model linear layers only: the vision blocks also have mlp.{gate,up,down}_proj, which must stay out.
LORA_TARGET_REGEX = (
    r".*language_model\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)


def _conv_bn_act(cin: int, cout: int, config: SDIMConfig) -> nn.Sequential:
    k = config.kernel_size
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),  # BN follows: a bias would be cancelled
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(config.negative_slope),
    )


def _he_(weight: torch.Tensor, negative_slope: float) -> None:
    nn.init.kaiming_normal_(weight, a=negative_slope, mode="fan_in", nonlinearity="leaky_relu")


class DepthBranch(nn.Module):
    """The soft-fusion branch: (sparse features B x 2 x H x W, RGB B x 3 x H x W in [0, 1]) → O, B x 3 x H x W."""

    def __init__(self, config: SDIMConfig):
        super().__init__()
        c = config.channels
        self.sparse_encoder = _conv_bn_act(config.in_channels, c, config)
        self.rgb_encoder = _conv_bn_act(3, c, config)
        self.fusion = nn.Sequential(_conv_bn_act(2 * c, c, config), _conv_bn_act(c, c, config))
        self.out = nn.Conv2d(c, 3, config.kernel_size, padding=config.kernel_size // 2)
        for block in (self.rgb_encoder, *self.fusion):
            _he_(block[0].weight, config.negative_slope)
        if config.init == "zero":
            nn.init.zeros_(self.sparse_encoder[0].weight)
            nn.init.zeros_(self.out.weight)
        else:
            _he_(self.sparse_encoder[0].weight, config.negative_slope)
            _he_(self.out.weight, 1.0)  # linear output layer
        nn.init.zeros_(self.out.bias)

    def forward(self, sparse_features: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        s = self.sparse_encoder(sparse_features)
        f = self.rgb_encoder(rgb)
        return self.out(self.fusion(torch.cat([f, s], dim=1)))


def stock_model(model: nn.Module, check: bool = True) -> nn.Module:
    """The stock ``Qwen2_5_VLForConditionalGeneration`` inside ``model``: an :class:`SDIMModel` (its ``base``), a
    peft ``PeftModel`` (its base model), an SDIMModel around a PeftModel, or the stock model itself.

    With ``check`` a ``TypeError`` is raised when what is found is not a Qwen2.5-VL model with a language model and
    an LM head; without it the unwrapped object is returned as it is.
    """
    base = model.base if isinstance(model, SDIMModel) else model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    if check and not (hasattr(base, "model") and hasattr(base.model, "language_model") and hasattr(base, "lm_head")):
        raise TypeError(f"{type(model).__name__} is not a Qwen2.5-VL model (an SDIMModel, a PeftModel around a "
                        "Qwen2_5_VLForConditionalGeneration, or one itself).")
    return base


def _vision_tower(base: nn.Module) -> nn.Module:
    """The Qwen2.5-VL vision tower inside a stock model, a PeftModel around one, or a Qwen2_5_VLModel."""
    model = stock_model(base, check=False)
    for path in ("model.visual", "visual"):
        obj = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "patch_embed"):
            return obj
    raise TypeError(
        f"{type(base).__name__} has no Qwen2.5-VL vision tower (looked for .model.visual.patch_embed); pass a "
        "transformers Qwen2_5_VLForConditionalGeneration."
    )


def _as_list(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if x.dim() == 3:
            return [x]
        if x.dim() != 4:
            raise ValueError(f"expected a B x C x H' x W' tensor or a list of C x H' x W'; got {tuple(x.shape)}.")
        return list(x.unbind(0))
    return list(x)


class SDIMModel(nn.Module):
    """A stock Qwen2.5-VL model with the SDIM depth modules attached (see the module docstring).

    Args:
        base: ``transformers.Qwen2_5_VLForConditionalGeneration`` (loaded with ``from_pretrained``, or
            :func:`depthkit.complete.tiny.build_tiny_qwen2_5_vl`). Stays ``self.base``; its weights are untouched.
        sdim_config: :class:`SDIMConfig` (default: the paper's soft, zero-init branch with log features).

    Attributes:
        depth_branch: :class:`DepthBranch` (``None`` for ``fusion="hard_concat"``).
        proj2: ``nn.Conv3d`` patch embedding of O (soft: 3 → D, a copy of ``proj``; hard_concat: 2 → D, fresh).
    """

    def __init__(self, base: nn.Module, sdim_config: SDIMConfig | None = None):
        super().__init__()
        self.sdim_config = sdim_config or SDIMConfig()
        self.base = base
        visual = _vision_tower(base)
        patch_embed = visual.patch_embed
        proj = patch_embed.proj
        vcfg = visual.config
        self.patch_size = int(vcfg.patch_size)
        self.temporal_patch_size = int(vcfg.temporal_patch_size)
        self.merge_size = int(vcfg.spatial_merge_size)
        cfg = self.sdim_config
        if cfg.fusion == "soft":
            self.depth_branch = DepthBranch(cfg)
            in_ch = 3
        else:
            self.depth_branch = None
            in_ch = cfg.in_channels
        self.proj2 = nn.Conv3d(in_ch, proj.out_channels, kernel_size=proj.kernel_size, stride=proj.stride,
                               bias=False)
        with torch.no_grad():
            if cfg.fusion == "soft":
                self.proj2.weight.copy_(proj.weight)
            elif cfg.init == "he":
                nn.init.kaiming_normal_(self.proj2.weight, mode="fan_in", nonlinearity="linear")
            else:
                nn.init.zeros_(self.proj2.weight)
        for module in (self.depth_branch, self.proj2):
            if module is not None:
                module.to(device=proj.weight.device, dtype=proj.weight.dtype)
        self._pending: dict[int, torch.Tensor] = {}  # thread id -> depth embedding of the active inject()
        self._hook = patch_embed.register_forward_hook(self._add_depth_embedding)

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def depth_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new modules (depth branch + proj2): always trained."""
        mods = [m for m in (self.depth_branch, self.proj2) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def depth_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights and BN statistics of the new modules, keys ``depth_branch.*`` and ``proj2.*``."""
        out = {}
        for prefix, module in (("depth_branch", self.depth_branch), ("proj2", self.proj2)):
            if module is not None:
                out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        return out

    def _add_depth_embedding(self, module, args, output):
        extra = self._pending.get(threading.get_ident())
        if extra is None:
            return None
        if extra.shape != output.shape:
            raise RuntimeError(
                f"depth embedding has shape {tuple(extra.shape)} but the image patch embedding has "
                f"{tuple(output.shape)}: sparse_pixels/rgb_pixels must be at the processor's resized size of the "
                "same images, in the same order as pixel_values."
            )
        return output + extra.to(dtype=output.dtype, device=output.device)

    # ---- the depth path -----------------------------------------------------------------------------------------

    def depth_embedding(self, sparse_pixels, rgb_pixels=None, image_grid_thw=None) -> torch.Tensor:
        """proj2(patchify(O)) for a batch: (sum_i N_i, D) in ``pixel_values`` row order.

        Args:
            sparse_pixels: features from :func:`sparse_depth_features` at the resized size: B x 2 x H' x W' or a
                list of 2 x H' x W' (one per image, same order as the processor's images).
            rgb_pixels: resized RGB in [0, 1], same layout with 3 channels (soft fusion only).
            image_grid_thw: optional; when given, each map's size is checked against its image's patch grid.
        """
        sparse_list = _as_list(sparse_pixels)
        soft = self.sdim_config.fusion == "soft"
        if soft:
            if rgb_pixels is None:
                raise ValueError("fusion='soft' needs rgb_pixels (resized RGB in [0, 1]); see prepare_depth_inputs.")
            rgb_list = _as_list(rgb_pixels)
            if len(rgb_list) != len(sparse_list):
                raise ValueError(f"{len(sparse_list)} sparse maps but {len(rgb_list)} RGB images; give one per image.")
        if image_grid_thw is not None:
            grids = torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()
            if len(grids) != len(sparse_list):
                raise ValueError(f"{len(sparse_list)} sparse maps for {len(grids)} images in image_grid_thw.")
            for i, (grid, s) in enumerate(zip(grids, sparse_list)):
                want = (grid[1] * self.patch_size, grid[2] * self.patch_size)
                if tuple(s.shape[-2:]) != want:
                    raise ValueError(f"sparse map {i} is {tuple(s.shape[-2:])} but its image was resized to {want}; "
                                     "build it with prepare_depth_inputs (or resize to resized_size()).")
        for i, s in enumerate(sparse_list):
            if s.dim() != 3 or s.shape[0] != self.sdim_config.in_channels:
                raise ValueError(f"sparse map {i} has shape {tuple(s.shape)}; expected "
                                 f"({self.sdim_config.in_channels}, H', W') features (sparse_depth_features).")
        param = self.proj2.weight
        if soft:
            same = len({tuple(s.shape) for s in sparse_list}) == 1 and len({tuple(r.shape) for r in rgb_list}) == 1
            if same:  # one batched branch call: BN statistics over the whole batch
                o = self.depth_branch(torch.stack(sparse_list).to(param), torch.stack(rgb_list).to(param))
                outs = list(o.unbind(0))
            else:
                outs = [self.depth_branch(s[None].to(param), r[None].to(param))[0]
                        for s, r in zip(sparse_list, rgb_list)]
        else:
            outs = [s.to(param) for s in sparse_list]
        patches = torch.cat([patchify(o, self.patch_size, self.merge_size, self.temporal_patch_size) for o in outs])
        c = outs[0].shape[0]
        patches = patches.view(-1, c, self.temporal_patch_size, self.patch_size, self.patch_size)
        return self.proj2(patches).view(patches.shape[0], -1)

    @contextlib.contextmanager
    def inject(self, sparse_pixels=None, rgb_pixels=None, image_grid_thw=None):
        """Within this context, the vision tower's patch embedding gets ``proj2(O)`` added (one vision forward).

        Use it to drive the base model yourself, e.g. an engine computing the image prefix once::

            with sdim.inject(sparse_pixels, rgb_pixels, image_grid_thw):
                out = sdim.base(input_ids=..., pixel_values=..., image_grid_thw=..., mm_token_type_ids=..., ...)

        With ``sparse_pixels=None`` nothing is added (RGB-only). Yields the depth embedding (or None).
        """
        tid = threading.get_ident()
        if tid in self._pending:
            raise RuntimeError("SDIMModel.inject is already active in this thread; contexts cannot be nested.")
        if sparse_pixels is None:
            yield None
            return
        extra = self.depth_embedding(sparse_pixels, rgb_pixels, image_grid_thw)
        self._pending[tid] = extra
        try:
            yield extra
        finally:
            self._pending.pop(tid, None)

    # ---- model API ----------------------------------------------------------------------------------------------

    @staticmethod
    def _check_mm(pixel_values, mm_token_type_ids):
        if pixel_values is not None and mm_token_type_ids is None:
            raise ValueError(
                "mm_token_type_ids is required with pixel_values: without it Qwen2.5-VL silently uses 1-D positions. "
                "Pass the processor's output as is (SDIMProcessor always returns it)."
            )

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, image_grid_thw=None,
                mm_token_type_ids=None, sparse_pixels=None, rgb_pixels=None, labels=None, **kwargs):
        """The base model's forward with the depth embedding added; returns the base model's output
        (``CausalLMOutputWithPast``: ``logits`` B x L x V, ``loss`` when ``labels`` are given).

        ``sparse_pixels`` (B x 2 x H' x W' features) and ``rgb_pixels`` (B x 3 x H' x W', [0, 1]) come from
        :func:`prepare_depth_inputs`; other arguments are the processor's outputs and any base-model kwargs
        (``cache``, ``logits_to_keep``, ...). Without ``pixel_values`` (e.g. a decoding step after the
        image prefix is cached) the vision tower does not run and the depth inputs are ignored.
        """
        self._check_mm(pixel_values, mm_token_type_ids)
        with self.inject(sparse_pixels if pixel_values is not None else None, rgb_pixels, image_grid_thw):
            return self.base(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                             image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids, labels=labels,
                             **kwargs)

    @torch.no_grad()
    def generate(self, sparse_pixels=None, rgb_pixels=None, **kwargs):
        """``base.generate(**kwargs)`` with the depth embedding injected into its (single) vision forward."""
        self._check_mm(kwargs.get("pixel_values"), kwargs.get("mm_token_type_ids"))
        with self.inject(sparse_pixels, rgb_pixels, kwargs.get("image_grid_thw")):
            return self.base.generate(**kwargs)

    # ---- persistence --------------------------------------------------------------------------------------------

    def save_depth_modules(self, directory: str | Path) -> Path:
        """Write ``depth_modules.safetensors`` (branch + proj2 weights and BN statistics) and ``sdim_config.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.depth_state_dict().items()}
        save_file(tensors, str(directory / DEPTH_MODULES_FILE), metadata={"format": "pt"})
        meta = {"sdim_config": self.sdim_config.to_dict(), "vision_hidden_size": int(self.proj2.out_channels),
                "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size}
        (directory / SDIM_CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    def load_depth_modules(self, directory: str | Path) -> None:
        """Load weights written by :meth:`save_depth_modules` (exactly; the saved config must equal this one)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        saved = read_sdim_config(directory)
        if saved != self.sdim_config:
            diff = {k: (v, getattr(self.sdim_config, k)) for k, v in saved.to_dict().items()
                    if getattr(self.sdim_config, k) != v}
            raise ValueError(f"{directory} holds depth modules for another SDIMConfig (saved vs this model: {diff}); "
                             "build the model with SDIMModel.from_depth_modules(base, directory).")
        tensors = load_file(str(directory / DEPTH_MODULES_FILE))
        own = self.depth_state_dict()
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise ValueError(f"{directory / DEPTH_MODULES_FILE} does not match this model: missing {missing}, "
                             f"unexpected {unexpected}.")
        for key, value in tensors.items():
            if own[key].shape != value.shape:
                raise ValueError(f"{key}: saved shape {tuple(value.shape)} != model shape {tuple(own[key].shape)} "
                                 "(a different base model size?).")
        with torch.no_grad():
            for key, value in tensors.items():
                own[key].copy_(value)

    @classmethod
    def from_depth_modules(cls, base: nn.Module, directory: str | Path) -> SDIMModel:
        """Attach depth modules saved in ``directory`` (config + weights) to ``base``."""
        model = cls(base, read_sdim_config(directory))
        model.load_depth_modules(directory)
        return model


def read_sdim_config(directory: str | Path) -> SDIMConfig:
    """The :class:`SDIMConfig` saved in ``directory`` by :meth:`SDIMModel.save_depth_modules`."""
    directory = Path(directory)
    path = directory / SDIM_CONFIG_FILE
    if not path.is_file() or not (directory / DEPTH_MODULES_FILE).is_file():
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "directory does not exist"
        raise FileNotFoundError(f"{directory} must hold {SDIM_CONFIG_FILE} and {DEPTH_MODULES_FILE} (found: "
                                f"{present}); write them with SDIMModel.save_depth_modules(dir).")
    return SDIMConfig.from_dict(json.loads(path.read_text())["sdim_config"])


def apply_lora(model: SDIMModel, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               train_vision: bool = False) -> SDIMModel:
    """Wrap ``model.base`` with peft LoRA on the language model's q,k,v,o,gate,up,down projections (in place).

    The base weights are frozen (the vision tower too, unless ``train_vision``); the depth modules stay trainable
    outside peft. Save the base model before this if you need it; save adapters with
    ``model.base.save_pretrained(dir)`` and depth modules with ``model.save_depth_modules(dir)``.
    Returns ``model``.
    """
    from peft import LoraConfig, get_peft_model

    if not isinstance(model, SDIMModel):
        raise TypeError(f"apply_lora takes an SDIMModel; got {type(model).__name__}.")
    if hasattr(model.base, "peft_config"):
        raise ValueError("model.base is already a PeftModel; apply LoRA once.")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_REGEX,
                        bias="none")
    model.base = get_peft_model(model.base, config)
    if train_vision:
        for p in _vision_tower(model.base).parameters():
            p.requires_grad_(True)
    for p in model.depth_parameters():
        p.requires_grad_(True)
    return model
