"""``python -m fastfit``: the same command line as the ``fastfit`` script."""
import sys

from .cli import main

sys.exit(main())
