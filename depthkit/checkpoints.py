"""Finding and validating checkpoints: the embedded default, a local directory, or a hub id.

A checkpoint is a plain directory with ``depthkit.json``::

    {"format": "depthkit-checkpoint", "format_version": 1, "depthkit_version": "0.1.0",
     "stages": {"complete": {...options...}, "sharpen": {...}}}

plus a subfolder per learned stage (``complete/``, ``sharpen/``). Loading is local-first; a hub id is only tried
when it is not an existing path, and ``HF_HUB_OFFLINE=1`` is respected. A checkpoint is untrusted input: paths it
names are resolved with :func:`safe_join` and cannot leave its directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "depthkit.json"
FORMAT = "depthkit-checkpoint"
FORMAT_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = ("1", "true", "yes")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt; the message says which file and what to do."""


def embedded_checkpoints_dir() -> Path:
    """Where the embedded default checkpoints live (``$DEPTHKIT_CHECKPOINTS`` overrides)."""
    env = os.environ.get("DEPTHKIT_CHECKPOINTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "checkpoints"


def available_checkpoints() -> list[Path]:
    """Checkpoint directories under :func:`embedded_checkpoints_dir` (those with a ``depthkit.json``)."""
    root = embedded_checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def default_checkpoint() -> Path | None:
    """The embedded default checkpoint (``checkpoints/default``), or None when this install has none."""
    path = embedded_checkpoints_dir() / "default"
    return path if (path / MANIFEST).is_file() else None


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, refusing absolute paths and anything that escapes ``root``."""
    root = Path(root).resolve()
    if os.path.isabs(relative):
        raise CheckpointError(f"checkpoint {root} names an absolute path {relative!r}; only relative paths are allowed.")
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise CheckpointError(f"checkpoint {root} names {relative!r}, which points outside the checkpoint directory.")
    return target


def resolve_checkpoint(spec) -> Path:
    """Turn ``spec`` (None = embedded default, a local directory, or a hub id ``owner/name``) into a local path."""
    if spec is None:
        path = default_checkpoint()
        if path is None:
            raise CheckpointError(
                f"this install has no embedded default checkpoint (looked in {embedded_checkpoints_dir()}/default). "
                "Pass --checkpoint DIR, create a random-weight one with `depthkit init-checkpoint --tiny DIR`, "
                "or use a classical --method."
            )
        return path
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a file; a checkpoint is a directory containing {MANIFEST}.")
        return path
    text = str(spec)
    if is_hub_id(text):
        return download_hub_snapshot(text)
    names = ", ".join(p.name for p in available_checkpoints()) or "none"
    raise CheckpointError(
        f"checkpoint {text!r} not found: no such directory, and it is not a hub id (owner/name). "
        f"Embedded checkpoints in {embedded_checkpoints_dir()}: {names}. "
        "Create one with `depthkit init-checkpoint --tiny DIR` or train one with `depthkit train RECIPE`."
    )


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
        raise CheckpointError(
            f"could not get {what} {repo_id!r} from the hub ({why}). Download it where the network is available "
            "(or unset HF_HUB_OFFLINE), or pass a local directory."
        ) from exc


def load_manifest(root) -> dict:
    """Read and validate ``depthkit.json`` in checkpoint directory ``root``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in root.iterdir())) if root.is_dir() else "(directory missing)"
        raise CheckpointError(
            f"{root} is not a depthkit checkpoint: {MANIFEST} is missing (found: {present or 'nothing'}). "
            "Create one with `depthkit init-checkpoint --tiny DIR`, or import released weights."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {exc}). Re-create or re-download it.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a depthkit manifest (expected \"format\": \"{FORMAT}\").")
    if int(manifest.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {manifest.get('format_version')}, newer than this depthkit supports "
            f"({FORMAT_VERSION}). Upgrade depthkit."
        )
    stages = manifest.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise CheckpointError(f"{path} lists no stages; expected e.g. {{\"stages\": {{\"complete\": {{}}}}}}.")
    for name, opts in stages.items():
        if not isinstance(opts, dict):
            raise CheckpointError(f"{path}: stage {name!r} options must be an object; got {type(opts).__name__}.")
    return manifest


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint resolved to a local directory and its manifest read — done once, at the entry point
    (:meth:`open`), then handed to every stage factory.

    Attributes:
        root: the checkpoint directory.
        stages: the manifest's ``stages``: stage name → that stage's stored options.
    """

    root: Path
    stages: dict = field(default_factory=dict)

    @classmethod
    def open(cls, spec) -> CheckpointRef:
        """Resolve ``spec`` (a directory, a hub id, or an existing ``CheckpointRef``) and read its manifest."""
        if isinstance(spec, CheckpointRef):
            return spec
        root = resolve_checkpoint(spec)
        return cls(root, dict(load_manifest(root)["stages"]))

    @classmethod
    def default(cls) -> CheckpointRef | None:
        """The embedded default checkpoint (:func:`default_checkpoint`), or None when this install has none."""
        root = default_checkpoint()
        return None if root is None else cls(root, dict(load_manifest(root)["stages"]))

    def options(self, stage: str) -> dict:
        """A copy of the stored options of ``stage`` (empty when the manifest does not list it)."""
        return dict(self.stages.get(stage) or {})

    def has_part(self, stage: str) -> bool:
        """True when the checkpoint has the ``<root>/<stage>/`` folder a learned stage loads from."""
        return (self.root / stage).is_dir()

    def part(self, stage: str) -> Path:
        return self.root / stage


def write_manifest(root, stages: dict, **extra) -> Path:
    """Write ``depthkit.json`` atomically into ``root`` (created if needed)."""
    from depthkit import __version__

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "depthkit_version": __version__, "stages": stages}
    data.update(extra)
    tmp = root / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST
