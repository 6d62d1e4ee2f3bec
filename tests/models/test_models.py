"""The networks of SPEC §2–3: sizes, exact shortcuts, freezing, VGG-16 weights, init."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segfew.errors import ModelFileError
from segfew.frameworks import FRAMEWORKS
from segfew.modelfile import load_imagenet_vgg16
from segfew.models import (
    MODELS,
    FeatureClassifier,
    ImageNetVGGClassifier,
    MNet,
    VGGClassifier,
    build_model,
    init_glorot,
)
from segfew.models.blocks import glorot_bound, pool_kernels


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool3d(x, 2)


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if "running" in name]


# ---------------------------------------------------------------- MNet


@pytest.mark.parametrize(("dim", "n_s", "expected"), [(2, 16, 496), (3, 12, 84)])
def test_feature_channels_at_paper_settings(dim: int, n_s: int, expected: int) -> None:
    with torch.device("meta"):
        net = MNet(dim, 1, 10, n_s=n_s)
        x = torch.empty(1, 1, *([128] * dim))
        f = net.features(x)
        pooled = net.features_pooled(x)
        y = net(x)
    assert net.num_features == expected
    assert tuple(f.shape) == (1, expected, *([128] * dim))
    assert tuple(pooled.shape) == (1, expected, *([64] * dim))
    assert tuple(y.shape) == (1, 10, *([128] * dim))


@pytest.mark.parametrize(("dim", "in_channels", "num_labels", "size"), [
    (2, 2, 5, (32, 48)),
    (2, 1, 1, (16, 64)),
    (3, 1, 3, (16, 16, 16)),
    (3, 2, 4, (16, 32, 16)),
])
def test_mnet_shapes_and_head_shortcut(dim: int, in_channels: int, num_labels: int,
                                       size: tuple[int, ...]) -> None:
    net = MNet(dim, in_channels, num_labels, n_s=2).eval()
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        f = net.features(x)
        y = net(x)
    assert f.shape == (2, net.num_features, *size)
    assert net.num_features == (31 if dim == 2 else 7) * 2
    assert y.shape == (2, num_labels, *size)
    # the per-scale head equals the 1^dim convolution of the concatenated right leg
    torch.testing.assert_close(y, net.head(f), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dim", "size"), [(2, (32, 48)), (3, (16, 32, 16))])
def test_features_pooled_is_exactly_max_pool_of_features(dim: int, size: tuple[int, ...]) -> None:
    net = MNet(dim, 1, 3, n_s=2).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        assert torch.equal(net.features_pooled(x), _pool(net.features(x)))


def test_mnet_rejects_sizes_not_divisible_by_16() -> None:
    net = MNet(2, 1, 3, n_s=2)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="in_channels=1"):
        net(torch.zeros(1, 2, 32, 32))


def test_mnet_gradients_reach_every_parameter() -> None:
    net = MNet(2, 1, 3, n_s=2).train()
    net(torch.randn(2, 1, 32, 32)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_mnet_state_dict_keys_are_readable() -> None:
    keys = set(MNet(2, 1, 3, n_s=2).state_dict())
    assert "encoder.0.conv1.conv.weight" in keys
    assert "encoder.4.conv2.bn.running_mean" in keys
    assert "decoder.0.conv2.conv.weight" in keys
    assert {"head.weight", "head.bias"} <= keys
    assert not any(k.endswith("conv.bias") for k in keys)  # no bias before BatchNorm


@pytest.mark.cpu_dependent
def test_mnet_channels_last_and_bf16_autocast() -> None:
    net = MNet(2, 1, 3, n_s=2).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
            pooled = net.features_pooled(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert pooled.shape == (2, 62, 16, 16)
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)


@pytest.mark.cpu_dependent
def test_3d_max_pooling_stays_bf16_under_cpu_autocast() -> None:
    """CPU autocast lists max_pool3d as fp32: the M-Net pools in bf16 instead (exact), so no
    fp32 copy of a level is made and kept for backward (segfew.train.memory counts bf16)."""
    from segfew.models.blocks import max_pool_nd

    x = torch.randn(1, 3, 8, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.max_pool3d(x, 2).dtype == torch.float32  # what torch's autocast does
        pooled = max_pool_nd(x)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled.float(), F.max_pool3d(x.float(), 2))
    saved: list[torch.dtype] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 5 and not isinstance(t, nn.Parameter):
            saved.append(t.dtype)
        return t

    net = MNet(3, 1, 3, n_s=2)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 1, 48, 16, 16))  # no level two voxels deep (those train in fp32)
    assert torch.float32 not in saved  # nothing but the bf16 levels (and pooling indices)



@pytest.mark.parametrize("dim", [2, 3])
def test_concatenation_hands_back_gradients_in_the_outputs_memory_format(dim: int) -> None:
    """torch.cat's own backward gives each input a channel slice of the gradient, contiguous in
    no layout, which the upsampling backward then copied to NCHW."""
    from segfew.models.blocks import cat_channels

    fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
    parts = [torch.randn(2, c, *([4] * dim)).contiguous(memory_format=fmt).requires_grad_()
             for c in (3, 5)]
    out = cat_channels(parts)
    assert torch.equal(out, torch.cat(parts, dim=1))
    grad = torch.randn_like(out)
    mine = torch.autograd.grad(out, parts, grad)
    theirs = torch.autograd.grad(torch.cat(parts, dim=1), parts, grad)
    for g, ref in zip(mine, theirs, strict=True):
        assert torch.equal(g, ref)
        assert g.is_contiguous(memory_format=fmt)
    assert not theirs[1].is_contiguous(memory_format=fmt)  # what this replaces
    plain = [p.detach().contiguous().requires_grad_() for p in parts]
    g = torch.autograd.grad(cat_channels(plain), plain, grad.contiguous())
    assert all(t.is_contiguous() for t in g)



@pytest.mark.cpu_dependent
def test_3d_convolutions_two_voxels_deep_get_true_weight_gradients_in_bf16() -> None:
    """torch 2.13's oneDNN gets the bf16 weight gradient of a 3D convolution wrong for a
    batch of inputs two voxels deep (relative error ~1, or inf/NaN): the M-Net's deepest
    levels on 16³–32³ grids. segfew's Conv3d computes those layers in fp32."""
    from segfew.models.blocks import Conv3d, conv

    torch.manual_seed(0)
    layer = conv(3)(16, 16, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 16, 2, 8, 8)
    grads = []
    for low in (False, True):
        layer.weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            layer(x).float().square().sum().backward()
        grads.append(layer.weight.grad.clone())
    reference, bf16 = grads
    assert torch.isfinite(bf16).all()
    assert ((bf16 - reference).norm() / reference.norm()).item() < 0.05

    # every 3D network builds its layers with it
    assert all(type(m) is Conv3d for m in MNet(3, 1, 3, n_s=2).modules()
               if isinstance(m, nn.Conv3d))

