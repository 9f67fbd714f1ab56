"""Build hook: ship the repository's top-level ``recipes/``, ``examples/`` and ``checkpoints/`` inside the package.

They stay at the repository root, where the README, tests and CI name them; a built wheel (and a non-editable
install) gets copies at ``depthkit/recipes``, ``depthkit/examples`` and ``depthkit/checkpoints``, which :mod:`depthkit.resources` finds. All
other metadata is in setup.cfg.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("recipes", "examples", "checkpoints")


class BuildWithResources(build_py):
    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        for name in SHIPPED:
            src, dest = here / name, Path(self.build_lib) / "depthkit" / name
            if src.is_dir():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithResources})
