"""SDIM prompts, in one versioned place: per-pixel query text, the answer template, number format and parsing.

Everything a trainer or an inference engine writes to or reads from the language model goes through here, so the
text seen in training and at inference cannot drift apart. Change any string and bump :data:`PROMPT_VERSION`
(checkpoints record the version they were trained with).

A conversation for one queried pixel j (rendered with Qwen2.5-VL's chat format)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|image_pad|>...<|vision_end|>          <- shared image prefix
    The mask value is 0; predict the distance to the camera. What is the distance from the current pixel to the
    camera? The current pixel is at (x, y).<|im_end|>\\n<|im_start|>assistant\\n   <- query suffix (one line)
    The pixel is 1.234 meters away from the camera.<|im_end|>                   <- answer (the label in training)

Decisions where the paper is silent (see SPEC section 3):

- **Coordinates** (``pixel_reference="text"``) are integer ``(x, y)`` = (column, row) of the queried pixel in the
  *resized* image that the vision tower sees (the ``smart_resize`` size, H' x W'), origin top-left — the absolute
  pixel frame Qwen2.5-VL grounds in. Map an input-resolution pixel into that frame with
  :func:`depthkit.complete.processor.map_to_resized`. With ``pixel_reference="rope"`` the coordinate sentence is
  omitted; the engine gives the query tokens the pixel's M-RoPE position instead.
- **One query token** (``pixel_reference="grid_token"``, for ``readout: residual_head`` only): no per-pixel text at
  all. The user text is the question alone (:data:`QUESTION_TEXT`; no mask sentence, so ``mask_text`` must be
  ``"none"``, and no prior sentence: the prior reaches the answer through the residual head, which corrects it), so
  every query of an image is the same conversation and differs only in the M-RoPE position of its LAST token, the
  ``\n`` closing the assistant header, whose hidden state the head reads: that token sits at the pixel's place on
  the image grid (:mod:`depthkit.complete.positions`). The engine computes everything before it once, in the shared
  prefix, and answers thousands of pixels per forward as one-token suffixes. Mask-1 training queries read the same
  text; they differ from mask-0 ones by the measurement kept in the depth branch's input and by the head's prior
  (the measured value).
- **Prompt prior** (``prompt_prior="nearest" | "guided"``): the mask-0 text keeps the paper's sentence and appends
  ``The interpolated estimate is {p:.3f} meters.``. Which interpolation produced ``p`` (nearest valid point or an
  RGB-guided one) is the caller's business; the text is the same. Mask-1 text never carries a prior.
- **Mask text** (``mask_text``, for the paper's ablation rows (c)-(e)): ``mask_and_value`` (default, the paper's
  full prompt: mask-0 and mask-1 sentences, the mask-1 one stating the measured value), ``mask`` (the mask
  sentences without the value: mask 1 reads :data:`MASK1_NO_VALUE_TEXT`, so the value must come from the depth
  branch) or ``none`` (no mask sentence at all; a prompt prior, when set, is still stated as its own sentence).
  The default's text is unchanged, so :data:`PROMPT_VERSION` covers it; checkpoints record the setting.
- **Numbers** are metres with exactly 3 decimals (1 mm), clipped to [0.001, 300] m when formatted (so the model only
  ever sees and is taught numbers in that range; the tokenizer spells them digit by digit).
- :func:`parse_answer` never raises: it returns ``None`` for anything it cannot read as a finite, non-negative
  number, and the caller flags that pixel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PROMPT_VERSION",
    "MIN_DEPTH",
    "MAX_DEPTH",
    "MASK0_TEXT",
    "MASK1_TEMPLATE",
    "QUESTION_TEXT",
    "ANSWER_TEMPLATE",
    "ANSWER_PREFIX",
    "ANSWER_SUFFIX",
    "COORDINATE_TEMPLATE",
    "PRIOR_TEMPLATE",
    "PROMPT_PRIORS",
    "PRIOR_METHODS",
    "PIXEL_REFERENCES",
    "MASK_TEXTS",
    "MASK1_NO_VALUE_TEXT",
    "READOUTS",
    "PromptConfig",
    "format_depth",
    "parse_answer",
    "single_token_ids",
    "mask_text",
    "coordinate_text",
    "query_text",
    "answer_text",
    "chat_prefix_text",
    "chat_suffix_text",
    "chat_messages",
    "sample_query_pixels",
    "point_edge_strength",
]

PROMPT_VERSION = "sdim-prompts-2"  # 2: coordinates after the question (prefix sharing)

MIN_DEPTH = 0.001  # metres; smallest number the model is shown or taught
MAX_DEPTH = 300.0  # metres

# The paper's templates (SPEC section 3), verbatim.
MASK0_TEXT = "The mask value is 0; predict the distance to the camera."
MASK1_TEMPLATE = "The mask value is 1, and the distance to the camera is {x:.3f} meters, preserve the given value."
QUESTION_TEXT = "What is the distance from the current pixel to the camera?"
ANSWER_TEMPLATE = "The pixel is {y:.3f} meters away from the camera."
# depthkit's additions.
COORDINATE_TEMPLATE = "The current pixel is at ({x}, {y})."
PRIOR_TEMPLATE = "The interpolated estimate is {p:.3f} meters."
MASK1_NO_VALUE_TEXT = "The mask value is 1; preserve the given value."  # mask_text="mask": no value in the text

# The fixed text around the number in the answer: an engine forces these tokens and decodes only the digits.
# With Qwen's split regex "is " + digits tokenises as "...is", " ", digits, so tokenize(prefix) is a token prefix
# of tokenize(answer); likewise the suffix starts at a word boundary (" meters").
ANSWER_PREFIX = ANSWER_TEMPLATE.split("{y:.3f}")[0]  # "The pixel is "
ANSWER_SUFFIX = ANSWER_TEMPLATE.split("{y:.3f}")[1]  # " meters away from the camera."

# The allowed values of the prompt settings (recipes, checkpoints, the engine and the positions all check these).
PROMPT_PRIORS = ("none", "nearest", "guided")
"""``prompt_prior``: none (the paper) or the classical interpolation whose value the mask-0 prompt states."""
PRIOR_METHODS = PROMPT_PRIORS[1:]
"""The classical interpolations a prior can come from (:func:`depthkit.complete.query_plan.prior_map`)."""
PIXEL_REFERENCES = ("text", "rope", "grid_token")
"""``pixel_reference``: coordinates in the prompt text, the pixel's M-RoPE position on the query tokens, or one
query token at the pixel's grid position after a text shared by all pixels (see the module docstring)."""

