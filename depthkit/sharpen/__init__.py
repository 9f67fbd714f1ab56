"""Stage 2, sharpen: Lotus and SharpDepth (imports nothing heavy until a name is used).

- :mod:`.lotus` — ``LotusModel`` (single-step x0 diffusion depth, Lotus-G / Lotus-D), ``task_embedding``,
  ``resolve_model_dir`` (a local folder or a hub id, resolved
  once by each public ``from_pretrained``);
- :mod:`.normalize` — depth ↔ [-1, 1] (depth or disparity space, 2%/98% quantiles or min/max), masked scale/shift;
- :mod:`.model` — ``SharpDepth`` (two-pass inference, per-step training losses), ``SharpDepthConfig``;
- :mod:`.gating` — ``discrepancy``, ``downsample_discrepancy``, ``gate``, ``apply_gate`` (SharpDepth's gating);
- :mod:`.ema` — ``EMA`` (the student's moving average that runs pass 1 during training);
- :mod:`.losses` — ``sds_loss`` (x0 form), ``sds_teacher_input``, ``reconstruction_loss``;
- :mod:`.tiny` — ``build_tiny_lotus`` (random weights, built in code);
- :mod:`.teachers` — metric sources for training (complete stage, UniDepth, transformers models, ``.npy`` files);
- :mod:`.recipe`, :mod:`.train`, :mod:`.train_lotus`, :mod:`.train_common` — ``depthkit train`` for SharpDepth/Lotus;
- :mod:`.importer` — released SharpDepth / Lotus weights → depthkit's layout; :mod:`.checkpoint` — the
  ``sharpen/`` folder and the tiny one; :mod:`.stage` — the ``sharpen`` Pipeline stage.

Typical use::

    from depthkit.sharpen import LotusModel, SharpDepth
    lotus = LotusModel.from_pretrained("path/to/lotus", device="cuda", dtype="bfloat16")
    rel = lotus.predict(image)                           # HxW affine-invariant map in [0, 1]
    sharp = SharpDepth.from_pretrained("path/to/sharpdepth", device="cuda", dtype="bfloat16")
    out = sharp(image, metric_depth, sparse)             # out.depth (metres), out.discrepancy ([0, 1])
"""

_EXPORTS = {
    "LotusModel": "lotus", "task_embedding": "lotus", "compute_empty_prompt_embeds": "importer",
    "normalize_depth": "normalize", "denormalize_depth": "normalize",
    "SharpDepth": "model", "SharpDepthConfig": "model", "SharpenOutput": "model", "EMA": "ema",
    "discrepancy": "gating", "downsample_discrepancy": "gating", "gate": "gating", "apply_gate": "gating",
    "sds_loss": "losses", "sds_teacher_input": "losses", "reconstruction_loss": "losses",
    "build_tiny_lotus": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: torch and diffusers load only when a name is used
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"depthkit.sharpen.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'depthkit.sharpen' has no attribute {name!r}")
