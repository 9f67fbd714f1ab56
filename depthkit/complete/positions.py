"""M-RoPE (t, h, w) position ids for a shared image prefix and the per-pixel suffixes that follow it.

Qwen2.5-VL gives every token a 3-component rotary position (temporal, height, width). Its rule (transformers'
``Qwen2_5_VLModel.get_rope_index``, reproduced here for still images and checked against it by the tests):

- text tokens: t = h = w = ``pos``, where ``pos`` counts up by one per token;
- the image tokens of one image starting at ``pos = s`` (the ``<|image_pad|>`` run after ``<|vision_start|>``):
  t = s, h = s + r, w = s + c for the token at merged-grid row r, column c (raster order; one token covers
  ``patch_size * merge_size`` = 28 x 28 resized pixels); afterwards ``pos`` continues at
  ``s + max(grid_h, grid_w) // merge_size``;
- padding (``attention_mask == 0``) gets position 0 and is skipped when counting;
- ``rope_delta = max position + 1 - number of real tokens``: a text token after the prefix at real index ``i`` has
  position ``i + rope_delta`` — what ``generate()`` uses for every decoded token.

Suffix positions (:func:`suffix_position_ids`) for the tokens that follow a prefix of length ``L`` whose next free
position is ``next_pos = L + rope_delta`` (= max prefix position + 1):

- ``mode="text"`` (``pixel_reference: text``): the k-th real suffix token gets t = h = w = ``next_pos + k`` — exactly
  what the stock model computes for the concatenated sequence prefix + suffix (checked by the tests).
- ``mode="rope"`` (``pixel_reference: rope``, depthkit's variant): EVERY real suffix token — the query text, the
  end-of-turn / assistant header, the forced answer prefix and the decoded digits, i.e. everything after
  ``<|vision_end|>`` — gets t = ``next_pos + k`` (the text order, as in text mode) and h, w = the queried pixel's
  position on the visual grid: ``h = s + (y' + 0.5) / 28 - 0.5``, ``w = s + (x' + 0.5) / 28 - 0.5`` with (y', x') the
  pixel (row, column) in the resized image and ``s`` the image's start position (its tokens' t). So the h/w bands of
  a query rotate like the image token it sits on (the difference is 0 at the pixel's own token, fractional within
  it), and the t band keeps the suffix tokens in order. Positions are then float (the stock rotary code takes them).
- ``mode="grid_token"`` (``pixel_reference: grid_token``): text positions for every real suffix token except the
  LAST of each row (the query token the residual head reads), which gets t = ``next_pos + k`` and the pixel's h, w
  as in rope mode. Everything before the query token is then the same for every pixel (text and positions), so the
  engine computes it once in the shared prefix and the suffix is that one token. A trainer appending an answer
  after the query token gives the answer tokens text positions (``mode="text"`` with ``offset``).

Padding inside a suffix batch (left or right) gets position 0 in every mode; it is masked out anyway.
"""

from __future__ import annotations

import torch

from depthkit.complete.prompts import PIXEL_REFERENCES

__all__ = [
    "spatial_merge_size",
    "prefix_position_ids",
    "suffix_position_ids",
    "pixel_grid_position",
]

IMAGE_TYPE = 1  # mm_token_type_ids value of image tokens (0 = text, 2 = video)


def _config(model_or_config):
    """The top-level Qwen2.5-VL config of a stock model, PeftModel, SDIMModel or a config itself."""
    from depthkit.complete.model import stock_model

    if hasattr(model_or_config, "vision_config"):
        return model_or_config
    config = getattr(stock_model(model_or_config, check=False), "config", None)
    if hasattr(config, "vision_config"):
        return config
    raise TypeError(
        f"{type(model_or_config).__name__} is not a Qwen2.5-VL model or config (no vision_config found); pass the "
        "model (stock, PeftModel or SDIMModel) or its Qwen2_5_VLConfig."
    )


def spatial_merge_size(model_or_config) -> int:
    """Merge factor of the vision tower (2 for Qwen2.5-VL): one LLM image token = merge x merge patches."""
    return int(_config(model_or_config).vision_config.spatial_merge_size)


