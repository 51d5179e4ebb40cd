"""``python -m lossbench`` is the same as the ``lossbench`` console script."""

import sys

from lossbench.cli import main

sys.exit(main())
