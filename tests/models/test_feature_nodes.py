"""Markov-chain nodes are captured by temporary hooks, checked, and leave the student untouched."""
from __future__ import annotations

import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet

from ibsd.archs.imdn_arch import IMDN
from ibsd.archs.rfdn_arch import RFDN
from ibsd.models.feature_nodes import NodeRecorder, default_nodes, parse_node


def hooks_of(net: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in net.modules())


def test_imdn_nodes_are_the_shallow_feature_and_blocks_2_4_6():
    net = IMDN(num_feat=16, upscale=2)
    recorder = NodeRecorder(net, default_nodes(net))
    x = torch.rand(2, 3, 12, 12)
    with recorder.record():
        out = net(x)
        nodes = recorder.collect()
    assert recorder.nodes == ['fea_conv', 'IMDB2', 'IMDB4', 'IMDB6']
    assert [tuple(n.shape) for n in nodes] == [(2, 16, 12, 12)] * 4
    assert torch.equal(nodes[0], net.fea_conv(x))
    assert torch.equal(out, net(x))
    assert hooks_of(net) == 0


def test_rfdn_with_shared_block4_takes_its_third_call_as_the_last_node():
    torch.manual_seed(0)
    net = RFDN(num_feat=16, num_block=6, attention='cca', share_block4=True)
    assert default_nodes(net) == ['fea_conv', 'B2', 'B4', 'B4@3']
    recorder = NodeRecorder(net, default_nodes(net))
    x = torch.rand(1, 3, 16, 16)
    with recorder.record():
        net(x)
        nodes = recorder.collect()
    features = net.fea_conv(x)
    outputs = []
    for block in net.block_sequence():
        features = block(features)
        outputs.append(features)
    assert torch.equal(nodes[2], outputs[3]) and torch.equal(nodes[3], outputs[5])


def test_a_node_that_never_runs_is_reported():
    net = RFDN(num_feat=16, num_block=6, attention='cca', share_block4=True)
    recorder = NodeRecorder(net, ['fea_conv', 'B6'])
    with recorder.record():
        net(torch.rand(1, 3, 16, 16))
        with pytest.raises(ValueError, match=r"train:ibsd:nodes: node 'B6' did not run"):
            recorder.collect()


def test_unknown_module_names_are_listed_with_the_option():
    with pytest.raises(ValueError, match=r"train:ibsd:nodes: no module named \['IMDB9'\].*IMDB1"):
        NodeRecorder(IMDN(num_feat=16), ['fea_conv', 'IMDB9'])


def test_fewer_than_two_nodes_is_an_error():
    with pytest.raises(ValueError, match='at least 2 nodes'):
        NodeRecorder(IMDN(num_feat=16), ['fea_conv'])


def test_nodes_of_different_spatial_size_are_an_error():
    net = MSRResNet(num_feat=8, num_block=2, upscale=4)
    recorder = NodeRecorder(net, ['conv_first', 'conv_hr'])
    with recorder.record():
        net(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match='share one spatial size'):
            recorder.collect()


def test_archs_without_defaults_ask_for_the_option():
    with pytest.raises(ValueError, match='declares no default IBSD nodes.*train:ibsd:nodes'):
        default_nodes(MSRResNet())


@pytest.mark.parametrize('node, parsed', [('IMDB2', ('IMDB2', 1)), ('B4@3', ('B4', 3)), ('body.0', ('body.0', 1))])
def test_node_syntax(node, parsed):
    assert parse_node(node) == parsed


def test_bad_call_index_is_an_error():
    with pytest.raises(ValueError, match='@k'):
        parse_node('B4@0')
