"""The error every checkpoint check raises (its own module, so that the hub access in :mod:`depthkit.hub` and the
checks in :mod:`depthkit.checkpoints` share it without importing each other)."""

__all__ = ["CheckpointError", "exception_text"]


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt; the message says which file and what to do."""


def exception_text(exc: BaseException, limit: int = 500) -> str:
    """What ``exc`` says, every line joined into one (torch names the keys a state dict lacks on the lines after
    "Error(s) in loading state_dict for ...:") and cut at ``limit`` characters (`` ...`` marks a cut)."""
    said = " ".join(str(exc).split())
    return said if len(said) <= limit else said[:limit] + " ..."
