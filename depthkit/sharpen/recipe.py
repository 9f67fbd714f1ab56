"""Recipe schemas of stage 2: ``kind: lotus`` (Lotus with dense GT) and ``kind: sharpen`` (SharpDepth, label-free).

Both are OmegaConf structured dataclasses named in :data:`depthkit.config.RECIPE_SCHEMAS`; the YAML files
under ``recipes/lotus/``, ``recipes/sharpen/`` and ``recipes/tiny/`` sit on top, and ``key=value`` overrides last::

    depthkit train recipes/tiny/lotus.yaml train.max_steps=200 loss.vae_steps=50
    depthkit train recipes/tiny/sharpen.yaml model.lotus=runs/tiny_lotus/final

The SharpDepth switches are :class:`depthkit.sharpen.model.SharpDepthConfig` itself (``sharpdepth:`` section), so a
recipe and a checkpoint's ``sharpdepth.json`` share one schema. Importing this module imports torch (through that
config class) but not diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from depthkit.config import OutputConfig, RecipeError, TrainConfig
from depthkit.sharpen.config import SharpDepthConfig
from depthkit.sharpen.lotus import LOTUS_MODES
from depthkit.sharpen.normalize import SPACES

__all__ = ["check_validation_is_held_out", "DataSourceConfig", "DataConfig", "LotusModelConfig", "LotusLossConfig",
           "LotusRecipe", "SharpenModelConfig", "MetricSourceConfig", "SharpenDataConfig", "ValConfig", "SharpenRecipe"]

EXPORTS = ("student", "ema")
"""Which weights a sharpen run's final checkpoint holds (``model.export``)."""
PASS1 = ("ema", "lotus")
"""Which UNet runs a sharpen run's pass 1, the Lotus prediction the discrepancy and gate come from (``model.pass1``)."""


@dataclass
class DataSourceConfig:
    """One dataset read with :func:`depthkit.data.datasets.build_dataset`."""

    name: str = "synthetic"
    """Reader name: synthetic, hypersim, vkitti2, image_folder, nyuv2, ... (``depthkit ls`` lists them)."""
    root: Optional[str] = None
    """Dataset folder (ignored by synthetic)."""
    split: Optional[str] = "train"
    """Reader split (image folders: "train" or "all", the same thing). None = "train" for training data (never the
    reader's default, which is the split it evaluates: test for synthetic); a validation source reads its own. A
    ``val.source`` must name a held-out split: one that reads a training source's images is refused
    (:func:`check_validation_is_held_out`)."""
    weight: float = 1.0
    """Mixing weight: a training sample comes from this source with probability weight / sum of weights
    (Lotus trains on Hypersim and Virtual KITTI 2 at 9 : 1)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra reader keyword arguments, e.g. ``{length: 2000, height: 96, width: 128}`` for synthetic."""
    sparse_dir: Optional[str] = None
    """sharpen only: sparse input for readers without their own (image folders): ``<sparse_dir>/<name>.npy`` or
    ``<name>_sparse.npy`` (metres; 16-bit PNG needs ``sparse_scale``)."""
    sparse_scale: Optional[float] = None
    """Units per metre of 16-bit PNG sparse files in ``sparse_dir`` (256 KITTI/VOID, 1000 millimetres)."""

    def __post_init__(self):
        if not self.weight > 0:
            raise RecipeError(f"data source {self.name!r}: weight must be > 0; received {self.weight}")


@dataclass
class DataConfig:
    """Training data: one or more sources, resized to cover ``resolution`` and cropped to it."""

    sources: list[DataSourceConfig] = field(default_factory=lambda: [DataSourceConfig()])
    resolution: list[int] = field(default_factory=lambda: [48, 64])
    """Training crop (H, W) in pixels; each a multiple of the model's ``resolution_multiple`` (64 for SD, 8 for the
    tiny models). Images are resized so that they cover it (aspect kept), then cropped at a random position."""
    random_flip: bool = True
    """Flip each sample horizontally with probability 0.5."""

    def __post_init__(self):
        if not self.sources:
            raise RecipeError("data.sources is empty; give at least one dataset")
        if len(self.resolution) != 2 or min(self.resolution) < 1:
            raise RecipeError(f"data.resolution must be [H, W] in pixels (> 0); received {list(self.resolution)}")


