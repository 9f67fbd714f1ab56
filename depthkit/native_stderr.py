"""What C libraries write on stderr (file descriptor 2), taken aside while depthkit calls them (:func:`native_stderr`)
and given back when it is not theirs (:func:`write_stderr`): the image decoders' messages become depthkit's words
(:mod:`depthkit.decode`, :mod:`depthkit.decode_jpeg`)."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager

__all__ = ["native_stderr", "write_stderr"]

_LOCK = threading.RLock()  # one redirection of file descriptor 2 at a time


def _flush_stderr() -> None:
    if sys.stderr is not None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stderr: nothing to flush
            pass


def write_stderr(lines: list[str]) -> None:
    """Write ``lines`` (taken aside by :func:`native_stderr`) to stderr again, when there is one."""
    if lines and sys.stderr is not None:
        try:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def native_stderr():
    """Take aside what is written on file descriptor 2 (C libraries' ``stderr``) within the block: yields a list that
    holds the text's lines once the block ends. Python's ``sys.stderr`` is flushed on entry and exit. Process-wide,
    so one block runs at a time (a lock); another thread's writes on descriptor 2 meanwhile are taken aside too (the
    callers write them again). Without a descriptor 2 (a closed stderr), nothing is taken aside."""
    lines: list[str] = []
    with _LOCK:
        _flush_stderr()
        try:
            saved = os.dup(2)
        except OSError:
            yield lines
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield lines
                finally:
                    _flush_stderr()
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    lines.extend(tmp.read().decode("utf-8", "replace").splitlines())
        finally:
            os.close(saved)
