"""The ``complete`` recipe schema (``kind: complete``): training SDIM on Qwen2.5-VL (SPEC section 3).

OmegaConf structured dataclasses: every key of a recipe YAML must exist here with the right type (typos are errors),
and ``__post_init__`` checks values. Sections:

- ``model``   — the base model: ``"tiny"`` (random init at the ``tiny`` sizes with the offline tokenizer; trains on a
  CPU) or a local directory / hub id of a released Qwen2.5-VL (e.g. ``Qwen/Qwen2.5-VL-3B-Instruct``); processor
  resize bounds; load dtype.
- ``sdim``    — :class:`depthkit.complete.depth_inputs.SDIMConfig` (depth-branch settings).
- ``lora``    — LoRA on the language model, or full fine-tune, and whether the vision tower trains.
- ``prompts`` — ``pixel_reference`` (text | rope | grid_token), ``prompt_prior`` (none | nearest | guided), ``readout``
  (text | residual_head).
- ``data``    — training datasets (with roots and mixing weights, a fixed-size subset), synthetic-scene options,
  sparse sampling, supervision (sparse label-free with ``p_keep``, or dense GT), queries per image, edge weighting.
- ``loss``    — weights of answer-token cross-entropy, numeric L1 on expected digits, residual-head L1 and
  its uncertainty's Laplace NLL.
- ``eval``    — periodic validation on held-out synthetic scenes.
- ``train``   — :class:`depthkit.config.TrainConfig`; ``output`` — :class:`depthkit.config.OutputConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from depthkit.complete.decoding import DECODE_MODES
from depthkit.complete.depth_inputs import SDIMConfig
from depthkit.complete.prompts import MASK_TEXTS, PIXEL_REFERENCES, PROMPT_PRIORS, READOUTS
from depthkit.complete.readout import L1_SPACES
from depthkit.config import OutputConfig, RecipeError, TrainConfig
from depthkit.dtypes import canonical_dtype_name

__all__ = [
    "LAYOUTS", "SUPERVISIONS", "TinyModelConfig", "ModelConfig", "LoraConfig", "PromptsConfig", "DatasetEntry", "SyntheticOptions",
    "DataConfig", "LossConfig", "EvalConfig", "CompleteRecipe",
]


LAYOUTS = ("packed", "replicate", "kv_cache")
"""``data.prefix_sharing``: how the queries of one image share its prefix in a training batch
(:func:`depthkit.complete.batching.pack_groups`)."""
SUPERVISIONS = ("sparse", "dense")
"""``data.supervision``: labels from held-out sparse points (label-free) or from dense ground truth
(:func:`depthkit.complete.batching.sample_training_queries`)."""


@dataclass
class TinyModelConfig:
    """Sizes of the from-scratch ``model.base: tiny`` model (a stock Qwen2.5-VL architecture, random init).

    The defaults (~0.9M parameters) are what the embedded default checkpoint is trained at on a CPU.
    ``mrope_section`` is derived from the head size (Qwen's split: t gets the rest, h and w 3/16 of head_dim each).
    """

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    rope_theta: float = 1_000_000.0
    """Text rotary base. With ``pixel_reference: rope`` use 10–100 (SPEC section 3: at 1e6 the h/w bands barely
    rotate across a small grid)."""
    vision_hidden_size: int = 64
    vision_depth: int = 2
    vision_num_heads: int = 2
    vision_intermediate_size: int = 128
    tie_word_embeddings: bool = False
    vision_window_size: int = 56
    """Window attention size of the vision tower in resized pixels (Qwen2.5-VL: 112)."""
    vision_fullatt_block_indexes: Optional[list[int]] = None
    """Vision blocks with full attention (Qwen2.5-VL-3B: [7, 15, 23, 31]); None = the last block."""
    vocab_size: Optional[int] = None
    """Embedding rows; None = the offline tokenizer's size. Set 151936 to match Qwen's embedding size (benchmarks)."""

    def __post_init__(self):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "vision_hidden_size", "vision_depth", "vision_num_heads",
                     "vision_intermediate_size"):
            if getattr(self, name) < 1:
                raise RecipeError(f"model.tiny.{name} must be >= 1; received {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise RecipeError(f"model.tiny: hidden_size ({self.hidden_size}) must divide by num_attention_heads "
                              f"({self.num_attention_heads}), which must divide by num_key_value_heads "
                              f"({self.num_key_value_heads})")
        if (self.hidden_size // self.num_attention_heads) % 16:
            raise RecipeError(f"model.tiny: head size hidden_size/num_attention_heads = "
                              f"{self.hidden_size // self.num_attention_heads} must be a multiple of 16 (M-RoPE "
                              "splits it into t/h/w sections)")
        if self.vision_hidden_size % self.vision_num_heads:
            raise RecipeError("model.tiny.vision_hidden_size must be divisible by model.tiny.vision_num_heads")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise RecipeError(f"model.tiny.vocab_size must be >= 1 or null; received {self.vocab_size}")
        if self.rope_theta <= 0:
            raise RecipeError(f"model.tiny.rope_theta must be > 0; received {self.rope_theta}")

    def text_overrides(self) -> dict:
        head_dim = self.hidden_size // self.num_attention_heads
        hw = 3 * head_dim // 16
        out = {
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "rope_parameters": {"rope_type": "default", "rope_theta": float(self.rope_theta),
                                "mrope_section": [head_dim // 2 - 2 * hw, hw, hw]},
        }
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        return out

    def vision_overrides(self) -> dict:
        return {"hidden_size": self.vision_hidden_size, "depth": self.vision_depth,
                "num_heads": self.vision_num_heads, "intermediate_size": self.vision_intermediate_size,
                "window_size": self.vision_window_size,
                "fullatt_block_indexes": list(self.vision_fullatt_block_indexes or [self.vision_depth - 1])}


@dataclass
class ModelConfig:
    base: str = "tiny"
    """``tiny`` (random init, ``tiny`` sizes, offline tokenizer), or a Qwen2.5-VL directory / hub id (needs the
    network or the HF cache; ``HF_HUB_OFFLINE=1`` is respected)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    min_pixels: Optional[int] = None
    """Processor resize bounds (pixels, H*W); None keeps the processor's own (tiny: 28*28 .. 168*168)."""
    max_pixels: Optional[int] = None
    dtype: str = "float32"
    """Dtype the base weights are loaded in: float32, or bfloat16 to halve memory for large models (trainable
    parameters — LoRA, depth modules, residual head — are kept in float32 either way)."""
    attn_implementation: str = "sdpa"
    """sdpa | eager (packed prefix sharing needs a 4-D mask, which flash attention does not take)."""

    def __post_init__(self):
        try:
            self.dtype = canonical_dtype_name(self.dtype)
        except ValueError as exc:
            raise RecipeError(f"model.{exc}") from None
        if self.attn_implementation not in ("sdpa", "eager"):
            raise RecipeError(f"model.attn_implementation={self.attn_implementation!r}; allowed: sdpa, eager "
                              "(training packs several queries per image with a 4-D attention mask)")
        for name in ("min_pixels", "max_pixels"):
            v = getattr(self, name)
            if v is not None and v < 28 * 28:
                raise RecipeError(f"model.{name}={v} must be >= 784 (one 28x28 image token)")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise RecipeError(f"model.min_pixels ({self.min_pixels}) > model.max_pixels ({self.max_pixels})")


@dataclass
class LoraConfig:
    enabled: bool = True
    """LoRA on the language model's q,k,v,o,gate,up,down projections (peft)."""
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    full_finetune: bool = False
    """Train every base weight instead (needed for the from-scratch tiny model); excludes ``enabled``."""
    train_vision: bool = False
    """Also train the vision tower (fully) in LoRA mode; with ``full_finetune`` it always trains."""

    def __post_init__(self):
        if self.enabled and self.full_finetune:
            raise RecipeError("lora.enabled and lora.full_finetune cannot both be true; pick one (a from-scratch "
                              "tiny model wants full_finetune=true, enabled=false)")
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise RecipeError(f"lora needs r >= 1, alpha > 0, 0 <= dropout < 1; received r={self.r}, "
                              f"alpha={self.alpha}, dropout={self.dropout}")


@dataclass
class PromptsConfig:
    pixel_reference: str = "text"
    """text (coordinates in the prompt; the paper) | rope (query tokens take the pixel's M-RoPE position)."""
    prompt_prior: str = "none"
    """none (the paper) | nearest | guided: state a classical interpolated estimate in the mask-0 prompt."""
    readout: str = "text"
    """text (decode digits; the paper) | residual_head (bounded correction of the prior from the last hidden
    state; needs a prompt_prior)."""
    mask_text: str = "mask_and_value"
    """mask_and_value (the paper's prompt) | mask (mask sentences without the measured value) | none (no mask
    sentence): the text rows (e), (d), (c) of the paper's ablation (benchmarks/complete_ablation.py)."""
    max_log_correction: float = 1.0
    """Residual head bound: predictions stay within a factor e^max of the prior."""
    head_prior_input: bool = False
    """The residual head also reads log(prior) (:class:`depthkit.complete.readout.ResidualHead` ``prior_input``);
    meant for ``pixel_reference: grid_token``, where no prompt states the prior. False = the head of earlier
    checkpoints."""

    def __post_init__(self):
        for name, allowed in (("pixel_reference", PIXEL_REFERENCES), ("prompt_prior", PROMPT_PRIORS),
                              ("readout", READOUTS), ("mask_text", MASK_TEXTS)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"prompts.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.readout == "residual_head" and self.prompt_prior == "none":
            raise RecipeError("prompts.readout=residual_head corrects the prompt prior; set prompts.prompt_prior to "
                              "nearest or guided")
        if self.pixel_reference == "grid_token" and (self.readout != "residual_head" or self.mask_text != "none"):
            raise RecipeError(f"prompts.pixel_reference=grid_token (one query token per pixel, no decoding) needs "
                              f"readout: residual_head and mask_text: none; received readout: {self.readout}, "
                              f"mask_text: {self.mask_text}. Set both, or use pixel_reference: text | rope.")
        if self.head_prior_input and self.readout != "residual_head":
            raise RecipeError(f"prompts.head_prior_input=true is an input of the residual head; it needs readout: "
                              f"residual_head (received readout: {self.readout}).")
        if self.max_log_correction <= 0:
            raise RecipeError(f"prompts.max_log_correction must be > 0; received {self.max_log_correction}")


@dataclass
class DatasetEntry:
    """One training dataset, listed under its key in ``data.datasets`` (e.g. ``data.datasets.hypersim``)."""

    name: Optional[str] = None
    """A name from depthkit.data.datasets.DATASETS (training sets: hypersim, vkitti2, synthetic); None = the key."""
    root: Optional[str] = None
    """Dataset folder (None for synthetic). Give it on the command line: ``data.datasets.hypersim.root=/data/hs``."""
    weight: float = 1.0
    """Share of ``data.subset_size`` drawn from this dataset (weights are normalised); 0 leaves it out. Without a
    subset every dataset contributes all its samples, so unequal positive weights are refused there."""
    split: Optional[str] = None
    """None = ``train`` (the reader's training split; not the reader's own default, which is the split its protocol
    evaluates: ``test`` for synthetic)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra reader options (e.g. ``scenes: [Scene01]`` for vkitti2)."""


@dataclass
class SyntheticOptions:
    """Options of ``synthetic`` datasets (training and validation scenes)."""

    length: int = 100_000
    height: int = 168
    width: int = 168
    kind: str = "random"
    """random | indoor | outdoor (depthkit.data.synthetic.render_scene)."""
    image_noise: float = 0.0
    clutter: int = 0
    """Plants per scene (thin oblique leaves; depthkit.data.synthetic.render_scene); 0 = none."""


@dataclass
class DataConfig:
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    """Training datasets by key, e.g. ``{synthetic: {}}`` or ``{hypersim: {root: ...}, vkitti2: {root: ...}}``
    (a mapping rather than a list so that ``key=value`` overrides can reach each entry). The schema's default is
    empty (a default entry would be merged into every recipe's list); training refuses an empty list."""
    subset_size: int = 0
    """> 0: train on a fixed, seeded subset of this many samples drawn across the datasets by weight (the paper's
    20K subset of Hypersim + Virtual KITTI); 0 = every sample of every dataset."""
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)
    sparse_pattern: str = "random"
    """depthkit.data.sparse.make_sparse pattern of the sparse input: random | lidar | holes."""
    sparse_points: int = 500
    """Points for the random pattern."""
    sparse_kwargs: dict[str, Any] = field(default_factory=dict)
    """Other make_sparse options (e.g. n_beams for lidar)."""
    supervision: str = "sparse"
    """sparse: label-free — a valid sparse point is held out of the input and its value is the label;
    dense: any valid GT pixel missing from the input is a label."""
    p_keep: float = 0.1
    """Probability that a query is instead a kept (measured) point with mask 1 — teaches "preserve"."""
    queries_per_image: int = 1
    """Queries per image per step; they share one image prefix (``prefix_sharing``)."""
    edge_weight: float = 0.0
    """Query sampling weight 1 + edge_weight * edge strength in [0, 1] (0 = uniform): under sparse supervision a
    point's depth step to its neighbouring points (prompts.point_edge_strength), under dense supervision the GT's
    log-depth gradient at the pixel; see prompts.sample_query_pixels."""
    prefix_sharing: str = "packed"
    """How the Q queries of an image share its prefix (depthkit.complete.batching): packed (prefix once, suffixes
    after it in one row, block attention mask; works with gradient checkpointing), kv_cache (prefix pass, then the
    suffixes as a batch against its expanded KV cache; fastest when Q*S >> P, refuses gradient checkpointing) or
    replicate (one full sequence per query)."""
    min_sparse_points: int = 2
    """Images with fewer valid sparse points (after hold-out) are skipped (another sample is drawn)."""

    def __post_init__(self):
        for key, d in self.datasets.items():
            if d.weight < 0:
                raise RecipeError(f"data.datasets.{key}.weight must be >= 0; received {d.weight}")
        if self.supervision not in SUPERVISIONS:
            raise RecipeError(f"data.supervision={self.supervision!r}; allowed: {', '.join(SUPERVISIONS)}")
        if self.prefix_sharing not in LAYOUTS:
            raise RecipeError(f"data.prefix_sharing={self.prefix_sharing!r}; allowed: {', '.join(LAYOUTS)}")
        if not 0.0 <= self.p_keep <= 1.0:
            raise RecipeError(f"data.p_keep must be in [0, 1]; received {self.p_keep}")
        shares = {key: d.weight for key, d in self.datasets.items() if d.weight > 0}
        if self.subset_size == 0 and len(set(shares.values())) > 1:
            raise RecipeError(f"data.datasets weights {shares} mix nothing with data.subset_size 0: every dataset "
                              "then contributes all of its samples and a weight only leaves one out (0). Set "
                              "data.subset_size N to draw N samples by weight, or give the datasets equal weights "
                              "(1.0) to train on all of them.")
        if self.queries_per_image < 1 or self.subset_size < 0 or self.sparse_points < 1 or self.edge_weight < 0:
            raise RecipeError("data needs queries_per_image >= 1, subset_size >= 0, sparse_points >= 1, "
                              f"edge_weight >= 0; received {self.queries_per_image}, {self.subset_size}, "
                              f"{self.sparse_points}, {self.edge_weight}")


@dataclass
class LossConfig:
    cross_entropy: float = 1.0
    """Weight of the answer-token cross-entropy (labels: every answer token, template and <|im_end|> included)."""
    numeric_l1: float = 0.0
    """Weight of the L1 (metres) between the expected value of the digit distributions and the label."""

    @property
    def reads_answers(self) -> bool:
        """Whether any loss reads the answer tokens (cross-entropy or numeric L1); else training leaves them out."""
        return self.cross_entropy > 0 or self.numeric_l1 > 0
    residual_l1: float = 1.0
    """Weight of the residual head's L1 (readout residual_head only)."""
    residual_space: str = "log"
    """log (relative error; near and far pull alike) | metres."""
    residual_nll: float = 0.1
    """Weight of the Laplace NLL that trains the residual head's uncertainty (its confidence; prediction detached)."""

    def __post_init__(self):
        if min(self.cross_entropy, self.numeric_l1, self.residual_l1, self.residual_nll) < 0:
            raise RecipeError("loss weights must be >= 0")
        if self.residual_space not in L1_SPACES:
            raise RecipeError(f"loss.residual_space={self.residual_space!r}; allowed: {', '.join(L1_SPACES)}")


@dataclass
class EvalConfig:
    """Validation on held-out synthetic scenes (the ``val`` split: seeds disjoint from training)."""

    num_scenes: int = 4
    queries_per_scene: int = 32
    """Held-out sparse points queried per scene (removed from the input, answered, compared with their value)."""
    height: int = 168
    width: int = 168
    kind: str = "random"
    sparse_points: int = 150
    batch_queries: int = 32
    """Most queries answered together (the inference engine's batch size)."""
    decode: str = "free"
    """Text readout: free (greedy over the full vocabulary, the whole answer: ``val_unparseable`` shows whether the
    model writes the answer template) | constrained (forced template, digits only: what the stage answers)."""
    max_new_tokens: int = 16
    """Answer length limit in tokens for ``decode: free`` (the whole answer, template words included)."""

    def __post_init__(self):
        if min(self.num_scenes, self.queries_per_scene, self.height, self.width, self.sparse_points,
               self.batch_queries, self.max_new_tokens) < 1:
            raise RecipeError("eval sizes must all be >= 1")
        if self.decode not in DECODE_MODES:
            raise RecipeError(f"eval.decode={self.decode!r}; allowed: {', '.join(DECODE_MODES)}")


@dataclass
class CompleteRecipe:
    kind: str = "complete"
    model: ModelConfig = field(default_factory=ModelConfig)
    sdim: SDIMConfig = field(default_factory=SDIMConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        if self.kind != "complete":
            raise RecipeError(f"kind={self.kind!r}; this schema is for kind: complete")
        if self.data.prefix_sharing == "kv_cache" and self.train.gradient_checkpointing:
            raise RecipeError("data.prefix_sharing=kv_cache cannot be combined with train.gradient_checkpointing "
                              "(transformers drops the KV cache under checkpointing); use packed")
        if self.prompts.readout == "text" and not self.loss.reads_answers:
            raise RecipeError("prompts.readout=text needs loss.cross_entropy > 0 or loss.numeric_l1 > 0")
        if self.prompts.readout == "residual_head" and self.loss.residual_l1 <= 0:
            if self.loss.cross_entropy <= 0:
                raise RecipeError("prompts.readout=residual_head needs loss.residual_l1 > 0 (the head's L1) or "
                                  "loss.cross_entropy > 0 (the text answer only)")
            import warnings

            from depthkit.warning_types import DepthkitWarning

            # allowed (e.g. to train only the text answer), but the head's correction layer is then frozen at zero
            # (depthkit.complete.train.build_completer): the exported readout returns the prompt prior exactly
            warnings.warn("prompts.readout=residual_head with loss.residual_l1=0: the residual head's correction is "
                          "not trained (it stays zero), so the completer's answers are the prompt prior exactly; set "
                          "loss.residual_l1 > 0 to train the readout.", DepthkitWarning, stacklevel=2)
