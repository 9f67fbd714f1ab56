"""Finding and validating checkpoints: the embedded default, a local directory, or a hub id.

A checkpoint is a plain directory with ``depthkit.json``::

    {"format": "depthkit-checkpoint", "format_version": 1, "depthkit_version": "0.1.0",
     "stages": {"complete": {...options...}, "sharpen": {...}}}

plus a subfolder per learned stage (``complete/``, ``sharpen/``). Loading is local-first; a hub id is only tried
when it is not an existing path, and ``HF_HUB_OFFLINE=1`` is respected.

A checkpoint is untrusted input (``checkpoints/README.md`` states what is guaranteed and which tests prove it).
The checks every loader shares live here:

- :func:`safe_join`: a path a checkpoint names is relative and stays inside it; :func:`check_tree`: no symlink in
  the checkpoint resolves outside it, and no JSON file carries ``auto_map`` (code shipped with the checkpoint —
  every ``from_pretrained`` also passes ``trust_remote_code=False``).
- :func:`read_json`: JSON read with a size limit; invalid, too deep, NaN/Infinity or overflowing numbers are a
  :class:`CheckpointError` naming the file. :func:`check_format_version`, :func:`bounded` (every size read from a
  checkpoint has a documented range, :data:`BOUNDS`), :func:`check_attn_implementation`.
- :func:`loading`: wraps a library load so that whatever it raises becomes one :class:`CheckpointError` naming the
  file; :func:`check_loading_info` turns transformers' loading report (missing, unexpected, mismatched keys) into
  an error; :func:`check_finite_output`: a stage's output must be finite.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depthkit.checkpoint_errors import CheckpointError, exception_text
from depthkit.folder_identity import folder_identity  # noqa: F401  (re-exported: where results import it)
from depthkit.hub import download_hub_snapshot, hub_offline, is_hub_id  # noqa: F401  (public here too)

MANIFEST = "depthkit.json"
FORMAT = "depthkit-checkpoint"
FORMAT_VERSION = 1


MAX_JSON_BYTES = 64 << 20
"""The largest JSON file a checkpoint may hold (bytes)."""
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
"""The attention implementations a checkpoint or option may name (no hub kernels: they are downloaded code)."""
BOUNDS: dict[str, tuple[float, float]] = {
    "pixels": (1, 12_845_056),  # min/max_pixels (H*W): Qwen2.5-VL's own default maximum (16384 tokens of 28x28)
    "edge": (1, 12_845_056),  # a preprocessor's size.shortest_edge/longest_edge (they hold pixel counts in Qwen2-VL)
    "patch_size": (1, 64),
    "merge_size": (1, 8),
    "temporal_patch_size": (1, 4),
    "channels": (1, 4096),  # SDIM depth-branch channels
    "kernel_size": (1, 31),
    "processing_resolution": (8, 4096),  # longest side (pixels) the sharpen UNet works at
    "vae_scale_factor": (1, 64),
    "num_train_timesteps": (1, 10_000),  # a diffusion scheduler's steps (Stable Diffusion: 1000); allocated per step
}
"""Documented range ``(lo, hi)`` of every size a checkpoint may set (see :func:`bounded`)."""
MAX_WORKING_SIDE = 2048
"""The longest side (pixels) a stage works at when nothing smaller is asked: larger inputs are processed at this
size and the result upsampled (``docs/memory.md`` records the resulting memory per stage)."""


def read_json(path, what: str = "file"):
    """The parsed JSON at ``path``; :class:`CheckpointError` naming the file when it is missing, larger than
    :data:`MAX_JSON_BYTES`, not JSON, nested too deeply, or holds NaN/Infinity or a number that overflows."""
    path = Path(path)

    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    def finite_float(text):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} overflows")
        return value

    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path} ({what}) is larger than {MAX_JSON_BYTES >> 20} MiB; not a checkpoint file.")
        return json.loads(path.read_text(), parse_constant=no_constant, parse_float=finite_float)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} ({what}) is missing.") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path} ({what}) is nested too deeply to be a checkpoint file.") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, CheckpointError):
            raise
        role = f"; it is the {what}" if what != "file" else ""
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {exc}){role}. Re-create or re-download "
                              "it.") from exc


def check_format_version(value, supported: int, source) -> int:
    """``value`` as a format version: an int from 1 to ``supported`` (else :class:`CheckpointError` naming
    ``source``)."""
    if type(value) is not int or value < 1:
        raise CheckpointError(f"{source}: format_version must be a positive integer; got {value!r}.")
    if value > supported:
        raise CheckpointError(f"{source} has format_version {value}, newer than this depthkit supports "
                              f"({supported}). Upgrade depthkit.")
    return value


def bounded(name: str, value, lo: float, hi: float, source, integer: bool = True, optional: bool = False):
    """``value`` checked to be a number (an int when ``integer``) in ``[lo, hi]``; None passes when ``optional``.
    Raises :class:`CheckpointError` naming ``name``, ``source`` (the file) and the allowed range."""
    if value is None and optional:
        return None
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (lo <= value <= hi):
        raise CheckpointError(f"{source}: {name}={value!r} is outside the allowed range: "
                              f"{'an integer' if integer else 'a number'} from {lo} to {hi}"
                              f"{' (or null)' if optional else ''}.")
    return value


def field_type_problem(hint, value) -> str | None:
    """None when ``value`` has the type annotation ``hint`` (``bool``, ``int``, ``float`` — an int is accepted —,
    ``str``, or ``X | None``; numpy scalars count as numbers, a bool never does), else what is allowed (e.g.
    ``"int"``, ``"float or null"``), for the caller's message."""
    import numbers
    import typing

    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    number = not isinstance(value, (bool, np.bool_))
    ok = any(value is None if a is type(None) else
             isinstance(value, (bool, np.bool_)) if a is bool else
             (number and isinstance(value, numbers.Real)) if a is float else
             (number and isinstance(value, numbers.Integral)) if a is int else
             isinstance(value, a) if isinstance(a, type) else True
             for a in allowed)
    return None if ok else " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in allowed)


