"""``python -m medsec_nb.cli``."""

import sys

from .main import main

sys.exit(main())
