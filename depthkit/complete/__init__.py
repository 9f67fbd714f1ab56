"""Stage 1, ``complete``: depth completion with SDIM on Qwen2.5-VL (SPEC section 3).

Modules (import them directly; this package imports nothing heavy):

- ``prompts``   — versioned prompt templates, number format/parse, query-pixel sampling (numpy only).
- ``tokenizer`` — an offline Qwen2.5-VL-shaped BPE tokenizer for tests and tiny checkpoints.
- ``processor`` — torchvision-free Qwen2.5-VL processor, resize geometry and THE patchify.
- ``tiny``      — tiny random-weight stock Qwen2.5-VL models.
- ``model``     — ``SDIMConfig``, the depth branch, ``SDIMModel`` (wraps a stock model), ``apply_lora``.
- ``positions`` — M-RoPE (t, h, w) positions for the image prefix and per-pixel suffixes (text and rope modes).
- ``readout``   — ``ResidualHead`` (bounded correction of the prompt prior), expected digit value for numeric L1.
- ``batching``  — training sequences: held-out queries, priors, labels, prefix sharing (packed / kv_cache).
- ``recipe``    — the ``complete`` recipe schema; ``train`` — the training loop (``depthkit train``).
- ``checkpoint``— the ``complete/`` checkpoint folder: ``save_complete``, ``load_complete``, ``write_tiny``.
- ``engine``, ``query_plan``, ``stage`` — batched pixel-query inference and the Pipeline stage.
"""
