"""The one way a benchmark script saves its results: ``<out>/<name>.json`` (every number) and ``<out>/<name>.md``
(the table), and prints the table."""

from __future__ import annotations

import json
from pathlib import Path

from depthkit.io import atomic_write, strict_json  # the one implementation of each


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


def write_results(out: Path, name: str, report: dict, lines: list[str] | str, echo: bool = True) -> tuple[Path, Path]:
    """Write ``report`` as ``out/name.json`` (strict JSON: NaN as null) and the markdown ``lines`` (a list of lines,
    or the text itself) as ``out/name.md`` (creating ``out``; each file atomically, so an interrupted run leaves the
    previous results whole), print the markdown when ``echo``, and return the two paths."""
    out = Path(out)
    paths = (out / f"{name}.json", out / f"{name}.md")
    markdown = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
    for path, text in zip(paths, (json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n", markdown)):
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    if echo:
        print(markdown, end="")
    return paths
