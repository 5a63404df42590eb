"""Test: ``python ibsd/test.py -opt X.yml``, ``python -m ibsd.test`` or ``ibsd-test``."""
import os
import sys

if not __package__:  # a script: import ibsd from the folder above, never `archs`, `data`... as top-level names
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from ibsd.entry import test_main  # noqa: E402

if __name__ == '__main__':
    test_main()
