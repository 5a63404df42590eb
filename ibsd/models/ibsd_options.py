"""Deprecated: the option checks moved to :mod:`ibsd.options` (kept so that old imports keep working)."""
import warnings

from ibsd.errors import OptionError  # noqa: F401
from ibsd.options.train_sections import *  # noqa: F401,F403
from ibsd.options.train_sections import check_ibsd_options, describe_terms  # noqa: F401
from ibsd.options.values import *  # noqa: F401,F403

warnings.warn('ibsd.models.ibsd_options moved to ibsd.options.train_sections (and ibsd.options.values)',
              DeprecationWarning, stacklevel=2)