MASK_TEXTS = ("mask_and_value", "mask", "none")
"""``mask_text``: the paper's full mask sentences (default), without the measured value, or none (ablation (c))."""
READOUTS = ("text", "residual_head")
"""``readout``: decode the answer's digits, or read a bounded correction of the prior from the last hidden state."""

# Qwen2.5-VL chat framing (what its chat template renders), split where the engine shares the image prefix.
_SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
_IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
_END_USER_START_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"


@dataclass(frozen=True)
class PromptConfig:
    """How per-pixel prompts are written.

    Attributes:
        prompt_prior: ``"none"`` (the paper), ``"nearest"`` or ``"guided"``: whether mask-0 text states an
            interpolated estimate (the value comes from the caller; the two non-none modes name its source).
        pixel_reference: ``"text"`` (coordinates in the prompt; default), ``"rope"`` (no coordinate text; the
            engine assigns the query tokens the pixel's M-RoPE position) or ``"grid_token"`` (the question only;
            its last token takes the pixel's grid position; needs ``mask_text="none"``).
        version: the prompt version these settings belong to; must equal :data:`PROMPT_VERSION`.
        mask_text: ``"mask_and_value"`` (the paper's prompt; default), ``"mask"`` or ``"none"`` (see the module
            docstring; the paper's ablation rows (e), (d), (c)).
    """

    prompt_prior: str = "none"
    pixel_reference: str = "text"
    version: str = PROMPT_VERSION
    mask_text: str = "mask_and_value"

    def __post_init__(self):
        if self.prompt_prior not in PROMPT_PRIORS:
            raise ValueError(f"prompt_prior={self.prompt_prior!r} is not one of {PROMPT_PRIORS}.")
        if self.pixel_reference not in PIXEL_REFERENCES:
            raise ValueError(f"pixel_reference={self.pixel_reference!r} is not one of {PIXEL_REFERENCES}.")
        if self.mask_text not in MASK_TEXTS:
            raise ValueError(f"mask_text={self.mask_text!r} is not one of {MASK_TEXTS}.")
        if self.pixel_reference == "grid_token" and self.mask_text != "none":
            raise ValueError(f"pixel_reference={self.pixel_reference!r} writes no per-pixel text (no mask or prior "
                             f"sentence), so mask_text must be 'none'; got {self.mask_text!r}. Set mask_text='none' "
                             "(prompts.mask_text=none in a recipe).")
        if self.version != PROMPT_VERSION:
            raise ValueError(
                f"prompt version {self.version!r} does not match this depthkit's {PROMPT_VERSION!r}: the checkpoint "
                "was trained with other prompt text; use the depthkit release it was trained with, or retrain."
            )


