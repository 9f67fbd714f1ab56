"""Loading a completer checkpoint's LoRA adapter (``complete/adapter/``, ``weights.kind = adapter``) onto its base
model, checked: peft only *warns* when the adapter file's keys do not match the model (the LoRA matrices it did not
find stay at their initialisation, B = 0, so the merged model is the bare base), which would hand back the base as
the trained completer. Here every key the adapter needs must be in the file and every key in the file must be used.
"""

from __future__ import annotations

from pathlib import Path

from depthkit.checkpoint_errors import CheckpointError, exception_text

__all__ = ["ADAPTER_WEIGHTS", "load_merged_adapter"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def load_merged_adapter(base, adapter: Path, ref: str, limit: int = 5):
    """``base`` (a Qwen2.5-VL model) with the LoRA adapter in folder ``adapter`` merged in; ``ref`` names the base in
    messages. Raises :class:`CheckpointError` naming the folder when peft cannot load it, or when the keys of
    ``adapter_model.safetensors`` differ from those the adapter's config asks for (first ``limit`` of each)."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    try:
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
        with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as f:
            stored = set(f.keys())
        wanted = set(get_peft_model_state_dict(model))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"the LoRA adapter in {adapter} does not fit base model {ref!r} "
                              f"({type(exc).__name__}: {exception_text(exc)}).") from exc
    problems = [f"{len(keys)} {kind} ({', '.join(keys[:limit])}{' ...' if len(keys) > limit else ''})"
                for kind, keys in (("missing", sorted(wanted - stored)), ("unexpected", sorted(stored - wanted)))
                if keys]
    if problems:
        raise CheckpointError(f"the LoRA adapter {adapter / ADAPTER_WEIGHTS} does not match its adapter_config.json on "
                              f"base model {ref!r}: {'; '.join(problems)} keys. It belongs to another model or is "
                              "incomplete (loading it would leave the base model's weights unchanged); re-export it.")
    return model.merge_and_unload()