# ---------------------------------------------------------------- FeatureClassifier


def _classifier(in_channels: int = 1, size: tuple[int, ...] = (32, 32), net_dim: int = 2,
                finetune: bool = False, r: int = 2) -> FeatureClassifier:
    seg = MNet(net_dim, 1, 3, n_s=2)
    return FeatureClassifier(seg, in_channels, 4, size, n_c=2, n_fc=8, r=r, finetune=finetune)


def test_frozen_classifier_gradients_reach_head_only() -> None:
    clf = _classifier().train()
    clf(torch.randn(3, 1, 32, 32)).sum().backward()
    head = [n for n, _ in clf.named_parameters() if not n.startswith("feature_net.")]
    assert head
    for name, p in clf.named_parameters():
        if name.startswith("feature_net."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_batchnorm_stays_in_eval_mode() -> None:
    clf = _classifier()
    clf.train()
    assert clf.training and not clf.feature_net.training
    assert all(not m.training for m in clf.feature_net.modules())
    frozen, head = _bn_stats(clf.feature_net), _bn_stats(clf.convs)
    clf(torch.randn(3, 1, 32, 32) * 5 + 2)
    for before, after in zip(frozen, _bn_stats(clf.feature_net), strict=True):
        assert torch.equal(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(head, _bn_stats(clf.convs), strict=True))


def test_finetune_makes_the_feature_net_trainable() -> None:
    clf = _classifier(finetune=True).train()
    assert clf.feature_net.training
    before = _bn_stats(clf.feature_net)
    clf(torch.randn(3, 1, 32, 32)).sum().backward()
    for name, p in clf.feature_net.named_parameters():
        if name.startswith("head."):  # the segmentation head is not on the feature path
            assert not p.requires_grad, name
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(not torch.equal(b, a)
               for b, a in zip(before, _bn_stats(clf.feature_net), strict=True))


def test_feature_net_weights_are_not_reinitialised() -> None:
    seg = MNet(2, 1, 3, n_s=2)
    state = {k: v.clone() for k, v in seg.state_dict().items()}
    FeatureClassifier(seg, 1, 4, (32, 32), n_c=2, n_fc=8, r=2)
    for k, v in seg.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_per_channel_features_are_concatenated() -> None:
    clf = _classifier(in_channels=2).eval()
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        f = clf.forward_features(x)
        net = clf.feature_net
        expected = torch.cat([net.features_pooled(x[:, c: c + 1]) for c in range(2)], dim=1)
        logits = clf(x)
    assert clf.num_features == 2 * net.num_features
    assert f.shape == (3, 2 * net.num_features, 16, 16)
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-6)
    assert logits.shape == (3, 4)


