"""``python -m precompute``: see :mod:`precompute.cli`."""

import sys

from precompute.cli import main

sys.exit(main())
