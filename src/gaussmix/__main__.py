"""``python -m gaussmix``: the ``gaussmix`` command line."""

import sys

from .cli import main

sys.exit(main())
