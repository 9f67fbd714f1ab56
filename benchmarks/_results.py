"""The one way a benchmark script saves its results: ``<out>/<name>.json`` (every number) and ``<out>/<name>.md``
(the table), and prints the table."""

from __future__ import annotations

import json
import math
from pathlib import Path


def strict_json(value):
    """``value`` with every non-finite float (NaN: a score with nothing to score) replaced by None, so the file is
    strict JSON (``null``), which every JSON reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_results(out: Path, name: str, report: dict, lines: list[str]) -> None:
    """Write ``report`` as ``out/name.json`` (strict JSON: NaN as null) and the markdown ``lines`` as ``out/name.md``
    (creating ``out``), then print the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
