"""The model hub: the one place depthkit touches the network, and only for a hub id (``owner/name``) that is not an
existing local path. ``HF_HUB_OFFLINE=1`` is respected: then only the local hub cache is read."""

from __future__ import annotations

import os
import re
from pathlib import Path

from depthkit.checkpoint_errors import CheckpointError

__all__ = ["hub_offline", "is_hub_id", "download_hub_snapshot"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = ("1", "true", "yes")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids network access (only the local hub cache may be read)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def is_hub_id(text) -> bool:
    """True when ``text`` has the form of a hub repository id ``owner/name`` (and not of a relative path: it does
    not start with ``.``, ``/`` or ``~``). Callers check for an existing local path first."""
    text = str(text)
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def download_hub_snapshot(repo_id: str, what: str = "checkpoint", allow_patterns: list[str] | None = None) -> Path:
    """A local snapshot of hub repository ``repo_id`` (only ``allow_patterns`` when given).

    Respects ``HF_HUB_OFFLINE`` (then only the local hub cache is read). Raises :class:`CheckpointError` saying
    what was asked (``what``), why it failed and what to do.
    """
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=offline))
    except Exception as exc:
        why = ("HF_HUB_OFFLINE=1 forbids downloading it and it is not in the local hub cache" if offline
               else f"{type(exc).__name__}: {exc}")
        raise CheckpointError(  # owner/name may also be a relative folder the user meant: say it is not there
            f"could not get {what} {repo_id!r} from the hub ({why}), and there is no local folder "
            f"{Path.cwd() / repo_id}. Download it where the network is available (or unset HF_HUB_OFFLINE), or pass "
            "a local directory that exists."
        ) from exc
