"""``python -m phg2st_sc.cli``: the ``phg2st`` command."""

import sys

from phg2st_sc.cli import main

sys.exit(main())
