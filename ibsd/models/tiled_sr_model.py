"""TiledSRModel: BasicSR's SRModel with tiled testing (:mod:`ibsd.models.tiled_testing`), the plain baselines' model."""
from __future__ import annotations

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ibsd.models.tiled_testing import TiledTestMixin, tile_options

# tile_options: still imported from here (tests/options/test_shipped_files.py)
__all__ = ['TiledSRModel', 'tile_options']


@MODEL_REGISTRY.register()
class TiledSRModel(TiledTestMixin, SRModel):
    """SRModel whose ``test()`` (validation and ``ibsd-test``) runs tile by tile when the YAML has
    ``tile: {tile_size: 256, tile_pad: 16}`` (LR pixels) and on whole images otherwise, pads inputs
    to the arch's size multiple (BasicSR's SwinIR: its window), and whose test runs write
    ``<dataset>_metrics.csv`` / ``.md`` (per image, mean and the tile setting) in the results folder.

    The plain baselines train and test as this model, IBSD runs as ``IBSDModel`` (a subclass): both
    arms of a paired comparison go through the same ``test()``."""
