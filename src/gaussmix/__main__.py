"""``python -m gaussmix``: run the demo."""

import sys

from ._demo import main

sys.exit(main())
