"""The one way a benchmark script saves its results: ``<out>/<name>.json`` (every number) and ``<out>/<name>.md``
(the table), and prints the table."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, name: str, report: dict, lines: list[str]) -> None:
    """Write ``report`` as ``out/name.json`` and the markdown ``lines`` as ``out/name.md`` (creating ``out``), then
    print the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
