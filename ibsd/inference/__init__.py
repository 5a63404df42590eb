"""Running trained students: build and load a network, pad it to the sizes it takes, run it whole or tiled.

Library code shared by ``ibsd-infer``, ``ibsd-export``, the test path of ``TiledSRModel``/``IBSDModel``,
the study's crop strip and ``scripts/model_card.py``; it imports none of them.

- :mod:`~ibsd.inference.network`: which network (a ``network_g``, or an arch with keyword arguments and
  a scale) and building it;
- :mod:`~ibsd.inference.loading`: loading weights, pixel-range detection, the network's own scale and
  the bicubic pre-upscale of same-size networks (:func:`load_network`);
- :mod:`~ibsd.inference.probe`: the test pattern those checks run on;
- :mod:`~ibsd.inference.sizes`: the one size rule per arch (:func:`size_multiple`) and the padding
  that meets it (:func:`padded_to_multiple`);
- :mod:`~ibsd.inference.tiling`: tiled inference without seams (:func:`tiled_forward`);
- :mod:`~ibsd.inference.upscaler`: one image through all of it (:class:`Upscaler`);
- :mod:`~ibsd.inference.images`: which files of a folder are input images.
"""
from ibsd.inference.errors import InferenceError
from ibsd.inference.images import COMPARE_SUFFIX, IMAGE_SUFFIXES, OUTPUT_MARK, list_images, own_output
from ibsd.inference.loading import LoadedNetwork, load_network, load_weights
from ibsd.inference.network import (NetworkSpec, add_network_arguments, arch_class, build_network,
                                    network_from_command_line, network_spec, parse_arch_options, read_network_g,
                                    scale_keyword)
from ibsd.inference.probe import bicubic, fit_pixel_range, probe, probe_pattern
from ibsd.inference.sizes import PaddedToMultiple, padded_to_multiple, round_down, round_up, size_multiple
from ibsd.inference.tiling import tiled_forward
from ibsd.inference.upscaler import AUTO_TILE_PIXELS, AUTO_TILE_SIZE, Upscaler

__all__ = [
    'AUTO_TILE_PIXELS', 'AUTO_TILE_SIZE', 'COMPARE_SUFFIX', 'IMAGE_SUFFIXES', 'OUTPUT_MARK', 'InferenceError',
    'LoadedNetwork', 'NetworkSpec', 'PaddedToMultiple', 'Upscaler', 'add_network_arguments', 'arch_class', 'bicubic',
    'build_network', 'fit_pixel_range', 'list_images', 'load_network', 'load_weights', 'network_from_command_line',
    'network_spec', 'own_output',
    'padded_to_multiple', 'parse_arch_options', 'probe', 'probe_pattern', 'read_network_g', 'round_down',
    'round_up', 'scale_keyword', 'size_multiple', 'tiled_forward',
]
