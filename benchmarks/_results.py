"""The one way a benchmark script saves its results: ``<out>/<name>.json`` (every number) and ``<out>/<name>.md``
(the table), and prints the table."""

from __future__ import annotations

import json
import os
from pathlib import Path

from depthkit.io import strict_json  # the one implementation (NaN, e.g. an AUROC without both classes, as null)


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


def write_results(out: Path, name: str, report: dict, lines: list[str], echo: bool = True) -> tuple[Path, Path]:
    """Write ``report`` as ``out/name.json`` (strict JSON: NaN as null) and the markdown ``lines`` as ``out/name.md``
    (creating ``out``; each file atomically, so an interrupted run leaves the previous results whole), print the
    markdown when ``echo``, and return the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{name}.json", out / f"{name}.md")
    texts = (json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n", "\n".join(lines) + "\n")
    for path, text in zip(paths, texts):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    if echo:
        print(texts[1], end="")
    return paths