# ------------------------------------------------------------------------------------------------------ lotus
@dataclass
class LotusModelConfig:
    init: str = "tiny"
    """Where the weights start: "tiny" (random tiny Lotus built in code, sizes from tiny_unet / tiny_vae); a Lotus
    checkpoint directory (continue training); or a Stable Diffusion 2 diffusers directory / hub id with unet/, vae/,
    scheduler/, text_encoder/, tokenizer/ (the Lotus paper's start: conv_in duplicated and halved to 8 channels for
    Lotus-G, a projection class embedding added for the task switch)."""
    mode: str = "generative"
    """generative (Lotus-G, 8 input channels; what SharpDepth builds on) | direct (Lotus-D)."""
    norm: str = "depth"
    """Space the model predicts in: depth (near → -1) | disparity (near → +1)."""
    tiny_unet: dict[str, Any] = field(default_factory=dict)
    """Overrides of depthkit.sharpen.tiny.tiny_unet_config (init "tiny" only)."""
    tiny_vae: dict[str, Any] = field(default_factory=dict)
    """Overrides of depthkit.sharpen.tiny.tiny_vae_config (init "tiny" only)."""
    default_processing_resolution: Optional[int] = None
    """Stored with the checkpoint: longest side (pixels) inference runs at; None = the input's size."""

    def __post_init__(self):
        if self.mode not in LOTUS_MODES:
            raise RecipeError(f"model.mode={self.mode!r}; allowed: {', '.join(LOTUS_MODES)}")
        if self.norm not in SPACES:
            raise RecipeError(f"model.norm={self.norm!r}; allowed: {', '.join(SPACES)}")


@dataclass
class LotusLossConfig:
    """Loss weights. Lotus itself uses ``latent`` (+ ``detail_preserver``) with SD's frozen VAE; a tiny model from
    random init also needs a VAE that can write depth, hence ``train_vae`` with ``pixel`` and ``vae_depth`` (trained
    jointly, or first and alone with ``vae_steps``)."""

    latent: float = 1.0
    """MSE between the x0 prediction and the VAE latent of the normalised GT (Lotus), over fully valid cells."""
    pixel: float = 0.0
    """L1 between the decoded prediction and the normalised GT over valid pixels (through the decoder)."""
    vae_depth: float = 0.0
    """L1 of depth auto-encoding, decode(encode(GT)) vs GT (needs train_vae)."""
    detail_preserver: float = 0.0
    """Lotus's detail preserver: the same UNet with the "rgb" task switch reconstructs the image latent."""
    train_vae: bool = False
    """Train the VAE too (tiny models from random init). False keeps it frozen, as Lotus does with SD's VAE."""
    vae_steps: int = 0
    """Optimizer steps of a VAE-only first phase (0: VAE and UNet train jointly throughout). Steps < vae_steps
    train the VAE alone with ``vae_depth``; then its ``scaling_factor`` is set so that GT depth latents have unit
    std, the VAE is frozen, and the UNet trains with ``latent`` / ``pixel`` / ``detail_preserver`` (each phase has
    its own warmup and decay). Needs ``train_vae`` and ``vae_depth > 0``."""
    quantiles: list[float] = field(default_factory=lambda: [0.02, 0.98])
    """GT normalisation range per image (Lotus: 2% / 98%)."""

    def __post_init__(self):
        weights = {"latent": self.latent, "pixel": self.pixel, "vae_depth": self.vae_depth,
                   "detail_preserver": self.detail_preserver}
        if any(v < 0 for v in weights.values()) or not any(v > 0 for v in weights.values()):
            raise RecipeError(f"loss weights must be >= 0 with at least one > 0; received {weights}")
        if self.vae_depth > 0 and not self.train_vae:
            raise RecipeError("loss.vae_depth > 0 trains the VAE: set loss.train_vae=true (or vae_depth=0)")
        if self.vae_steps < 0:
            raise RecipeError(f"loss.vae_steps must be >= 0 (0 = no VAE-only phase); received {self.vae_steps}")
        if self.vae_steps > 0 and not (self.train_vae and self.vae_depth > 0):
            raise RecipeError(f"loss.vae_steps={self.vae_steps} trains the VAE alone first with the vae_depth loss; "
                              f"received train_vae={self.train_vae}, vae_depth={self.vae_depth}. Set "
                              "loss.train_vae=true and loss.vae_depth > 0, or loss.vae_steps=0.")
        if self.vae_steps > 0 and not any(v > 0 for v in (self.latent, self.pixel, self.detail_preserver)):
            raise RecipeError(f"loss.vae_steps={self.vae_steps}: the UNet phase after it needs latent, pixel or "
                              f"detail_preserver > 0; received {weights}")
        if len(self.quantiles) != 2 or not 0.0 <= self.quantiles[0] < self.quantiles[1] <= 1.0:
            raise RecipeError(f"loss.quantiles must be [lo, hi] with 0 <= lo < hi <= 1; received {self.quantiles}")