def _clip_depth(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"depth {value!r} is not finite; only finite metres can be written into a prompt.")
    return min(max(value, MIN_DEPTH), MAX_DEPTH)


def format_depth(y: float) -> str:
    """Metres → the prompt's number text: 3 decimals, clipped to [0.001, 300] m (e.g. ``1.2344`` → ``"1.234"``).

    Raises ``ValueError`` for NaN/inf (a caller bug, not model output).
    """
    return f"{_clip_depth(y):.3f}"


_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_ANSWER_RE = re.compile(re.escape(ANSWER_PREFIX.strip()) + r"\s*" + _NUMBER + r"\s*meters?\b", re.IGNORECASE)
_NUMBER_METERS_RE = re.compile(r"^\s*" + _NUMBER + r"\s*(?:meters?\b|m\b|$)", re.IGNORECASE)


def single_token_ids(tokenizer, chars: str = "0123456789") -> list[int]:
    """Token id of each character in ``chars`` (index i = ``chars[i]``), e.g. the digits and the point a number is
    spelled with. Qwen's tokenizers spell numbers one character per token; a tokenizer that does not is an error."""
    ids = []
    for ch in chars:
        enc = tokenizer(ch, add_special_tokens=False).input_ids
        if len(enc) != 1:
            raise ValueError(f"the tokenizer spells {ch!r} as {len(enc)} tokens {enc}; depthkit needs one token per "
                             "digit and for the point, as Qwen2.5-VL's tokenizer has.")
        ids.append(int(enc[0]))
    return ids


def parse_answer(text) -> float | None:
    """Read the metres out of a model answer; ``None`` when it cannot (never raises).

    Accepted: the full answer (``"The pixel is 1.234 meters away from the camera."``, case-insensitive, extra
    spaces or a trailing ``<|im_end|>`` allowed), or the text after a forced :data:`ANSWER_PREFIX` (``"1.234 meters
    away..."``, ``"1.234"``). Anything else — no number, a negative sign, several candidate numbers without the
    template, non-string input — gives ``None``. The value is returned as written (not clipped).
    """
    if not isinstance(text, str):
        return None
    try:
        match = _ANSWER_RE.search(text) or _NUMBER_METERS_RE.match(text)
        if match is None:
            return None
        value = float(match.group(1))
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def mask_text(mask_value: int, sparse_value: float | None = None, prior: float | None = None,
              config: PromptConfig | None = None) -> str:
    """The mask sentence for one pixel (empty for ``config.mask_text="none"`` without a prior).

    Args:
        mask_value: 1 if the pixel has a measurement that must be preserved, 0 if it must be predicted.
        sparse_value: the measurement in metres; required for mask 1, refused for mask 0.
        prior: interpolated estimate in metres for mask 0; required when ``config.prompt_prior != "none"``,
            refused otherwise (so training and inference cannot silently disagree).
    """
    config = config or PromptConfig()
    if mask_value not in (0, 1):
        raise ValueError(f"mask_value={mask_value!r}; allowed: 0 (predict) or 1 (preserve).")
    if mask_value == 1:
        if sparse_value is None:
            raise ValueError("mask_value=1 needs sparse_value (the measured metres to preserve).")
        value = _clip_depth(sparse_value)
        return {"mask_and_value": MASK1_TEMPLATE.format(x=value), "mask": MASK1_NO_VALUE_TEXT,
                "none": ""}[config.mask_text]
    if sparse_value is not None:
        raise ValueError("mask_value=0 takes no sparse_value: a held-out or missing pixel has no measurement.")
    sentences = [] if config.mask_text == "none" else [MASK0_TEXT]
    if config.prompt_prior == "none":
        if prior is not None:
            raise ValueError("prior was given but config.prompt_prior='none'; set prompt_prior or drop prior.")
    elif prior is None:
        raise ValueError(f"config.prompt_prior={config.prompt_prior!r} needs prior= (interpolated metres).")
    else:
        sentences.append(PRIOR_TEMPLATE.format(p=_clip_depth(prior)))
    return " ".join(sentences)


