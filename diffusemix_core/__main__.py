"""``python -m diffusemix_core``, the same as the installed ``diffusemix`` command: see ``cli/main.py``."""

import sys

from .cli.main import main

sys.exit(main())
