"""Evaluation over a dataset split: per-image metrics, means, resume, and data-parallel shards.

``evaluate(pipeline, dataset, protocol, out)`` runs the pipeline on every item, scores it with
:func:`depthkit.metrics.depth_metrics`, DBE (:func:`depthkit.metrics.dbe_metrics`, against the dataset's edge
annotations when it has them, else edges of the GT depth) and the preservation error, and writes

- ``<out>``: JSON ``{"dataset", "protocol", "pipeline", "n_images", "mean": {...}, "per_image": [...]}``, strict
  (:func:`depthkit.io.strict_json`): a non-finite number is written as ``null``, i.e. an undefined metric (NaN, e.g.
  DBE on an image without edges) or an unbounded protocol limit (``"max_depth": null`` = no cap, ``math.inf``),
- ``<out>`` with suffix ``.md``: the mean metrics as a markdown table,
- ``<out>.parts/rank<R>.jsonl``: one line per finished image, per process. A rerun skips images already there
  (resume), so an interrupted evaluation continues where it stopped;
- ``<out>.parts/failed_rank<R>.jsonl``: the images whose input was refused (a reader's ``ValueError`` for a
  corrupt or missing file, the pipeline's for e.g. a NaN in the sparse map, or no valid GT pixel to score), with the
  reason. The other images still run; then one ``ValueError`` names them all and no mean is written (one that left
  them out would not be the split's). After the fix the same command runs only the images without a result.

Resuming is safe: the caller passes a ``fingerprint`` (a dict of everything that determines the per-image results:
dataset, root, split, reader options, protocol, method or checkpoint identity, stages, stage options, depthkit
version). It is stored in ``<out>.parts/fingerprint.json`` and in the JSON, and its hash in every row; a rerun whose
fingerprint differs refuses with :class:`FingerprintMismatch` naming the fields that differ, and ``overwrite=True``
discards the old results. ``limit`` is not part of it: raising it evaluates only the images not yet done. Each
finished row's image name is checked against the dataset's image at that index, so files added, removed or reordered
under the same root are refused too, not scored by position.

Under ``accelerate launch`` each process takes every ``world_size``-th image; the processes meet at a barrier and
rank 0 merges the shard files. Means are over images (each image's metrics over its own valid pixels), the
Marigold convention.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from depthkit.io import check_output_parent, strict_json

METRIC_KEYS = ("mae", "rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse",
               "silog", "dbe_acc", "dbe_comp", "preservation", "confidence_auroc")
TABLE_KEYS = ("mae", "rmse", "abs_rel", "delta1", "dbe_acc", "dbe_comp", "preservation")


def _dbe_options(dbe_canny: str, dbe_region: str) -> dict[str, str]:
    """``{"dbe_canny", "dbe_region"}`` checked, the error naming the option as the caller named it."""
    from depthkit.metrics import DBE_CANNY, DBE_REGION

    for name, value, allowed in (("dbe_canny", dbe_canny, DBE_CANNY), ("dbe_region", dbe_region, DBE_REGION)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}; received {value!r}.")
    return {"dbe_canny": dbe_canny, "dbe_region": dbe_region}


def score_image(pred: np.ndarray, item: dict, valid: np.ndarray, confidence: np.ndarray | None = None,
                dbe_canny: str = "matlab", dbe_region: str = "valid") -> dict[str, float]:
    """All metrics for one prediction (HxW metres) against ``item["depth"]`` over ``valid``; with the pipeline's
    ``confidence`` map also ``confidence_auroc`` (:func:`depthkit.metrics.confidence_auroc`). ``dbe_canny`` and
    ``dbe_region``: how the DBE finds and where it scores edges, :func:`depthkit.metrics.dbe_metrics`'s ``canny``
    and ``region``."""
    from depthkit.metrics import confidence_auroc, dbe_metrics, depth_metrics, preservation_error

    _dbe_options(dbe_canny, dbe_region)
    gt = item["depth"]
    scores = depth_metrics(pred, gt, valid=valid)
    # an image without a GT edge in view (e.g. a flat wall) scores NaN; an edge map of the wrong shape raises
    scores.update(dbe_metrics(pred, gt, gt_edges=item.get("edges"), valid=valid, canny=dbe_canny,
                              region=dbe_region))
    scores["preservation"] = preservation_error(pred, item["sparse"])
    if confidence is not None:
        scores["confidence_auroc"] = confidence_auroc(confidence, pred, gt, valid, item["sparse"])
    return {k: float(v) for k, v in scores.items()}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """Per-key mean over images, ignoring NaN (undefined DBE) entries."""
    out = {}
    for key in METRIC_KEYS:
        vals = [r["metrics"][key] for r in rows if key in r["metrics"] and not math.isnan(r["metrics"][key])]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    return out


def markdown_table(results: dict[str, dict[str, float]], keys=TABLE_KEYS) -> str:
    """A markdown table: one row per method name, one column per metric."""
    head = "| method | " + " | ".join(keys) + " |"
    sep = "|---|" + "---:|" * len(keys)
    rows = [f"| {name} | " + " | ".join(_fmt(m.get(k, float("nan"))) for k in keys) + " |"
            for name, m in results.items()]
    return "\n".join([head, sep, *rows]) + "\n"


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _dist():
    """(rank, world_size, barrier) from accelerate when launched with several processes, else (0, 1, no-op)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        # without cpu=True accelerate does not set up gloo on a machine with no GPU and every process thinks it is
        # rank 0 of a single-process run
        state = PartialState(cpu=not torch.cuda.is_available())
        return state.process_index, state.num_processes, state.wait_for_everyone
    return 0, 1, lambda: None