def coordinate_text(x: int, y: int) -> str:
    """``The current pixel is at (x, y).`` with x = column, y = row in the resized image (integer pixels)."""
    if int(x) != x or int(y) != y or x < 0 or y < 0:
        raise ValueError(f"pixel coordinates must be non-negative integers (column, row); got ({x}, {y}).")
    return COORDINATE_TEMPLATE.format(x=int(x), y=int(y))


def query_text(mask_value: int, xy: tuple[int, int] | None = None, sparse_value: float | None = None,
               prior: float | None = None, config: PromptConfig | None = None) -> str:
    """The user text after the image for one queried pixel: mask sentence, question, [coordinates].

    ``xy`` = (column, row) in the resized image; required for ``pixel_reference="text"``, ignored for ``"rope"``.
    With ``pixel_reference="grid_token"`` the text is :data:`QUESTION_TEXT` for every query (``mask_value``,
    ``sparse_value`` and ``prior`` are checked as for the other layouts but not written; module docstring).

    The coordinates come last on purpose (prompt version 2): at inference every query is a mask-0 query, so
    everything before the coordinates is the same text for all pixels of an image and the engine computes it once
    as part of the shared prefix; per pixel only the coordinates and the answer are left (about 4x fewer suffix
    tokens than with the coordinates first).
    """
    config = config or PromptConfig()
    parts = [t for t in (mask_text(mask_value, sparse_value=sparse_value, prior=prior, config=config),) if t]
    if config.pixel_reference == "grid_token":
        return QUESTION_TEXT
    parts.append(QUESTION_TEXT)
    if config.pixel_reference == "text":
        if xy is None:
            raise ValueError("pixel_reference='text' needs xy=(column, row) in the resized image.")
        parts.append(coordinate_text(*xy))
    return " ".join(parts)


def answer_text(y: float) -> str:
    """The answer sentence for ``y`` metres (formatted with :func:`format_depth`)."""
    return ANSWER_PREFIX + format_depth(y) + ANSWER_SUFFIX


def chat_prefix_text() -> str:
    """Chat text up to and including ``<|vision_end|>``, with ONE ``<|image_pad|>`` (the processor expands it).

    This is the part shared by all queries of an image.
    """
    return _SYSTEM_TURN + "<|im_start|>user\n" + _IMAGE_PLACEHOLDER


def chat_suffix_text(query: str, answer: str | None = None) -> str:
    """Chat text after ``<|vision_end|>``: the query, end of user turn, assistant header, and optionally the answer
    followed by ``<|im_end|>`` (training). ``chat_prefix_text() + chat_suffix_text(q)`` equals Qwen's chat
    template rendered with ``add_generation_prompt=True``.
    """
    text = query + _END_USER_START_ASSISTANT
    if answer is not None:
        text += answer + END_OF_TURN
    return text


