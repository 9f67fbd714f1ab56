"""The warnings depthkit gives about a user's data, in a module of their own so that any module can warn without
importing :mod:`depthkit.io` (which re-exports them: ``from depthkit.io import DepthkitWarning`` stays the way to
import them)."""

__all__ = ["DepthkitWarning", "UnitWarning"]


class DepthkitWarning(UserWarning):
    """Something about the user's data that may be wrong (units, orientation); the CLI always shows these."""


class UnitWarning(DepthkitWarning):
    """A float depth map whose values look like another unit than metres."""