def test_2d_net_on_volumes_runs_slice_by_slice() -> None:
    clf = _classifier(in_channels=2, size=(32, 32, 8)).eval()
    assert clf.dim == 3
    x = torch.randn(2, 2, 32, 32, 8)
    net = clf.feature_net
    with torch.no_grad():
        f = clf.forward_features(x)
        per_slice = [torch.cat([net.features(x[:, c: c + 1, :, :, k]) for c in range(2)], dim=1)
                     for k in range(8)]
        expected = F.max_pool3d(torch.stack(per_slice, dim=-1), 2)
        logits = clf(x)
    assert f.shape == (2, 2 * net.num_features, 16, 16, 4)
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-6)
    assert logits.shape == (2, 4)


def test_3d_classifier_shapes_and_cached_head() -> None:
    seg = MNet(3, 1, 3, n_s=2)
    clf = FeatureClassifier(seg, 1, 3, (16, 16, 16), n_c=2, n_fc=8, r=2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        f = clf.forward_features(x)
        assert f.shape == (2, 14, 8, 8, 8)
        assert torch.equal(clf.forward_head(f), clf(x))


def test_classifier_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="channels"):
        FeatureClassifier(MNet(2, 3, 3, n_s=2), 2, 4, (32, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        FeatureClassifier(MNet(2, 1, 3, n_s=2), 1, 4, (40, 40))
    clf = _classifier()
    with pytest.raises(ValueError, match="expected"):
        clf(torch.zeros(1, 1, 48, 48))


def test_slice_pooling_averages_each_slices_log_probabilities() -> None:
    """pooling="slices": the 2D head on every slice, log-probabilities averaged."""
    seg = MNet(2, 1, 3, n_s=2)
    clf = FeatureClassifier(seg, 2, 4, (32, 32, 5), n_c=2, n_fc=8, r=2,
                            pooling="slices").eval()
    assert clf.dim == 2
    x = torch.randn(2, 2, 32, 32, 5)
    with torch.no_grad():
        f = clf.forward_features(x)
        logits = clf(x)
        one = clf.forward_head(f[..., 3:4])  # slice 3 alone
    assert f.shape == (2, 2 * seg.num_features, 16, 16, 5)  # the slices are not pooled
    expected = torch.stack([F.log_softmax(clf.forward_head(f[..., k: k + 1]), 1)
                            for k in range(5)]).mean(0)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(one, F.log_softmax(one, 1))  # already log-probabilities
    with pytest.raises(ValueError, match="slices"):
        FeatureClassifier(seg, 1, 4, (32, 32), pooling="slices")


def test_softmax_source_and_stats_pooling() -> None:
    """source="softmax" reads the segmentation's softmax maps; pooling="stats" their mean
    and std per channel over the whole image."""
    seg = MNet(2, 1, 3, n_s=2)
    clf = FeatureClassifier(seg, 2, 4, (32, 32, 4), n_fc=8, source="softmax",
                            pooling="stats").eval()
    x = torch.randn(3, 2, 32, 32, 4)
    with torch.no_grad():
        f = clf.forward_features(x)
        maps = torch.stack([torch.cat([torch.softmax(seg(x[:, c: c + 1, ..., k]), 1)
                                       for c in range(2)], 1) for k in range(4)], -1)
        logits = clf(x)
    assert clf.num_features == 2 * 3 and len(clf.convs) == 0
    torch.testing.assert_close(f[:, :6], maps.mean((2, 3, 4)))
    torch.testing.assert_close(f[:, 6:], maps.flatten(2).std(2, correction=0))
    torch.testing.assert_close(f[:, :6].reshape(3, 2, 3).sum(2), torch.ones(3, 2))
    assert logits.shape == (3, 4)
    # the head trains, the frozen network does not
    clf.train()
    clf(x).sum().backward()
    assert all(p.grad is None for p in seg.parameters())
    assert clf.classifier.fc1.weight.grad is not None
    pooled = FeatureClassifier(seg, 1, 4, (32, 32), n_c=2, n_fc=8, r=2, source="softmax")
    assert pooled.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="source"):
        FeatureClassifier(seg, 1, 4, (32, 32), source="logits")  # type: ignore[arg-type]


def test_short_axes_stop_pooling_at_one_voxel() -> None:
    """Cine MRI has 6–18 slices: an axis down to one voxel is no longer pooled."""
    assert pool_kernels((32, 32, 4), 4) == [(2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1)]
    clf = FeatureClassifier(MNet(2, 1, 3, n_s=2), 2, 4, (32, 32, 4), n_c=2, n_fc=8, r=3)
    assert clf(torch.randn(2, 2, 32, 32, 4)).shape == (2, 4)
    assert clf.classifier.fc1.in_features == 8 * 2 * 2 * 1  # n_c·2^(r-1) · 32/16 · 32/16 · 1
    vgg = VGGClassifier(3, 2, 5, (32, 32, 8), n_c=2, n_fc=8)
    assert vgg(torch.randn(2, 2, 32, 32, 8)).shape == (2, 5)
    # on grids large enough, the pooling is exactly the paper's 2^dim
    assert pool_kernels((128, 128), 5) == [(2, 2)] * 5


# ---------------------------------------------------------------- VGG classifiers


@pytest.mark.parametrize(("dim", "size"), [(2, (32, 64)), (3, (32, 32, 32))])
def test_vgg_classifier_shapes_and_gradients(dim: int, size: tuple[int, ...]) -> None:
    net = VGGClassifier(dim, 2, 5, size, n_c=2, n_fc=8).train()
    out = net(torch.randn(2, 2, *size))
    assert out.shape == (2, 5)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    keys = set(net.state_dict())
    assert "stages.4.conv3.conv.weight" in keys and "classifier.fc3.bias" in keys
    assert not any(k.startswith("stages.0.conv3") for k in keys)  # (2, 2, 3, 3, 3) convs


def test_vgg_classifier_without_fc_batchnorm() -> None:
    net = VGGClassifier(2, 1, 3, (32, 32), n_c=2, n_fc=8, fc_batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert net.classifier.fc1.bias is not None


# torchvision vgg16().features: conv layers at these indices, (out, in) channels
_TV_CONVS = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128),
             (12, 256, 256), (14, 256, 256), (17, 512, 256), (19, 512, 512), (21, 512, 512),
             (24, 512, 512), (26, 512, 512), (28, 512, 512)]