def chat_messages(query: str, answer: str | None = None) -> list[dict]:
    """The same conversation as chat-template messages (image first, then the query text)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def _edge_strength(depth_or_image: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1] from a depth map (metres; zeros = missing, filled from the nearest valid pixel) or an
    RGB/grey image; log-depth gradients so an edge counts the same near and far. Grown by one pixel each side so
    pixels on both sides of an edge are favoured."""
    from scipy import ndimage

    arr = np.asarray(depth_or_image, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    else:
        valid = np.isfinite(arr) & (arr > 0)
        if not valid.any():
            return np.zeros(arr.shape)
        if not valid.all():
            # Nearest-valid fill: sparse input becomes piecewise constant, whose jumps sit between points.
            _, (ri, ci) = ndimage.distance_transform_edt(~valid, return_indices=True)
            arr = arr[ri, ci]
        arr = np.log(arr)
    gy, gx = np.gradient(arr)
    mag = ndimage.maximum_filter(np.hypot(gx, gy), size=3)
    peak = mag.max()
    return mag / peak if peak > 0 else np.zeros_like(mag)


def point_edge_strength(sparse: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1] of each measured pixel of ``sparse`` (HxW metres, 0 or non-finite = missing): the
    largest log-depth step between it and a neighbouring measurement (one whose nearest-point cell touches its own),
    over the largest such step in the map; 0 at missing pixels. What :func:`sample_query_pixels` weighs candidates
    that are the measured points themselves by: a gradient of the nearest-filled map is zero at the points, which sit
    inside their cells, and non-zero only on the cell borders between them."""
    from scipy import ndimage

    arr = np.asarray(sparse, dtype=np.float64)
    valid = np.isfinite(arr) & (arr > 0)
    out = np.zeros(arr.size)
    if valid.sum() < 2:
        return out.reshape(arr.shape)
    _, (ri, ci) = ndimage.distance_transform_edt(~valid, return_indices=True)
    owner = ri * arr.shape[1] + ci  # the measured pixel whose cell each pixel is in
    log_d = np.log(arr[ri, ci])
    for a, b, la, lb in ((owner[:, :-1], owner[:, 1:], log_d[:, :-1], log_d[:, 1:]),
                         (owner[:-1, :], owner[1:, :], log_d[:-1, :], log_d[1:, :])):
        border = a != b
        step = np.abs(la - lb)[border]
        np.maximum.at(out, a[border], step)
        np.maximum.at(out, b[border], step)
    peak = out.max()
    return (out / peak if peak > 0 else out).reshape(arr.shape)


def sample_query_pixels(candidates: np.ndarray, n: int, seed: int | None = None, edge_weight: float = 0.0,
                        depth_or_image: np.ndarray | None = None,
                        strength: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pick up to ``n`` distinct pixels among ``candidates``, optionally favouring depth/image edges.

    Args:
        candidates: HxW bool (or a sparse depth map, where > 0 means candidate): the pixels that may be picked —
            e.g. valid sparse points for label-free supervision, or missing pixels for inference queries.
        n: how many; if fewer candidates exist, all of them are returned (in random order).
        seed: for ``numpy.random.default_rng``; the same seed gives the same pixels.
        edge_weight: >= 0. A pixel's sampling weight is ``1 + edge_weight * e`` with ``e`` in [0, 1] the edge
            strength at that pixel; 0 = uniform. With ``edge_weight=9`` a pixel on the strongest edge is 10x as
            likely as one in a flat region.
        depth_or_image: HxW depth (metres, 0 = missing; e.g. a dense GT map or an interpolation of the sparse
            one) or HxWx3 image, whose gradients give the edge strength; it or ``strength`` is required when
            ``edge_weight > 0``.
        strength: HxW edge strength in [0, 1] to use as it is, instead of one found from ``depth_or_image`` (e.g.
            :func:`point_edge_strength` when the candidates are the measured points of a sparse map).

    Returns:
        ``(rows, cols)``: int64 arrays of equal length ``min(n, candidates.sum())``, pixel indices at the
        resolution of ``candidates``.
    """
    cand = np.asarray(candidates)
    if cand.ndim != 2:
        raise ValueError(f"candidates must be HxW (bool mask or sparse depth); got shape {cand.shape}.")
    cand = cand > 0 if cand.dtype != bool else cand
    if n < 0:
        raise ValueError(f"n={n} must be >= 0.")
    if edge_weight < 0:
        raise ValueError(f"edge_weight={edge_weight} must be >= 0 (0 = uniform).")
    flat = np.flatnonzero(cand)
    rng = np.random.default_rng(seed)
    k = min(int(n), flat.size)
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = None
    if edge_weight > 0:
        if depth_or_image is None and strength is None:
            raise ValueError("edge_weight > 0 needs depth_or_image (HxW depth in metres or HxWx3 image) or strength "
                             "(HxW in [0, 1]).")
        name, guide = ("strength", strength) if strength is not None else ("depth_or_image", depth_or_image)
        guide = np.asarray(guide)
        if guide.shape[:2] != cand.shape:
            raise ValueError(f"{name} is {guide.shape[:2]} but candidates is {cand.shape}; they must match.")
        edges = guide if strength is not None else _edge_strength(guide)
        w = 1.0 + edge_weight * edges.ravel()[flat]
        p = w / w.sum()
    picked = rng.choice(flat, size=k, replace=False, p=p)
    rows, cols = np.unravel_index(picked, cand.shape)
    return rows.astype(np.int64), cols.astype(np.int64)