def check_typed_fields(schema, data, source) -> dict:
    """``data`` (a JSON object read from ``source``) checked against the dataclass ``schema``: every key must be a
    field, and every value must have the field's type (:func:`field_type_problem`). Returns ``data``; raises
    :class:`CheckpointError` naming the file, the key, what it holds and what is allowed. Value ranges and choices
    are then checked by the schema's own ``__post_init__``."""
    import dataclasses
    import typing

    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a JSON object of {schema.__name__} fields; got "
                              f"{type(data).__name__}.")
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in data.items():
        if key not in names:
            raise CheckpointError(f"{source}: unknown {schema.__name__} key {key!r}; allowed: {', '.join(names)}.")
        want = field_type_problem(hints[key], value)
        if want is not None:
            raise CheckpointError(f"{source}: {schema.__name__}.{key} must be {want}; it holds {value!r} "
                                  f"({type(value).__name__}).")
    return data


def check_attn_implementation(value, source):
    """``value`` if it is None or one of :data:`ATTN_IMPLEMENTATIONS` (a hub kernel would download code)."""
    if value is not None and value not in ATTN_IMPLEMENTATIONS:
        raise CheckpointError(f"{source}: attn_implementation={value!r} is not allowed; use one of "
                              f"{', '.join(ATTN_IMPLEMENTATIONS)} (hub kernels are code and are never loaded).")
    if value == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise CheckpointError(f"{source}: attn_implementation='flash_attention_2' needs the flash-attn package "
                                  "(CUDA only), which is not installed; pip install flash-attn on a CUDA machine, "
                                  "or use sdpa (the default).")
    return value


