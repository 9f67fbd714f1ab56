"""An offline, Qwen2.5-VL-shaped tokenizer for tests, tiny checkpoints and from-scratch models.

:func:`build_offline_tokenizer` trains a small byte-level BPE (about 800 tokens, well under a second) on a built-in
corpus made of depthkit's prompt templates, digits, numbers and common English words. It is deliberately shaped
like the released Qwen2.5-VL tokenizer so that every code path written against it (chat template, special tokens,
placeholder expansion, digit-by-digit number decoding) behaves the same with the real one:

- same pre-tokenizer: NFC normalisation, then Qwen2's split regex, then byte-level mapping. The regex takes
  ``\\p{N}`` one character at a time, so every digit is its own pre-token and therefore its own token — numbers are
  always spelled digit by digit, exactly as with the real Qwen tokenizer;
- same special tokens, in Qwen's order, appended after the BPE vocabulary (``<|endoftext|>``, ``<|im_start|>``,
  ``<|im_end|>``, ..., ``<|vision_start|>``, ``<|vision_end|>``, ``<|vision_pad|>``, ``<|image_pad|>``,
  ``<|video_pad|>``, ...); ``<|endoftext|>`` is pad/unk, ``<|im_end|>`` is eos, as in the Instruct models;
- the returned object is ``transformers.Qwen2Tokenizer`` (a ``PreTrainedTokenizerFast``), so a saved copy reloads
  with ``AutoTokenizer.from_pretrained(dir)`` offline as the same class;
- a chat template that renders the same text as Qwen2.5-VL's for text and image messages (default system prompt
  ``You are a helpful assistant.`` when the first message is not a system message; each image becomes
  ``<|vision_start|><|image_pad|><|vision_end|>``).

The token *ids* of course differ from the real tokenizer's; nothing in depthkit may hard-code ids — read them from
the tokenizer (``tokenizer.convert_tokens_to_ids("<|image_pad|>")``) or from the model config.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN2_5_VL_SPECIAL_TOKENS",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "build_offline_tokenizer",
]

# Qwen2's split pattern (a fact of the format: contractions, letter runs with one leading non-letter, single digits,
# punctuation runs, newlines, whitespace). Single-digit `\p{N}` is what makes every digit its own token.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL's added tokens, in the order the released tokenizer numbers them (151643 onwards there).
QWEN2_5_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Renders the same text as Qwen2.5-VL's template for string content and for lists of {"type": "image"|"video"|
# "text"} parts. Written for depthkit; `add_vision_id` is supported as in Qwen's. No whitespace control is used:
# the Python pieces are concatenated without separators, so the only literal text is what is written here.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Words and phrases the prompts and chat use; the BPE learns merges for them so prompt token counts stay realistic.
_CORPUS_WORDS = (
    "the a an is are was were be of to and in on at for with from by as it this that these those what which where "
    "when who how why not no yes value values mask distance camera pixel pixels current predict preserve given "
    "meters meter metres away depth dense sparse image picture video scene point points estimate interpolated "
    "nearest guided prior question answer assistant user system you helpful please describe object left right top "
    "bottom near far close row column coordinate coordinates position located located at inside outside measured "
    "missing valid invalid known unknown zero one two three four five six seven eight nine ten hundred thousand "
    "room wall floor ceiling table chair door window car road tree sky building person"
)


def _corpus() -> list[str]:
    # Imported lazily so this module stays cheap and prompts.py has no import cycle with it.
    from depthkit.complete import prompts

    lines = [prompts.MASK0_TEXT, prompts.QUESTION_TEXT, DEFAULT_SYSTEM_PROMPT]
    for i, value in enumerate((0.001, 0.5, 1.234, 3.75, 12.5, 42.0, 99.999, 123.456, 299.9)):
        lines.append(prompts.MASK1_TEMPLATE.format(x=value))
        lines.append(prompts.ANSWER_TEMPLATE.format(y=value))
        lines.append(prompts.COORDINATE_TEMPLATE.format(x=i * 17, y=i * 11))
        lines.append(prompts.PRIOR_TEMPLATE.format(p=value))
    words = _CORPUS_WORDS.split()
    lines.append(" ".join(words))
    lines.append(" ".join(w.capitalize() for w in words))
    lines.append("0 1 2 3 4 5 6 7 8 9 0.5 10 100 1000 (0, 0) (12, 34) [1, 2] x = y + z; a/b - c * d: 'q' \"r\"!?")
    # Repeat so the frequent phrases win merges; the trainer's cost grows with distinct words, not repeats.
    return lines * 4


def build_offline_tokenizer(save_dir: str | Path | None = None, vocab_size: int = 800):
    """Train and return a Qwen2.5-VL-shaped byte-level BPE tokenizer (no network; < 1 s).

    Args:
        save_dir: if given, the tokenizer is also written there with ``save_pretrained`` (tokenizer.json,
            tokenizer_config.json with the chat template); reload it with ``AutoTokenizer.from_pretrained(save_dir)``.
        vocab_size: target BPE vocabulary size before the special tokens are appended (>= 300: the 256 byte
            symbols must fit). The final ``len(tokenizer)`` is this (or fewer, if the corpus runs out of merges)
            plus ``len(QWEN2_5_VL_SPECIAL_TOKENS)``.

    Returns:
        ``transformers.Qwen2Tokenizer`` (a ``PreTrainedTokenizerFast``) with pad = unk = ``<|endoftext|>``,
        eos = ``<|im_end|>`` and :data:`QWEN2_5_VL_CHAT_TEMPLATE`.
    """
    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} is too small: need >= 300 (256 byte symbols + merges).")
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    vocab, merges = _bpe_vocab_and_merges(raw)
    # Give the special tokens Qwen's relative order right after the BPE vocabulary; the tokenizer then registers
    # them as added tokens under these same ids.
    for token in QWEN2_5_VL_SPECIAL_TOKENS:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in QWEN2_5_VL_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
    )
    # Qwen2Tokenizer registers its named special tokens itself; make sure every Qwen special token exists, in order.
    from tokenizers import AddedToken

    missing = [t for t in QWEN2_5_VL_SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def _bpe_vocab_and_merges(raw) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read the trained BPE's vocab and merges back out of its JSON (the public way to get merges)."""
    import json

    state = json.loads(raw.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges
