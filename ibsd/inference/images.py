"""Which files are input images: image suffixes, with the outputs of an earlier ``ibsd-infer`` run left out."""
from __future__ import annotations

from pathlib import Path

from ibsd.image_io import png_text
from ibsd.inference.errors import InferenceError

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}
COMPARE_SUFFIX = 'compare'
OUTPUT_MARK = ('Software', 'ibsd-infer')
"""PNG ``tEXt`` chunk written into every output: a later run over the folder leaves them out."""


def own_output(path: Path, suffix: str) -> bool:
    """Whether ``path`` is an output of this command: named like one (``*_<suffix>.png``, ``*_compare.png``)
    or carrying the mark it writes into every PNG (so outputs of a run with another ``--suffix`` count too)."""
    if path.name.endswith((f'_{suffix}.png', f'_{COMPARE_SUFFIX}.png')):
        return True
    return path.suffix.lower() == '.png' and png_text(path, OUTPUT_MARK[0]) == OUTPUT_MARK[1]


def list_images(path: Path, suffix: str = 'sr') -> tuple[list[Path], list[Path]]:
    """Images to upscale, and the files left out as outputs of an earlier run (folders only).

    Raises:
        InferenceError: ``path`` does not exist.
    """
    if path.is_file():
        return [path], []
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [p for p in found if not own_output(p, suffix)], [p for p in found if own_output(p, suffix)]
    raise InferenceError(f'input {path} does not exist')