@torch.no_grad()
def prefix_position_ids(model_or_config, input_ids: torch.Tensor, image_grid_thw: torch.Tensor,
                        mm_token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
    """Positions of a (batch of) prefix sequences, as the stock model computes them.

    Args:
        model_or_config: the model (stock, PeftModel, SDIMModel) or its ``Qwen2_5_VLConfig``.
        input_ids: B x L token ids (only the shape and device are used).
        image_grid_thw: num_images x 3 (t, h, w in patches), in order of appearance over the batch.
        mm_token_type_ids: B x L, 0 = text, 1 = image (the processor's output).
        attention_mask: B x L, 1 = real token, 0 = padding (left or right); None = all real.

    Returns:
        ``{"position_ids": 3 x B x L long, "rope_delta": B x 1 long, "next_pos": B long (first free position after
        the sequence = real length + rope_delta), "image_start": list per row of the start position ``s`` of each
        image in it}``.
    """
    merge = spatial_merge_size(model_or_config)
    if input_ids.dim() != 2 or mm_token_type_ids.shape != input_ids.shape:
        raise ValueError(f"input_ids and mm_token_type_ids must both be B x L; got {tuple(input_ids.shape)} and "
                         f"{tuple(mm_token_type_ids.shape)}.")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask is {tuple(attention_mask.shape)} but input_ids is {tuple(input_ids.shape)}.")
    grids = iter(torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()) if image_grid_thw is not None else iter(())
    b, length = input_ids.shape
    device = input_ids.device
    position_ids = torch.zeros(3, b, length, dtype=torch.long, device=device)
    deltas, next_pos, starts = [], [], []
    for row in range(b):
        types = mm_token_type_ids[row]
        keep = attention_mask[row].bool() if attention_mask is not None else torch.ones_like(types, dtype=torch.bool)
        types = types[keep].tolist()
        if 2 in types:
            raise ValueError("video tokens (mm_token_type_ids == 2) are not supported by depthkit's engine.")
        pieces, pos, i, row_starts = [], 0, 0, []
        while i < len(types):
            j = i
            while j < len(types) and types[j] == types[i]:
                j += 1
            if types[i] == IMAGE_TYPE:
                try:
                    gt, gh, gw = next(grids)
                except StopIteration:
                    raise ValueError("more image-token runs than rows in image_grid_thw; pass the processor's "
                                     "image_grid_thw for these input_ids.") from None
                th, tw = gh // merge, gw // merge
                if gt * th * tw != j - i:
                    raise ValueError(f"an image-token run of {j - i} tokens does not match grid {(gt, gh, gw)} "
                                     f"({gt * th * tw} tokens at merge {merge}).")
                t = torch.arange(gt, device=device).view(-1, 1, 1).expand(gt, th, tw)
                h = torch.arange(th, device=device).view(1, -1, 1).expand(gt, th, tw)
                w = torch.arange(tw, device=device).view(1, 1, -1).expand(gt, th, tw)
                pieces.append(torch.stack([t, h, w]).reshape(3, -1) + pos)
                row_starts.append(pos)
                pos += max(gh, gw) // merge
            else:
                pieces.append(torch.arange(pos, pos + j - i, device=device).view(1, -1).expand(3, -1))
                pos += j - i
            i = j
        flat = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long, device=device)
        position_ids[:, row, keep] = flat
        top = int(flat.max()) + 1 if flat.numel() else 0
        deltas.append(top - len(types))
        next_pos.append(top)
        starts.append(row_starts)
    return {
        "position_ids": position_ids,
        "rope_delta": torch.tensor(deltas, dtype=torch.long, device=device).view(b, 1),
        "next_pos": torch.tensor(next_pos, dtype=torch.long, device=device),
        "image_start": starts,
    }


