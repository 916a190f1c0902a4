"""The full-size WSOL backbones: stride-8 features, cam_layer, torchvision-layout weights."""
from __future__ import annotations

import pytest
import torch

from bench.models import BACKBONES, build_classifier, load_backbone_weights

BIG = {  # name: (out_channels, stride, a pretrained key, the classifier key of the original network)
    "resnet50": (2048, 8, "layer3.0.downsample.0.weight", "fc.weight"),
    "vgg16": (1024, 8, "features.28.weight", "classifier.6.weight"),
    "inceptionv3": (1024, 8, "Mixed_6e.branch7x7dbl_5.conv.weight", "AuxLogits.fc.weight"),
}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: BACKBONES[name]().eval() for name in BIG}


@pytest.mark.parametrize("name", sorted(BIG))
def test_features_shape_stride_and_cam_layer(name, nets):
    net = nets[name]
    channels, stride, _, _ = BIG[name]
    seen = []
    handle = net.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            out = net(torch.rand(1, 3, 64, 80))
    finally:
        handle.remove()
    assert net.out_channels == channels
    assert out.shape == (1, channels, 64 // stride, 80 // stride)
    assert len(seen) == 1 and torch.equal(seen[0], out)


@pytest.mark.parametrize("name", sorted(BIG))
def test_torchvision_layout_round_trip(name, nets, tmp_path):
    net = nets[name]
    _, _, pretrained_key, classifier_key = BIG[name]
    state = net.state_dict()
    assert pretrained_key in state
    path = tmp_path / "own.pt"
    torch.save(state, path)
    fresh = BACKBONES[name]()
    load_backbone_weights(fresh, path)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    # a torchvision-style checkpoint: the original classifier is dropped, the new WSOL head
    # (VGG conv6, Inception Conv2d_6a_3x3) may be absent and keeps its initialisation
    tv = {k: v for k, v in state.items() if not k.startswith(getattr(net, "new_prefixes", ()) or ("-",))}
    tv[classifier_key] = torch.zeros(3, 4)
    torch.save(tv, path)
    load_backbone_weights(BACKBONES[name](), path)


@pytest.mark.parametrize("name", sorted(BIG))
def test_missing_and_extra_keys_are_listed(name, nets, tmp_path):
    state = nets[name].state_dict()
    _, _, pretrained_key, _ = BIG[name]
    path = tmp_path / "w.pt"
    torch.save({k: v for k, v in state.items() if k != pretrained_key}, path)
    with pytest.raises(ValueError, match=rf"missing keys: \['{pretrained_key}'\]; unexpected keys: none"):
        load_backbone_weights(BACKBONES[name](), path)
    torch.save({**state, "layer9.bogus.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"missing keys: none; unexpected keys: \['layer9\.bogus\.weight'\]"):
        load_backbone_weights(BACKBONES[name](), path)


def test_build_classifier_with_weights_file(nets, tmp_path):
    path = tmp_path / "vgg.pt"
    torch.save(nets["vgg16"].state_dict(), path)
    model = build_classifier("vgg16", 5, path).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    assert out.logits.shape == (1, 5) and out.features.shape == (1, 1024, 4, 4)
    assert model.cam(out.features, torch.tensor([2])).shape == (1, 4, 4)


def test_small_cnn_runs_channels_last_and_computes_the_same_function():
    """The CPU backbone keeps its weights and activations channels-last (the fast layout for
    oneDNN); the features must equal those of the same weights run in the default layout, and
    a state dict saved from one layout loads into the other."""
    torch.manual_seed(0)
    net = BACKBONES["small-cnn"]().eval()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)
    plain = BACKBONES["small-cnn"]().to(memory_format=torch.contiguous_format).eval()
    plain.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    plain.forward = lambda x: plain.body(x)  # the layers without the layout change
    images = torch.rand(3, 3, 40, 56)
    with torch.no_grad():
        fast, ref = net(images), plain(images)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert fast.shape == (3, net.out_channels, 10, 14)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