def check_tree(root) -> None:
    """Refuse checkpoint folder ``root`` when a symlink in it resolves outside it, or a JSON file in it carries
    ``auto_map`` (custom code transformers would offer to run) or ``quantization_config`` (a quantization backend
    depthkit does not load)."""
    root = Path(root)
    real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if target != real and real not in target.parents:
                    raise CheckpointError(f"{path} is a symlink to {target}, outside the checkpoint {root}; a "
                                          "checkpoint may only link inside itself.")
        for name in filenames:
            if name.endswith(".json"):
                data = read_json(Path(dirpath) / name)
                for key in ("auto_map", "quantization_config"):
                    if isinstance(data, dict) and key in data:
                        why = ("custom Python code shipped with the checkpoint; depthkit never runs it"
                               if key == "auto_map" else "quantized weights, which depthkit does not load")
                        raise CheckpointError(f"{Path(dirpath) / name} names {key!r} ({why}). Remove the key or use "
                                              "a checkpoint saved by depthkit.")


@contextlib.contextmanager
def loading(path, what: str, passthrough: tuple = ()):
    """Run a library load: whatever it raises (other than a :class:`CheckpointError`, the ``passthrough`` types,
    ``KeyboardInterrupt`` or ``MemoryError``) becomes a :class:`CheckpointError` naming ``what`` and ``path``."""
    try:
        yield
    except (CheckpointError, *passthrough):
        raise
    except Exception as exc:
        raise CheckpointError(f"{what} in {path} does not load ({type(exc).__name__}: {exception_text(exc)}). Re-export "
                              "or re-download the checkpoint.") from exc


def check_loading_info(info: dict, path, what: str = "model weights", limit: int = 5) -> None:
    """Raise :class:`CheckpointError` when transformers' ``output_loading_info`` report ``info`` lists missing,
    unexpected or mismatched keys (a weight left randomly initialised or ignored), naming the file and the first
    ``limit`` keys of each kind."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(kind) or ()))
        if keys:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({', '.join(keys[:limit])}{more})")
    if info.get("error_msgs"):
        problems.append(f"errors: {'; '.join(map(str, info['error_msgs']))[:300]}")
    if problems:
        raise CheckpointError(f"{what} in {path} do not match the model: {'; '.join(problems)}. The file is "
                              "incomplete or belongs to another model; re-export or re-download it.")


def check_finite_weights(module, path, what: str) -> None:
    """Refuse a loaded ``module``'s weights (an ``nn.Module``, or a dict of tensors) when they hold NaN or infinity,
    a :class:`CheckpointError` naming ``what``, the file or folder ``path`` and the first such tensor: they would run
    and turn into a depth map of NaN, or, in a stage that some frames skip, go unnoticed there."""
    import torch

    tensors = module.state_dict() if hasattr(module, "state_dict") else module
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{what} in {path} hold non-finite values (NaN or infinity; first: {name}). The "
                                  "checkpoint is corrupt: re-export or re-download it.")


def check_finite_output(stage: str, array, method: str | None = None) -> None:
    """Raise ``ValueError`` when stage ``stage``'s output ``array`` (depth, metres) holds NaN or infinity — broken
    weights must not turn into a written depth map. ``method`` names a classical (weightless) completion method that
    produced it: the message then blames no checkpoint but depth beyond what its float32 arithmetic holds."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            why = ("Its checkpoint weights are probably corrupt: re-export or re-download it." if method is None else
                   f"The classical method {method!r} has no weights: its float32 arithmetic overflowed, which depth "
                   "near float32's limit (3.4e38) does; check the sparse map's units, or try another --method.")
            raise ValueError(f"the {stage} stage produced {bad} non-finite value(s) of {a.size} (NaN or infinity); "
                             f"nothing was written. {why}")


def working_side(requested: int | None, shape, cap: int = MAX_WORKING_SIDE) -> int | None:
    """The longest side (pixels) a stage should work at for an input of ``shape`` (H, W, ...): ``requested`` when
    given, else None (native) while the input's longest side is at most ``cap``, else ``cap``."""
    if requested is not None:
        return int(requested)
    return None if max(int(shape[0]), int(shape[1])) <= cap else int(cap)