def pixel_grid_position(rows, cols, image_start, token_pixels: int = 28) -> torch.Tensor:
    """(h, w) M-RoPE position of resized-image pixels (row y', column x') on the merged visual grid.

    ``h = image_start + (y' + 0.5) / token_pixels - 0.5`` (likewise w with x'), so a pixel at the centre of the
    image token in grid row r has h = image_start + r exactly. ``token_pixels`` = patch_size * merge_size (28).
    Returns a float32 tensor N x 2.
    """
    rows = torch.as_tensor(rows, dtype=torch.float64).reshape(-1)
    cols = torch.as_tensor(cols, dtype=torch.float64).reshape(-1)
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols must have the same length; got {rows.numel()} and {cols.numel()}.")
    start = torch.as_tensor(image_start, dtype=torch.float64)
    h = start + (rows + 0.5) / token_pixels - 0.5
    w = start + (cols + 0.5) / token_pixels - 0.5
    return torch.stack([h, w], dim=1).float()


def suffix_position_ids(next_pos, suffix_mask: torch.Tensor, mode: str = "text", pixel_hw: torch.Tensor | None = None,
                        offset=0) -> torch.Tensor:
    """Positions of suffix tokens that continue a cached prefix (see the module docstring for the rule).

    Args:
        next_pos: int or B tensor — the prefix's first free position (``prefix_position_ids(...)["next_pos"]``).
        suffix_mask: B x S, 1 = real suffix token, 0 = padding (anywhere, e.g. on the left).
        mode: ``"text"``, ``"rope"`` or ``"grid_token"``.
        pixel_hw: B x 2 float, absolute (h, w) of each row's pixel (:func:`pixel_grid_position`); rope and
            grid_token modes only (grid_token: it goes to the last real token of each row).
        offset: int or B tensor of real suffix tokens already placed before these (for decoding steps: the
            k-th real token overall gets ``next_pos + k``).

    Returns:
        3 x B x S: long for text mode, float32 for rope and grid_token modes. Padding gets 0.
    """
    if mode not in PIXEL_REFERENCES:
        raise ValueError(f"mode={mode!r} is not one of {PIXEL_REFERENCES} (the pixel_reference settings).")
    mask = torch.as_tensor(suffix_mask)
    if mask.dim() != 2:
        raise ValueError(f"suffix_mask must be B x S; got shape {tuple(mask.shape)}.")
    mask = mask.bool()
    b, _ = mask.shape
    device = mask.device
    base = torch.as_tensor(next_pos, dtype=torch.long, device=device).reshape(-1)
    off = torch.as_tensor(offset, dtype=torch.long, device=device).reshape(-1)
    if base.numel() not in (1, b) or off.numel() not in (1, b):
        raise ValueError(f"next_pos and offset must be scalars or have {b} entries (one per row).")
    index = mask.long().cumsum(-1) - 1 + off.view(-1, 1) + base.view(-1, 1)
    text = torch.where(mask, index, torch.zeros_like(index))
    if mode == "text":
        if pixel_hw is not None:
            raise ValueError("pixel_hw is only used with mode='rope'; drop it for mode='text'.")
        return text.unsqueeze(0).expand(3, -1, -1).clone()
    if pixel_hw is None:
        raise ValueError(f"mode={mode!r} needs pixel_hw (B x 2 absolute grid positions from pixel_grid_position).")
    hw = torch.as_tensor(pixel_hw, dtype=torch.float32, device=device)
    if hw.shape != (b, 2):
        raise ValueError(f"pixel_hw must be B x 2 = ({b}, 2); got {tuple(hw.shape)}.")
    zero = torch.zeros_like(text, dtype=torch.float32)
    at_pixel = mask
    if mode == "grid_token":  # only the last real token of each row; the others keep their text positions
        if not bool(mask.any(-1).all()):
            raise ValueError("mode='grid_token' needs at least one real token per row (the query token).")
        last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)
        at_pixel = torch.zeros_like(mask)
        at_pixel[torch.arange(b, device=device), last] = True
    h = torch.where(at_pixel, hw[:, :1].expand_as(zero), text.float())
    w = torch.where(at_pixel, hw[:, 1:].expand_as(zero), text.float())
    return torch.stack([text.float(), h, w])
