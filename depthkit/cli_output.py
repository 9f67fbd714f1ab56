"""What the CLI prints besides its own lines: depthkit's warnings about the user's data (units, EXIF orientation)
always, one line each; the libraries' warnings, log messages and progress bars (transformers' weight-loading bars
and deprecation notices, diffusers, the hub) only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
_LIBRARY_LOGGERS = ("transformers", "diffusers", "huggingface_hub", "accelerate", "peft", "torch")
TRACEBACK_ENV = "DEPTHKIT_TRACEBACK"
"""Set (to anything but empty or 0) to see the traceback of an error the CLI and the benchmark scripts would say in
one line: they say a ``ValueError`` / ``OSError`` as the user's mistake, and a bug raising one would hide there."""


def traceback_asked() -> bool:
    """True when :data:`TRACEBACK_ENV` asks for tracebacks instead of one-line errors."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


@contextlib.contextmanager
def output_policy(verb: str, verbose: bool):
    """Show depthkit's warnings about the user's data as one line each, always; hide libraries' warnings, log
    messages and progress bars unless ``verbose``. Everything is restored on exit (tests call main in-process)."""
    import logging
    import warnings

    from depthkit.io import DepthkitWarning

    def show(message, category, filename, lineno, file=None, line=None):
        where = "" if issubclass(category, DepthkitWarning) else f" ({category.__name__}, {Path(filename).name}:{lineno})"
        print(f"depthkit {verb}: warning: {message}{where}", file=sys.stderr)

    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    saved_levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    bars = _library_progress_bars()
    with warnings.catch_warnings():
        warnings.showwarning = show
        if not verbose:
            warnings.simplefilter("ignore")
            os.environ.update(_QUIET_ENV)
            for name in _LIBRARY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            _library_progress_bars(False)
        warnings.simplefilter("default", DepthkitWarning)
        try:
            yield
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            for name, level in saved_levels.items():
                logging.getLogger(name).setLevel(level)
            _library_progress_bars(bars)


def _library_progress_bars(enable: bool | None = None) -> bool:
    """Whether transformers/hub progress bars are on (for the already-imported libraries); set it when given."""
    if "huggingface_hub" not in sys.modules:
        return True
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = not are_progress_bars_disabled()
    if enable is not None:
        (enable_progress_bars if enable else disable_progress_bars)()
        if "transformers" in sys.modules:
            from transformers.utils import logging as tlog

            (tlog.enable_progress_bar if enable else tlog.disable_progress_bar)()
    return was
