"""``python -m ibsd.export``: the same as ``ibsd-export``."""
import sys

from ibsd.export.cli import main

sys.exit(main())
