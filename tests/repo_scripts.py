"""Scripts of the repository that are not part of the package (``benchmarks/*.py``, ``checkpoints/*.py``), imported
as modules for tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_script(relative: str):
    """The script at ``relative`` (to the repository root) as a fresh module named ``<folder>_<stem>`` (so
    ``benchmarks/sharpen.py`` is ``benchmarks_sharpen``, never ``depthkit.sharpen``)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
