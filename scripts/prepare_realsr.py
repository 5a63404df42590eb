"""Prepare data for BasicSR: `python scripts/prepare_realsr.py --help` (same as `ibsd-prepare realsr`)."""
import sys

from ibsd.data.prepare import main

if __name__ == '__main__':
    sys.exit(main(['realsr', *sys.argv[1:]]))