def embedded_checkpoints_dir() -> Path:
    """Where the embedded default checkpoints live (``$DEPTHKIT_CHECKPOINTS`` overrides: a folder that must exist —
    a misspelt or unmounted one would otherwise run the classical fill as if no default were installed)."""
    env = os.environ.get("DEPTHKIT_CHECKPOINTS")
    if env:
        if not Path(env).is_dir():
            what = " (it is a file)" if Path(env).exists() else ""
            raise CheckpointError(f"DEPTHKIT_CHECKPOINTS={env!r} is not a folder{what}; "
                                  "it names the folder that holds the embedded checkpoints (default/, ...). Point "
                                  "it at an existing folder, or unset it to use the installed ones.")
        return Path(env)
    from depthkit.resources import checkpoints_dir

    return checkpoints_dir()


def available_checkpoints() -> list[Path]:
    """Checkpoint directories under :func:`embedded_checkpoints_dir` (those with a ``depthkit.json``)."""
    root = embedded_checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def default_checkpoint() -> Path | None:
    """The embedded default checkpoint (``checkpoints/default``), or None when this install has no such folder. A
    folder that lost its ``depthkit.json`` is returned too: opening it names what is missing, where returning None
    would run the classical fill in its place without a word."""
    path = embedded_checkpoints_dir() / "default"
    return path if path.is_dir() else None


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, refusing absolute paths and anything that escapes ``root``."""
    root = Path(root).resolve()
    if os.path.isabs(relative):
        raise CheckpointError(f"checkpoint {root} names an absolute path {relative!r}; only relative paths are allowed.")
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise CheckpointError(f"checkpoint {root} names {relative!r}, which points outside the checkpoint directory.")
    return target


def checkpoint_identity(spec) -> dict | None:
    """What identifies a checkpoint's weights: its resolved folder and :func:`folder_identity` of it (so retraining
    into the same folder counts as a different checkpoint); None for None."""
    if spec is None:
        return None
    root = Path(resolve_checkpoint(spec)).resolve()
    return {"path": str(root), "files": folder_identity(root)}


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
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        got = repr(spec) if isinstance(spec, str) else type(spec).__name__  # "" would be read as the current folder
        raise CheckpointError(f"checkpoint must be a checkpoint folder (str or Path), a hub id (owner/name) or None "
                              f"for the embedded default; received {got}.")
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


CHECKPOINT_STAGES = ("complete", "sharpen")
"""The stages a manifest may list, in run order (:data:`depthkit.stages.STAGES` implements each, in this order)."""


def load_manifest(root) -> dict:
    """Read and validate ``depthkit.json`` in checkpoint directory ``root``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        present = "(directory missing)"
        if root.is_dir():
            names = sorted(p.name for p in root.iterdir())
            shown = 8  # a folder of thousands of files (a dataset given by mistake) is named by a few of them
            present = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        raise CheckpointError(
            f"{root} is not a depthkit checkpoint: {MANIFEST} is missing (found: {present or 'nothing'}). "
            "Create one with `depthkit init-checkpoint --tiny DIR`, or import released weights."
        )
    manifest = read_json(path, "checkpoint manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a depthkit manifest (expected \"format\": \"{FORMAT}\").")
    check_format_version(manifest.get("format_version"), FORMAT_VERSION, path)
    check_manifest_key_spelling(manifest, path)
    stages = manifest.get("stages")
    if not isinstance(stages, dict) or not stages:
        got = "" if stages is None or stages == {} else f" (\"stages\" is {json.dumps(stages)[:80]}, not an object)"
        raise CheckpointError(f"{path} lists no stages{got}; expected an object from stage name to its options, "
                              "e.g. {\"stages\": {\"complete\": {}}}.")
    unknown = sorted(set(stages) - set(CHECKPOINT_STAGES))
    if unknown:  # a misspelt stage would otherwise be dropped without a word, or hidden behind "has no ['sharpen']"
        raise CheckpointError(f"{path} lists stage(s) {unknown} that depthkit does not know; stages are "
                              f"{', '.join(CHECKPOINT_STAGES)}. Correct or remove them in its \"stages\".")
    for name, opts in stages.items():
        if not isinstance(opts, dict):
            raise CheckpointError(f"{path}: stage {name!r} options must be an object; got {type(opts).__name__}.")
        check_attn_implementation(opts.get("attn_implementation"), f"{path}: stage {name!r}")
        for key in ("quantization_config", "trust_remote_code"):
            if key in opts:
                raise CheckpointError(f"{path}: stage {name!r} names {key!r}; a checkpoint may not set it.")
    manifest_default_stages(manifest, path)
    return manifest