@dataclass
class ValConfig:
    """Validation on a dataset with GT depth (logged every ``train.eval_every`` steps and at the end)."""

    source: Optional[DataSourceConfig] = None
    """None = no validation."""
    n_images: int = 8
    """Images (the first n of the source) scored each time."""

    def __post_init__(self):
        if self.n_images < 1:
            raise RecipeError(f"val.n_images must be >= 1; received {self.n_images} (to skip validation, leave "
                              "val.source out)")


def _synthetic_seeds(src: DataSourceConfig, split: str, first_n: int | None = None) -> range:
    """The ``render_scene`` seeds a synthetic source reads (its first ``first_n`` items when given)."""
    from depthkit.data.datasets.synthetic import DEFAULT_LENGTHS, SPLIT_SEEDS

    length, offset = src.options.get("length") or DEFAULT_LENGTHS.get(split, 0), src.options.get("seed_offset") or 0
    if not all(type(x) is int for x in (length, offset)):
        return range(0)  # not the reader's options: it refuses them itself when the run starts
    start = SPLIT_SEEDS.get(split, 0) + offset
    return range(start, start + (length if first_n is None else min(length, first_n)))


def check_validation_is_held_out(val: ValConfig, sources: list[DataSourceConfig]) -> None:
    """Refuse (RecipeError) a ``val.source`` that reads images a training source reads: the same reader and split
    (a source's split defaults to ``train``, so a validation source that leaves it out reads the training split),
    the same root (when both give one) and, for synthetic scenes, overlapping seeds of its first ``val.n_images``
    items. Its scores would be on training images."""
    from pathlib import Path

    from depthkit.training import training_split

    v = val.source
    if v is None:
        return
    for i, t in enumerate(sources):
        split = training_split(t.split)
        if v.name != t.name or v.split != split:
            continue
        if v.name == "synthetic":
            trained, scored = _synthetic_seeds(t, split), _synthetic_seeds(v, split, val.n_images)
            overlap = max(trained.start, scored.start) < min(trained.stop, scored.stop)
        else:
            overlap = v.root is None or t.root is None or (Path(v.root).expanduser().resolve()
                                                           == Path(t.root).expanduser().resolve())
        if overlap:
            raise RecipeError(f"val.source reads the images training reads (data.sources[{i}]: {t.name}, split "
                              f"{split!r}{f', root {t.root}' if t.root else ''}), so its scores would be on training "
                              "images. Set val.source.split to a held-out split (synthetic: val; a source's split "
                              "is train unless given), or val.source: null for no validation.")


