"""``python -m msiv2_async``: the msiv2-async command."""

import sys

from .cli import main

sys.exit(main())
