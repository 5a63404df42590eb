"""Prepare data for BasicSR: `python scripts/prepare_drealsr.py --help` (same as `ibsd-prepare drealsr`)."""
import sys

from ibsd.data.prepare import main

if __name__ == '__main__':
    sys.exit(main(['drealsr', *sys.argv[1:]]))
