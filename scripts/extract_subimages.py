"""Prepare data for BasicSR: `python scripts/extract_subimages.py --help` (same as `ibsd-prepare subimages`)."""
import sys

from ibsd.data.prepare import main

if __name__ == '__main__':
    sys.exit(main(['subimages', *sys.argv[1:]]))
