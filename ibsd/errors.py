"""The one base of every error ibsd reports as a single line naming the file, key or option at fault.

Every command-line entry point (``ibsd-train``/``-test``/``-infer``/``-export``/``-study``/``-prepare``,
the demo) catches :class:`IBSDError` and prints ``<ErrorName>: <message>`` with exit status 1 instead
of a traceback (:func:`exit_with`); anything else is a bug and keeps its traceback. Each subclass also
derives from the built-in error it refines (``ValueError``, ``OSError``, ...), so library callers can
catch either.
"""
from __future__ import annotations

import sys
from typing import NoReturn


class IBSDError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class OptionError(IBSDError, ValueError):
    """An option that is unknown or has a value of the wrong kind."""


def one_line(error: BaseException) -> str:
    """``<ErrorName>: <message>``, the form every entry point prints."""
    return f'{type(error).__name__}: {error}'


def exit_with(error: BaseException) -> NoReturn:
    """End the process with ``error`` as one line on stderr and exit status 1."""
    sys.exit(one_line(error))
