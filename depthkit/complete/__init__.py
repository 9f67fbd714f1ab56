"""Stage 1, ``complete``: depth completion with SDIM on Qwen2.5-VL (SPEC section 3).

Modules (import them directly; this package imports nothing heavy):

- ``prompts``       — versioned prompt templates, the allowed prompt settings (prompt_prior, pixel_reference,
                      readout), number format/parse, query-pixel sampling (numpy only).
- ``tokenizer``     — an offline Qwen2.5-VL-shaped BPE tokenizer for tests and tiny checkpoints.
- ``processor``     — torchvision-free Qwen2.5-VL processor, resize geometry and THE patchify.
- ``tiny``          — tiny random-weight stock Qwen2.5-VL models.
- ``depth_inputs``  — ``SDIMConfig`` and the depth branch's inputs (sparse features, scatter, ``prepare_depth_inputs``).
- ``model``         — the depth branch, ``SDIMModel`` (wraps a stock model), ``stock_model`` (unwrap), ``apply_lora``,
                      depth-module save/load.
- ``positions``     — M-RoPE (t, h, w) positions for the image prefix and per-pixel suffixes (text and rope modes).
- ``readout``       — ``ResidualHead`` (bounded correction of the prompt prior), expected digit value for numeric L1.
- ``batching``      — training sequences: held-out queries, priors, labels, prefix sharing (packed / kv_cache).
- ``recipe``        — the ``complete`` recipe schema.
- ``train_data``, ``validation``, ``train`` — ``depthkit train`` for ``kind: complete``: datasets and per-step
                      batches, held-out validation through the engine, model set-up + objective + loop.
- ``settings``      — ``CompleteSettings``: the checkpoint's ``complete.json`` as a typed dataclass.
- ``checkpoint``    — the ``complete/`` checkpoint folder: ``save_complete``, ``load_complete``, ``write_tiny``.
- ``decoding``      — the answer grammar, confidence, and the naive ``generate()`` reference.
- ``shared_prefix`` — shared-prefix attention: one cached image prefix, suffix batches without copies.
- ``engine``        — ``CompletionEngine``: batched pixel-query inference on top of ``shared_prefix``.
- ``query_plan``    — which pixels to ask, the classical prior map, answer fusion, dense fill, confidence map.
- ``stage``         — the Pipeline stage (``CompleteVLMStage``).
"""
