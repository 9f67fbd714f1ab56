"""``python -m depthkit ...``: the ``depthkit`` command (:func:`depthkit.cli.main`), for environments where the
console script is not on ``PATH``."""

import sys

from depthkit.cli import main

sys.exit(main())