class FingerprintMismatch(ValueError):
    """Results already at ``--out`` were computed by a different evaluation; the message names what differs."""


def fingerprint_hash(fingerprint: dict) -> str:
    """A short stable hash of a JSON-able fingerprint dict (key order does not matter)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_LEFT_OUT = {"dbe_canny": "matlab", "dbe_region": "valid"}
"""Fingerprint keys :func:`evaluate` leaves out at their default (so older results still resume), with that value."""


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=lambda k: (k not in new, k))
    # as stored: a tuple read back is a list, inf is null; equal values must not be named as a difference
    old, new = strict_json({**_LEFT_OUT, **old}), strict_json({**_LEFT_OUT, **new})
    diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs) or "(their hashes differ)"


def _refuse(out: Path, old: dict | None, new: dict) -> FingerprintMismatch:
    what = _differences(old, new) if old is not None else "they carry no fingerprint (an older depthkit wrote them)"
    return FingerprintMismatch(
        f"{out} already holds results of a different evaluation, so resuming would mix them: {what}. "
        "Pass another --out, or --overwrite to discard the old results and start again."
    )


def _check_previous(out: Path, parts: Path, fingerprint: dict, fp_hash: str) -> None:
    """Refuse when results at ``out`` were made under another fingerprint; else record ``fingerprint``."""
    fp_file = parts / "fingerprint.json"
    old = None
    if fp_file.is_file():
        old = json.loads(fp_file.read_text())
    elif out.is_file():
        try:
            old = json.loads(out.read_text()).get("fingerprint")
        except (json.JSONDecodeError, AttributeError):
            old = None
        if old is None:
            raise _refuse(out, None, fingerprint)
    if old is not None and fingerprint_hash(strict_json(old)) != fingerprint_hash(strict_json(fingerprint)):
        raise _refuse(out, old, fingerprint)  # compared as stored in <out>: inf (no depth cap) there reads as null
    for part in parts.glob("rank*.jsonl"):
        for row in _read_done(part).values():
            if row.get("fingerprint") != fp_hash:
                raise _refuse(out, old if old is not None and row.get("fingerprint") else None, fingerprint)
    tmp = parts / f".fingerprint.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
    os.replace(tmp, fp_file)


def _check_names(parts: Path, dataset, n: int) -> None:
    """Refuse to resume when a finished row's image is not the dataset's image at that index now (a frame added under
    the same root or a list file edited would otherwise score one image twice and another never). Names come from
    ``dataset.names`` when the dataset has one, else from loading the item."""
    names = getattr(dataset, "names", None)
    moved = []
    for part in sorted(parts.glob("rank*.jsonl")):
        for i, row in _read_done(part).items():
            if i < n:
                now = names[i] if names is not None else dataset[i].get("name")
                if row.get("name") != now:
                    moved.append(f"image {i} was {row.get('name')!r}, now {now!r}")
    if moved:
        raise ValueError(f"the dataset is not the one the results in {parts} were made from: {'; '.join(moved[:3])}"
                         f"{f' (and {len(moved) - 3} more)' if len(moved) > 3 else ''}. Its files changed (added, "
                         "removed or reordered); rerun with --overwrite (overwrite=True) to evaluate it from the start.")


def _discard_previous(out: Path, parts: Path, rank: int, world: int) -> None:
    """``overwrite``: each process removes its own shard; rank 0 also removes the rest and the written results."""
    (parts / f"rank{rank}.jsonl").unlink(missing_ok=True)
    if rank == 0:
        if parts.is_dir():
            shutil.rmtree(parts)
        out.unlink(missing_ok=True)
        out.with_suffix(".md").unlink(missing_ok=True)


def _read_done(path: Path) -> dict[int, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption: that image is redone
                continue
            done[int(row["index"])] = row
    return done


def images_to_evaluate(dataset, limit: int | None = None) -> int:
    """How many of ``dataset``'s images an evaluation scores (the first ``limit``, or all); ``ValueError`` when none,
    which `depthkit eval` asks before any model loads."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError(f"{dataset!r} has no images to evaluate" + ("" if limit is None else f" (limit {limit})")
                         + "; check --root, --split and the dataset's list file.")
    return n


