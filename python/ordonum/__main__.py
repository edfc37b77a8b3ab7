"""``python -m ordonum``: the ``ordonum`` command."""

import sys

from ordonum.cli import main

sys.exit(main())