@dataclass
class LotusRecipe:
    """``depthkit train`` recipe for Lotus with dense ground truth (see :mod:`depthkit.sharpen.train_lotus`)."""

    kind: str = "lotus"
    model: LotusModelConfig = field(default_factory=LotusModelConfig)
    loss: LotusLossConfig = field(default_factory=LotusLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        check_validation_is_held_out(self.val, self.data.sources)


# ------------------------------------------------------------------------------------------------------ sharpen
@dataclass
class SharpenModelConfig:
    lotus: str = "tiny"
    """The sharpener's initial weights (and the frozen SDS teacher's, unless ``teacher`` is set): a Lotus-G
    directory (a Lotus run's ``final/``, ``<checkpoint>/sharpen`` of an import), a depthkit checkpoint that has a
    ``sharpen/`` part, a hub id, or "tiny" (random weights; smoke tests only)."""
    teacher: Optional[str] = None
    """SDS teacher f_G (frozen); None = a frozen copy of ``lotus``."""
    tiny_unet: dict[str, Any] = field(default_factory=dict)
    """Overrides of depthkit.sharpen.tiny.tiny_unet_config (lotus "tiny" only)."""
    tiny_vae: dict[str, Any] = field(default_factory=dict)
    """Overrides of depthkit.sharpen.tiny.tiny_vae_config (lotus "tiny" only)."""
    export: str = "student"
    """Weights of the final checkpoint: student | ema. With decay 0.9999 applied every 10 steps the EMA averages
    over ~100k steps, so for runs shorter than that it is still close to Lotus: export the student."""
    processing_resolution: Optional[int] = None
    """Stored in the final checkpoint's manifest: longest side (pixels) inference runs at; None = input size."""
    pass1: str = "ema"
    """The UNet of pass 1 in training and in the exported checkpoint. "ema" (default; the released SharpDepth
    code and paper): the student's EMA while training, and the sharpener's own UNet at run time (one UNet runs
    twice). "lotus" (a depthkit switch): a frozen copy of ``lotus``'s UNet in both, exported as the checkpoint's
    ``sharpen/lotus_unet/``; the fine-tuned sharpener no longer predicts the depth its own gate is read from."""

    def __post_init__(self):
        if self.export not in EXPORTS:
            raise RecipeError(f"model.export={self.export!r}; allowed: {', '.join(EXPORTS)}")
        if self.pass1 not in PASS1:
            raise RecipeError(f"model.pass1={self.pass1!r}; allowed: {', '.join(PASS1)} (ema: the student's EMA, "
                              f"as the released SharpDepth; lotus: a frozen copy of model.lotus's UNet)")


@dataclass
class MetricSourceConfig:
    """The metric depth d that SharpDepth sharpens (see :mod:`depthkit.sharpen.teachers`)."""

    source: str = "complete:guided"
    """complete[:METHOD] (depthkit's complete stage on the sparse input; METHOD a classical method or sdim) |
    unidepth[:MODEL_ID] (needs the unidepth package) | hf:DIR (a transformers depth-estimation model) |
    npy:DIR (precomputed ``DIR/<name>.npy`` per image, metres)."""
    checkpoint: Optional[str] = None
    """Checkpoint for ``complete:sdim`` (a depthkit checkpoint with a complete/ part)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra options of the source (e.g. ``{processing_resolution: 512}`` for hf)."""
    cache: bool = True
    """Compute d once per training image and keep it under ``<output_dir>/metric_cache/`` (float32 .npy)."""

    def __post_init__(self):
        from depthkit.sharpen.teachers import parse_source_spec

        try:
            parse_source_spec(self.source)
        except ValueError as exc:
            raise RecipeError(f"metric.source: {exc}") from exc


@dataclass
class SharpenDataConfig(DataConfig):
    """Unlabelled training images (GT depth, when a reader has it, is never used for training)."""

    sources: list[DataSourceConfig] = field(
        default_factory=lambda: [DataSourceConfig(name="image_folder", root="data/images")])
    resolution: list[int] = field(default_factory=lambda: [576, 768])
    use_sparse: bool = True
    """Pass the sparse input (when a sample has one) to the losses, so e = 0 at measured pixels during training
    too (depthkit's addition; needs ``sharpdepth.zero_discrepancy_at_sparse``)."""


@dataclass
class SharpenRecipe:
    """``depthkit train`` recipe for label-free SharpDepth (see :mod:`depthkit.sharpen.train`)."""

    kind: str = "sharpen"
    model: SharpenModelConfig = field(default_factory=SharpenModelConfig)
    metric: MetricSourceConfig = field(default_factory=MetricSourceConfig)
    data: SharpenDataConfig = field(default_factory=SharpenDataConfig)
    sharpdepth: SharpDepthConfig = field(default_factory=SharpDepthConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        check_validation_is_held_out(self.val, self.data.sources)
        if self.train.num_workers:
            raise RecipeError(f"train.num_workers={self.train.num_workers}: the sharpen trainer prepares each batch "
                              "in the training process (its metric-depth source runs on the training device) and "
                              "uses no DataLoader workers; set train.num_workers=0.")