TORCHVISION_VGG16_FEATURES = {
    **{f"features.{i}.weight": (o, c, 3, 3) for i, o, c in _TV_CONVS},
    **{f"features.{i}.bias": (o,) for i, o, _ in _TV_CONVS},
}


@pytest.fixture(scope="module")
def imagenet_vgg() -> ImageNetVGGClassifier:
    return ImageNetVGGClassifier(num_classes=3, n_fc=8, in_channels=2)


def test_imagenet_vgg_keys_match_torchvision(imagenet_vgg: ImageNetVGGClassifier) -> None:
    state = imagenet_vgg.state_dict()
    features = {k: tuple(v.shape) for k, v in state.items() if k.startswith("features.")}
    assert len(TORCHVISION_VGG16_FEATURES) == 26
    assert features == TORCHVISION_VGG16_FEATURES
    assert not any(p.requires_grad for p in imagenet_vgg.features.parameters())
    assert all(p.requires_grad for p in imagenet_vgg.classifier.parameters())
    assert imagenet_vgg.train().features.training is False


def _fake_torchvision_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) for k, s in TORCHVISION_VGG16_FEATURES.items()}
    state["classifier.0.weight"] = torch.zeros(4, 5)  # a full vgg16 dict has a classifier too
    return state


def test_imagenet_vgg_loads_full_and_features_only_files(
        imagenet_vgg: ImageNetVGGClassifier, tmp_path: Path) -> None:
    full = _fake_torchvision_state(1)
    torch.save(full, tmp_path / "vgg16.pth")
    load_imagenet_vgg16(imagenet_vgg, tmp_path / "vgg16.pth")
    for key, value in imagenet_vgg.state_dict().items():
        if key.startswith("features."):
            assert torch.equal(value, full[key]), key
    only = {k.removeprefix("features."): v for k, v in _fake_torchvision_state(2).items()
            if k.startswith("features.")}
    torch.save(only, tmp_path / "features.pth")
    load_imagenet_vgg16(imagenet_vgg, tmp_path / "features.pth")
    assert torch.equal(imagenet_vgg.features[28].weight, only["28.weight"])


