"""Shared fixtures: paths to the real material in ../shared/data, skipped when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ibsd  # noqa: F401  (applies the basicsr fixes before any test module imports basicsr)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('IBSD_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test with a message when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent (real test material from ../shared/data); set IBSD_SHARED_DATA to its folder')
    return path
