"""What identifies a folder's files for results that record which checkpoint made them: :func:`folder_identity`, a
hash of their names and contents (re-exported by :mod:`depthkit.checkpoints`)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["folder_identity"]


_CONTENT_HASHES: dict[tuple, str] = {}
"""SHA-256 of a file's bytes by (path, size, modification time): each file is read once per process."""


def _content_hash(path: Path) -> str:
    import hashlib

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CONTENT_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _CONTENT_HASHES[key] = h.hexdigest()
    return _CONTENT_HASHES[key]


def folder_identity(root) -> str:
    """A short hash of the files under ``root`` (relative names and contents): it changes when anything there is
    retrained, replaced or edited, and not when the same files are copied or cloned elsewhere (so results made on two
    machines from one checkpoint agree on it). Each file is read once per process (cached by size and mtime)."""
    import hashlib

    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root)}:{_content_hash(f)}\n".encode())
    return h.hexdigest()[:16]