def check_metrics_out(out) -> Path:
    """``out`` as a Path if a metrics JSON file can be written there (not a folder, no file among its folders), else
    ``ValueError`` saying what to give instead; called before any model loads or image runs."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the metrics JSON file to write, e.g. {out / 'metrics.json'}.")
    if out.suffix.lower() == ".md":
        raise ValueError(f"--out {out} ends in .md, the name of the markdown table written beside the metrics JSON, "
                         f"which would overwrite it; give the JSON file, e.g. {out.with_suffix('.json')}.")
    check_output_parent(out)
    return out


def evaluate(pipeline, dataset, protocol, out, limit: int | None = None, progress: bool = True,
             label: str | None = None, fingerprint: dict | None = None, overwrite: bool = False,
             dbe_canny: str = "matlab", dbe_region: str = "valid") -> dict | None:
    """Evaluate ``pipeline`` on ``dataset`` under ``protocol``; returns the summary (None on ranks > 0).

    ``fingerprint`` describes everything that determines the results (see the module docstring); without one,
    ``{"pipeline": label or repr(pipeline)}`` is used. ``dbe_canny`` chooses the DBE's edges
    (:func:`depthkit.metrics.dbe_metrics`: ``"matlab"``, the iBims-1 paper's, or ``"skimage"``, its public script's)
    and ``dbe_region`` where they are scored (``"valid"``: where the GT is valid; ``"image"``: everywhere, as that
    script does); a choice other than the default joins the fingerprint, so results of two are never mixed. Raises
    :class:`FingerprintMismatch` when ``out`` holds results made under another fingerprint, unless ``overwrite``. The returned summary keeps NaN / inf as floats;
    the JSON file holds them as ``null``.
    """
    from tqdm import tqdm

    from depthkit.data.protocols import apply_protocol

    dbe = _dbe_options(dbe_canny, dbe_region)  # before anything at ``out`` is discarded or made
    out = check_metrics_out(out)
    n = images_to_evaluate(dataset, limit)
    parts = out.with_name(out.name + ".parts")
    rank, world, barrier = _dist()
    if overwrite:
        _discard_previous(out, parts, rank, world)
        barrier()
    parts.mkdir(parents=True, exist_ok=True)
    fingerprint = dict(fingerprint or {"pipeline": label or repr(pipeline)})
    # a default is left out: results written before its switch existed still resume
    fingerprint.update({k: v for k, v in dbe.items() if v != _LEFT_OUT[k]})
    if dbe_canny == "skimage":  # since session 38 a prediction's holes are NaN to that Canny, as the script's are:
        fingerprint["dbe_holes"] = "nan"  # results made before (nearest-filled holes) are not resumed into these
    fp_hash = fingerprint_hash(fingerprint)
    _check_previous(out, parts, fingerprint, fp_hash)
    _check_names(parts, dataset, n)
    shard = list(range(rank, n, world))
    part_file = parts / f"rank{rank}.jsonl"
    done = _read_done(part_file)
    todo = [i for i in shard if i not in done]  # resume: skip what an earlier run finished
    # rewrite only the intact rows, so a line cut short by an interruption cannot swallow the next one
    part_file.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    failed: list[dict] = []  # inputs refused (a corrupt file, NaN sparse...): the rest of the split still runs
    with open(part_file, "a") as f:
        for i in tqdm(todo, desc=f"eval {label or ''}".strip(), disable=not progress or rank > 0, unit="img"):
            try:
                item = dataset[i]
            except (ValueError, OSError) as exc:  # the reader could not make this sample (DatasetLayoutError is
                # one), or a file went missing or unreadable after the list was made
                names = getattr(dataset, "names", None)  # the reader's listing, when it has one
                failed.append({"index": i, "name": None if names is None else names[i],
                               "error": str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"})
                continue
            if item.get("depth") is None or item.get("sparse") is None:
                raise ValueError(
                    f"{dataset!r} item {item.get('name')!r} has no ground-truth depth or sparse input, so there is "
                    "nothing to score. Evaluate a labelled dataset; to complete unlabelled images use `depthkit run`."
                )
            if dbe_region == "image" and item.get("edges") is None:  # the whole run's choice, not this image's fault
                raise ValueError(
                    f"--dbe-region image (dbe_region='image') scores DBE against a dataset's annotated edge maps, as "
                    f"iBims-1's public script does; {dataset!r} item {item.get('name')!r} has none (of the readers, "
                    "iBims-1 with its edges/ folder or .mat release gives them). Drop --dbe-region."
                )
            try:  # a ValueError here is the input's own fault: NaN sparse, sizes, no GT pixel left to score...
                res = pipeline(item["image"], item["sparse"])
                valid = apply_protocol(res.depth, item["depth"], item["valid"], protocol)
                metrics = score_image(res.depth, item, valid, res.confidence, **dbe)
            except ValueError as exc:
                failed.append({"index": i, "name": item.get("name"), "error": str(exc)})
                continue
            row = {"index": i, "name": item["name"], "metrics": metrics, "seconds": res.timings["total"],
                   "fingerprint": fp_hash}
            f.write(json.dumps(row) + "\n")
            f.flush()
    failed_file = parts / f"failed_rank{rank}.jsonl"  # this run's list only: an earlier run's is replaced
    if failed:
        failed_file.write_text("".join(json.dumps(r) + "\n" for r in failed))
    else:
        failed_file.unlink(missing_ok=True)
    barrier()
    if rank != 0:
        return None
    # an earlier run's summary must not stand for this one if this one ends without a mean
    out.unlink(missing_ok=True)
    out.with_suffix(".md").unlink(missing_ok=True)
    rows = {}
    for p in sorted(parts.glob("rank*.jsonl")):
        for row in _read_done(p).values():
            if row["index"] < n:
                rows[row["index"]] = row
    _raise_failed(parts, len(rows), n, world)
    missing = sorted(set(range(n)) - set(rows))
    if missing:
        raise RuntimeError(f"evaluation incomplete: {len(missing)} image(s) have no result (first: {missing[:5]}). "
                           "Rerun the same command to resume.")
    per_image = [rows[i] for i in range(n)]
    summary = {
        "dataset": getattr(protocol, "name", str(protocol)),
        "protocol": _protocol_dict(protocol),
        "pipeline": label or repr(pipeline),
        "n_images": n,
        "fingerprint": fingerprint,
        "mean": mean_scores(per_image),
        "per_image": per_image,
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(strict_json(summary), indent=1, allow_nan=False))
    os.replace(tmp, out)
    edges = "".join(line for k, line in (
        ("dbe_canny", f"DBE edges: {dbe_canny} (iBims-1's public script's Canny, not the paper's).\n\n"),
        ("dbe_region", f"DBE region: {dbe_region} (edges scored over the whole image, as iBims-1's public script "
                       "does, not only where the GT is valid).\n\n")) if dbe[k] != _LEFT_OUT[k])
    out.with_suffix(".md").write_text(
        f"# {summary['dataset']}: {n} images\n\n" + edges + markdown_table({summary["pipeline"]: summary["mean"]}))
    return summary


def _raise_failed(parts: Path, n_scored: int, n: int, world: int, shown: int = 10) -> None:
    """Raise one ``ValueError`` naming every image of this run whose input was refused, read from the
    ``failed_rank<r>.jsonl`` each of this run's ``world`` processes wrote in ``parts`` (files an earlier run with more
    processes left are not read; each of this run's was rewritten by it). No mean is written then: one that left them
    out would not be the split's."""
    failed = {}
    for p in (parts / f"failed_rank{r}.jsonl" for r in range(world)):
        for line in p.read_text().splitlines() if p.is_file() else ():
            r = json.loads(line)
            failed[r["index"]] = r
    if not failed:
        return
    lines = [f"  image {i} of {n}" + (f" ({r['name']!r})" if r["name"] is not None else "") + f": {r['error']}"
             for i, r in sorted(failed.items())[:shown]]
    if len(failed) > shown:
        lines.append(f"  ... and {len(failed) - shown} more")
    raise ValueError(
        f"{len(failed)} of {n} image(s) could not be evaluated, so no mean was written (one that left them out would "
        f"not be the split's):\n" + "\n".join(lines) + f"\nThe {n_scored} image(s) scored are kept in {parts}. "
        "Fix what each line names (an input file, or the model for a prediction it could not make) and run the same "
        "command again: only the images without a result will run.")


def _protocol_dict(protocol) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(protocol) if is_dataclass(protocol) else {"name": str(protocol)}