def test_imagenet_vgg_bad_files_raise_model_file_error(
        imagenet_vgg: ImageNetVGGClassifier, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ModelFileError, match="not found") as err:
        load_imagenet_vgg16(imagenet_vgg, missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    state = _fake_torchvision_state(3)
    state["features.28.weight"] = torch.zeros(512, 512, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ModelFileError, match=r"features\.28\.weight has shape"):
        load_imagenet_vgg16(imagenet_vgg, tmp_path / "shape.pth")
    del state["features.0.bias"]
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(ModelFileError, match=r"missing \(first: features\.0\.bias\)"):
        load_imagenet_vgg16(imagenet_vgg, tmp_path / "keys.pth")
    (tmp_path / "junk.pth").write_text("not a tensor file")
    with pytest.raises(ModelFileError, match=r"not a PyTorch state dict \(not a PyTorch file\)"):
        load_imagenet_vgg16(imagenet_vgg, tmp_path / "junk.pth")


def test_imagenet_vgg_forward_per_channel(imagenet_vgg: ImageNetVGGClassifier) -> None:
    net = imagenet_vgg.eval()
    x = torch.rand(1, 2, 224, 224) * 255
    with torch.no_grad():
        f = net.forward_features(x)
        logits = net.forward_head(f)
        single = net.features(x[:, 1:2].expand(-1, 3, -1, -1) - 128)
    assert f.shape == (1, 1024, 7, 7)
    assert logits.shape == (1, 3)
    torch.testing.assert_close(f[:, 512:], single)


# ---------------------------------------------------------------- init and registry


def test_glorot_uniform_init() -> None:
    net = MNet(2, 1, 3, n_s=4)
    checked = 0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = glorot_bound(m.weight)
            assert m.weight.abs().max() <= bound
            if m.weight.numel() >= 500:  # uniform(-b, b) has std b/√3
                assert abs(m.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
                checked += 1
            if m.bias is not None:
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert checked >= 10
    lin = nn.Linear(400, 300)
    init_glorot(lin)
    assert lin.weight.abs().max() <= math.sqrt(6 / 700) and lin.bias.abs().sum() == 0


def test_build_model_rebuilds_every_network() -> None:
    seg_args = {"dim": 2, "in_channels": 1, "num_labels": 3, "n_s": 2}
    seg = build_model("mnet", **seg_args)
    clf = build_model("feature_classifier", feature_net=build_model("mnet", **seg_args),
                      in_channels=2, num_classes=4, input_size=[32, 32], n_c=2, n_fc=8, r=2)
    assert isinstance(clf, FeatureClassifier) and clf.input_size == (32, 32)
    original = FeatureClassifier(seg, 2, 4, (32, 32), n_c=2, n_fc=8, r=2)  # type: ignore[arg-type]
    clf.load_state_dict(original.state_dict(), strict=True)
    vgg = build_model("vgg", dim=3, in_channels=1, num_classes=2, input_size=[32, 32, 32],
                      n_c=2, n_fc=4)
    assert isinstance(vgg, VGGClassifier)
    with pytest.raises(ValueError, match="unknown network"):
        build_model("resnet")


def test_training_engine_sees_frozen_features() -> None:
    from segfew.train import features_are_frozen

    x = torch.randn(2, 1, 32, 32)
    assert features_are_frozen(_classifier(), x)
    assert not features_are_frozen(_classifier(finetune=True), x)


# ---------------------------------------------------------------- measurements


def _measurements(n_per_class: int = 6, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Three classes told apart by an ejection fraction; a volume and noise beside it."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    ef = np.array([0.2, 0.45, 0.7])[y] + rng.normal(0, 0.03, y.size)
    volume = rng.lognormal(4, 0.3, y.size)
    noise = rng.normal(0, 1, y.size)
    names = ["LV_ejection_fraction_ED_ES", "LV_volume_ml_ED", "RV_solidity_ED"]
    return np.stack([ef, volume, noise], 1), y, names


def test_measurement_classifier_matches_its_fitted_choice_and_is_calibrated() -> None:
    from segfew.models import MeasurementClassifier
    from segfew.models.measures_selection import (
        CANDIDATES,
        predict_proba,
        select_classifier,
        transform,
    )

    x, y, names = _measurements()
    seg = MNet(2, 1, 3, n_s=2)
    for candidate in (c for c in CANDIDATES if c.subset == "all"):  # a forest and a logistic
        choice = select_classifier(x, y, names, num_classes=4, candidates=[candidate])
        assert choice.temperature > 0 and choice.cv_scores[candidate.label] > 0.8
        clf = MeasurementClassifier(seg, names, 4, **choice.shape_args)
        clf.load_choice(choice)
        logp = clf(torch.from_numpy(x))
        expected = predict_proba(choice, transform(x, names)) ** (1 / choice.temperature)
        expected /= expected.sum(1, keepdims=True)
        assert torch.allclose(torch.softmax(logp, 1), torch.from_numpy(expected).float(),
                              atol=1e-5), candidate
        assert float((logp.argmax(1) == torch.from_numpy(y)).float().mean()) > 0.9
        assert float(torch.softmax(logp, 1)[:, 3].max()) < 1e-3  # class 3 never seen
    assert not any(p.requires_grad for p in seg.parameters())
    # NaN (an absent structure) is imputed, never an error
    x_nan = x.copy()
    x_nan[0, 1] = np.nan
    assert torch.isfinite(clf(torch.from_numpy(x_nan))).all()
    # so is infinity (a ratio or shape measure of a degenerate structure), in fit and predict
    x_inf = x.copy()
    x_inf[1, 2], x_inf[2, 1] = np.inf, -np.inf
    choice = select_classifier(x_inf, y, names, num_classes=4, candidates=CANDIDATES[:1])
    assert np.isfinite(choice.median).all() and np.isfinite(choice.mean).all()
    assert torch.isfinite(clf(torch.from_numpy(x_inf))).all()


# ---------------------------------------------------------------- every registered network

#: the smallest settings of each registered network; a new entry in MODELS must add one here
TINY: dict[str, tuple[dict[str, object], tuple[int, ...]]] = {
    "mnet": ({"dim": 2, "in_channels": 1, "num_labels": 3, "n_s": 2}, (2, 1, 32, 32)),
    "feature_classifier": ({"in_channels": 2, "num_classes": 3, "input_size": (32, 32),
                            "n_c": 2, "n_fc": 8, "r": 2, "finetune": True}, (3, 2, 32, 32)),
    "measurement_classifier": ({"feature_names": ["A_volume_ml_0", "A_solidity_0"],
                                "num_classes": 3}, (3, 2)),
    "vgg": ({"dim": 3, "in_channels": 1, "num_classes": 2, "input_size": (16, 16, 16),
             "n_c": 2, "n_fc": 4}, (3, 1, 16, 16, 16)),
    "imagenet_vgg": ({"num_classes": 2, "n_fc": 4}, (2, 1, 224, 224)),
    "stats_head": ({"in_channels": 2, "num_features": 3, "num_classes": 2, "n_fc": 4},
                   (3, 6, 1, 1)),
}


#: networks fitted in closed form (the frameworks registry says which)
CLOSED_FORM = {f.network for f in FRAMEWORKS.values() if f.fitting == "closed-form"}


def test_every_registered_network_has_tiny_settings() -> None:
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_network_runs_forward_and_backward(name: str) -> None:
    """timm's habit: each network, at tiny sizes, gives finite outputs and trains."""
    torch.manual_seed(0)
    args, shape = TINY[name]
    kwargs = dict(args)
    if name in ("feature_classifier", "measurement_classifier"):
        kwargs["feature_net"] = build_model("mnet", dim=2, in_channels=1, num_labels=3, n_s=2)
    net = build_model(name, **kwargs).train()
    out = net(torch.randn(*shape))
    assert out.shape[0] == shape[0] and torch.isfinite(out).all()
    if name in CLOSED_FORM:  # fitted by scikit-learn, held as buffers: nothing to train
        assert not any(p.requires_grad for p in net.parameters())
        return
    out.float().square().mean().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert trainable, "a network with nothing to train"
    for pname, p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname



def test_model_selection_sees_only_the_training_rows_and_never_its_held_out_fold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from segfew.models import measures_selection as measures

    monkeypatch.setattr(measures, "SELECT_FROM", 2)  # every candidate scored at 3 per class
    x, y, names = _measurements(n_per_class=5)
    x[:, 2] = np.arange(len(y))  # a row id in a column no transform touches
    fits: list[set[int]] = []
    predicted: list[set[int]] = []
    real_fit, real_predict = measures._fit, measures.predict_proba

    def spy_fit(cand, xs, ys, *args):  # type: ignore[no-untyped-def]
        fits.append({int(v) for v in xs[:, 2]})
        return real_fit(cand, xs, ys, *args)

    def spy_predict(choice, xs):  # type: ignore[no-untyped-def]
        predicted.append({int(v) for v in xs[:, 2]})
        return real_predict(choice, xs)

    train = np.arange(len(y)) % 3 != 0  # 10 of 15 rows; the others play the test set
    measures.predict_proba = spy_predict  # type: ignore[assignment]
    try:
        choice = measures.select_classifier(x[train], y[train], names, 3, fit=spy_fit)
    finally:
        measures.predict_proba = real_predict  # type: ignore[assignment]
    seen_rows = set(np.flatnonzero(train).tolist())
    assert all(rows <= seen_rows for rows in fits + predicted)  # no test row, ever
    inner = list(zip(fits[:-1], predicted, strict=True))
    folds = int(np.bincount(y[train]).min())  # k-fold with k = the smallest class (3 here)
    assert folds == 3 and len(inner) == len(measures.CANDIDATES) * folds
    assert all(not (fit_rows & held) and fit_rows | held == seen_rows for fit_rows, held in inner)
    assert fits[-1] == seen_rows  # the chosen model is refitted on the whole training set
    assert set(choice.cv_scores) == {c.label for c in measures.CANDIDATES}
