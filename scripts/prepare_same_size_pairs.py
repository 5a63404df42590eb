"""Prepare data for BasicSR: `python scripts/prepare_same_size_pairs.py --help` (same as `ibsd-prepare same-size`)."""
import sys

from ibsd.data.prepare import main

if __name__ == '__main__':
    sys.exit(main(['same-size', *sys.argv[1:]]))
