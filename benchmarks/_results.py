"""The one way a benchmark script saves its results: ``<out>/<name>.json`` (every number) and ``<out>/<name>.md``
(the table), and prints the table."""

from __future__ import annotations

import json
from pathlib import Path

from depthkit.io import strict_json  # noqa: F401  (the one implementation; accuracy.py imports it from here)


def results_name(text: str) -> str:
    """An argparse ``type`` for ``--name``: the file stem of a results pair (letters, digits, ``_``, ``-``, ``.``; not
    a path), so a robustness run can sit beside the main results (``--name accuracy_stereo``) instead of replacing
    them."""
    import argparse
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text or ""):
        raise argparse.ArgumentTypeError(f"a results name is a file stem of letters, digits, '_', '-' and '.', e.g. "
                                         f"accuracy_stereo (written as NAME.json and NAME.md in --out); received "
                                         f"{text!r}")
    return text


def write_results(out: Path, name: str, report: dict, lines: list[str]) -> None:
    """Write ``report`` as ``out/name.json`` (strict JSON: NaN as null) and the markdown ``lines`` as ``out/name.md``
    (creating ``out``), then print the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