MANIFEST_READ_KEYS = ("format", "format_version", "stages", "default_stages", "quality")
"""The ``depthkit.json`` keys depthkit reads. Others are kept as a checkpoint's record (``write_manifest``'s extras:
``tiny``, ``imported_from``, ``trained_from``, ``steps``, ...) and never read."""


def check_manifest_key_spelling(manifest: dict, path) -> None:
    """Raise :class:`CheckpointError` for a key of ``manifest`` that is not one depthkit reads but nearly spells one
    (``default_stage``): it would be kept as a record and the setting silently not applied."""
    import difflib

    for key in manifest:
        if key in MANIFEST_READ_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, MANIFEST_READ_KEYS, n=1, cutoff=0.8)
        if close:
            raise CheckpointError(f"{path}: key {key!r} is not one depthkit reads; did you mean {close[0]!r}? (read: "
                                  f"{', '.join(MANIFEST_READ_KEYS)}; other keys are kept as a record.) Rename it.")


def manifest_default_stages(manifest: dict, path) -> tuple[str, ...]:
    """The manifest's ``default_stages``: what a run given no stage list runs (``depthkit run`` without --stages,
    ``Pipeline()``), written by checkpoints/assemble_default.py; () when the manifest names none. A value that is
    not a list of distinct stages the manifest lists raises :class:`CheckpointError` naming ``path``; their order,
    and that they start with complete, :func:`depthkit.stages.default_stages` checks."""
    value = manifest.get("default_stages")
    if value is None:
        return ()
    listed = manifest["stages"]
    if (not isinstance(value, list) or not value or not all(isinstance(s, str) and s in listed for s in value)
            or len(set(value)) != len(value)):
        raise CheckpointError(f"{path}: default_stages must be a list of distinct stages this manifest lists "
                              f"({', '.join(listed)}), e.g. [\"complete\"]; received {value!r}.")
    return tuple(value)  # their order is the stage table's to check: depthkit.stages.default_stages


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint resolved to a local directory and its manifest read — done once, at the entry point
    (:meth:`open`), then handed to every stage factory.

    Attributes:
        root: the checkpoint directory.
        stages: the manifest's ``stages``: stage name → that stage's stored options.
        default_stages: the manifest's ``default_stages`` (:func:`manifest_default_stages`; () when it names none).
    """

    root: Path
    stages: dict = field(default_factory=dict)
    default_stages: tuple = ()

    @classmethod
    def open(cls, spec) -> CheckpointRef:
        """Resolve ``spec`` (a directory, a hub id, or an existing ``CheckpointRef``) and read its manifest."""
        if isinstance(spec, CheckpointRef):
            return spec
        root = resolve_checkpoint(spec)
        manifest = load_manifest(root)
        check_tree(root)
        return cls(root, dict(manifest["stages"]), manifest_default_stages(manifest, root / MANIFEST))

    @classmethod
    def default(cls) -> CheckpointRef | None:
        """The embedded default checkpoint (:func:`default_checkpoint`), or None when this install has none; opened
        by :meth:`open`, so its checks (:func:`check_tree` too) are those of any checkpoint given by path."""
        root = default_checkpoint()
        return None if root is None else cls.open(root)

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
    from depthkit.io import atomic_write

    root = Path(root)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "depthkit_version": __version__, "stages": stages}
    data.update(extra)
    with atomic_write(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return root / MANIFEST
