"""The error every checkpoint check raises (its own module, so that the hub access in :mod:`depthkit.hub` and the
checks in :mod:`depthkit.checkpoints` share it without importing each other)."""

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt; the message says which file and what to do."""
