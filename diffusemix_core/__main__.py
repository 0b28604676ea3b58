"""``python -m diffusemix_core``: see cli.py."""

import sys

from .cli.main import main

sys.exit(main())
