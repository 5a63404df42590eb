"""TiledSRModel: BasicSR's SRModel with optional tiled validation and testing for large photos."""
from __future__ import annotations

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ibsd.models.tiling import tiled_forward


def tile_options(opt: dict) -> tuple[int, int] | None:
    """``(tile_size, tile_pad)`` from the top-level ``tile`` option, or None when it is absent."""
    tile = opt.get('tile')
    if not tile:
        return None
    if not isinstance(tile, dict) or 'tile_size' not in tile:
        raise ValueError(f'tile: expected {{tile_size: N, tile_pad: P}}, got {tile!r}')
    return int(tile['tile_size']), int(tile.get('tile_pad', 16))


@MODEL_REGISTRY.register()
class TiledSRModel(SRModel):
    """SRModel whose ``test()`` (validation and ``ibsd-test``) runs tile by tile when the YAML has
    ``tile: {tile_size: 256, tile_pad: 16}`` (LR pixels). Without ``tile`` it is SRModel."""

    def test(self):
        tiling = tile_options(self.opt)
        if tiling is None:
            return super().test()
        net = getattr(self, 'net_g_ema', self.net_g)
        was_training = net.training
        net.eval()
        self.output = tiled_forward(net, self.lq, *tiling)
        net.train(was_training)
