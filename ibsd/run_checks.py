"""Deprecated: the start-up checks moved to :mod:`ibsd.options.run_file` (kept so that old imports keep working)."""
import warnings

from ibsd.options.run_file import *  # noqa: F401,F403
from ibsd.options.run_file import check_option_file, check_run_options  # noqa: F401

warnings.warn('ibsd.run_checks moved to ibsd.options.run_file', DeprecationWarning, stacklevel=2)
