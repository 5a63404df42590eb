"""``python ibsd/test.py -opt X.yml`` (also ``python -m ibsd.test`` and ``ibsd-test``).

Run as a script, the folder of this file would be first on ``sys.path`` and make ``archs``,
``data``, ``test`` ... importable a second time under top-level names; it is replaced by the
folder above it so that everything is imported as ``ibsd.*`` only.
"""
import os
import sys

if not __package__:
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

from ibsd.entry import test_main  # noqa: E402

if __name__ == '__main__':
    test_main()
