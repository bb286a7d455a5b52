"""Backbones: real weights, real classification, layer shapes, one pass == truncated networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2, vgg16

from layerseek.backbones import BACKBONES, FeatureExtractor, get_spec
from layerseek.backbones.weights import load_state_dict
from layerseek.errors import UnknownNameError, WeightsError
from layerseek.images import load_image

CATEGORIES = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


def test_vgg16_fingerprint():
    state = load_state_dict("vgg16")
    # DESIGN.md: the Keras ImageNet weights' first and last conv biases.
    assert float(state["0.bias"][0]) == pytest.approx(0.73429835, abs=1e-7)
    assert float(state["28.bias"][0]) == pytest.approx(0.18837857, abs=1e-7)
    assert tuple(state["0.weight"].shape) == (64, 3, 3, 3)
    assert len(state) == 26


@pytest.mark.parametrize(
    "backbone, image, expected",
    [
        ("mobilenet_v2", "500.jpg", {"African elephant", "tusker", "Indian elephant"}),
        ("mobilenet_v2", "700.jpg", {"sorrel"}),
        ("mobilenet_v2", "310.jpg", {"trolleybus", "minibus", "school bus", "passenger car"}),
        ("efficientnet_lite0", "500.jpg", {"African elephant", "tusker", "Indian elephant"}),
        ("efficientnet_lite0", "700.jpg", {"sorrel"}),
    ],
)
def test_imagenet_top5_on_real_photo(make_extractor, data_dir, backbone, image, expected):
    fx = make_extractor(backbone, ["logits"])
    arr = load_image(data_dir / "corel1k/jpg" / image, max_side=None)
    logits = fx(arr)["logits"][0]
    top5 = [CATEGORIES[i] for i in logits.topk(5).indices.tolist()]
    assert CATEGORIES[int(logits.argmax())] in expected, top5
    assert len(expected & set(top5)) >= 1


def test_mobilenet_matches_torchvision_model(make_extractor, data_dir):
    """Our staged MobileNetV2 equals torchvision's own model with the same state dict."""
    fx = make_extractor("mobilenet_v2", ["logits"])
    ref = mobilenet_v2()
    ref.load_state_dict(load_state_dict("mobilenet_v2"))
    ref.eval()
    x = fx.preprocess(load_image(data_dir / "corel1k/jpg/500.jpg"))
    with torch.inference_mode():
        expected = ref(x.contiguous())
    assert torch.allclose(fx.forward(x)["logits"], expected, atol=1e-4, rtol=1e-4)


EXPECTED_1024x768 = {
    "vgg16": {"conv3_3": (256, 192, 256), "conv4_3": (512, 96, 128), "conv5_3": (512, 48, 64), "pool5": (512, 24, 32)},
    "mobilenet_v2": {"s8": (32, 96, 128), "s16": (96, 48, 64), "s32": (320, 24, 32), "last": (1280, 24, 32)},
    "efficientnet_lite0": {"s8": (40, 96, 128), "s16": (112, 48, 64), "s32": (320, 24, 32), "last": (1280, 24, 32)},
}


@pytest.mark.parametrize("backbone", sorted(EXPECTED_1024x768))
def test_layer_shapes_1024x768(make_extractor, backbone):
    want = EXPECTED_1024x768[backbone]
    fx = make_extractor(backbone, list(want))
    img = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    out = fx(img)
    assert set(out) == set(want)
    spec = get_spec(backbone)
    for name, shape in want.items():
        assert tuple(out[name].shape) == (1, *shape)
        assert shape[0] == spec.layers[name].channels
        assert 768 // spec.layers[name].stride == shape[1] and 1024 // spec.layers[name].stride == shape[2]
        assert out[name].dtype == torch.float32 and out[name].is_contiguous()


def test_odd_sizes_follow_each_padding_rule(make_extractor):
    img = np.random.default_rng(1).integers(0, 256, (333, 517, 3), dtype=np.uint8)
    v = make_extractor("vgg16", ["conv5_3"])(img)["conv5_3"]
    assert tuple(v.shape[-2:]) == (333 // 16, 517 // 16)  # floor: max-pools drop the remainder
    e = make_extractor("efficientnet_lite0", ["s32"])(img)["s32"]
    assert tuple(e.shape[-2:]) == (-(-333 // 32), -(-517 // 32))  # ceil: TF 'SAME' padding


def test_vgg16_one_pass_equals_truncated_networks(vgg16_all):
    """Every VGG16 layer from the one pass equals torchvision's vgg16().features cut after it."""
    ref = vgg16().features
    ref.load_state_dict(load_state_dict("vgg16"))
    ref.eval()
    img = np.random.default_rng(2).integers(0, 256, (72, 104, 3), dtype=np.uint8)
    x = vgg16_all.preprocess(img)
    out = vgg16_all.forward(x)
    cut = {"conv1_1": 2, "conv1_2": 4, "pool1": 5, "conv2_2": 9, "pool2": 10, "conv3_3": 16, "pool3": 17,
           "conv4_3": 23, "pool4": 24, "conv5_1": 26, "conv5_3": 30, "pool5": 31}
    with torch.inference_mode():
        for name, end in cut.items():
            expected = ref[:end](x.contiguous())
            torch.testing.assert_close(out[name], expected, rtol=1e-4, atol=1e-3 * float(expected.abs().max()))


def test_mobilenet_one_pass_equals_truncated(make_extractor):
    fx = make_extractor("mobilenet_v2", ["s4", "s8", "s16", "s32", "last"])
    ref = mobilenet_v2()
    ref.load_state_dict(load_state_dict("mobilenet_v2"))
    ref.eval()
    x = fx.preprocess(np.random.default_rng(3).integers(0, 256, (100, 140, 3), dtype=np.uint8))
    out = fx.forward(x)
    with torch.inference_mode():
        for name, end in {"s4": 4, "s8": 7, "s16": 14, "s32": 18, "last": 19}.items():
            torch.testing.assert_close(out[name], ref.features[:end](x.contiguous()), rtol=1e-4, atol=1e-4)


def test_batches_grouped_by_size_equal_single_images(make_extractor):
    fx = make_extractor("mobilenet_v2", ["s16", "last"])
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
            [(64, 96, 3), (80, 64, 3), (64, 96, 3), (64, 96, 3), (80, 64, 3)]]
    got = dict(fx.extract(imgs, batch_size=2))
    assert sorted(got) == list(range(5))
    for i, im in enumerate(imgs):
        single = fx(im)
        for k in single:
            torch.testing.assert_close(got[i][k], single[k], rtol=1e-4, atol=1e-4)


def test_unknown_names_list_valid_ones(make_extractor):
    with pytest.raises(UnknownNameError, match="valid: efficientnet_lite0, .*mobilenet_v2, vgg16"):
        FeatureExtractor("resnet50")
    with pytest.raises(UnknownNameError, match="unknown layer 'fc7' for vgg16; valid: conv1_1"):
        make_extractor("vgg16", ["fc7"])


def test_missing_weights_name_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEEK_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="layerseek models pull vgg16"):
        FeatureExtractor("vgg16")


def test_users_own_torchvision_file(tmp_path):
    """A torchvision-format VGG16 file (features.* and classifier.* keys) given by path."""
    model = vgg16()
    state = model.state_dict()
    ours = load_state_dict("vgg16")
    state.update({f"features.{k}": v for k, v in ours.items()})
    path = tmp_path / "vgg16_own.pth"
    torch.save(state, path)
    fx = FeatureExtractor("vgg16", ["conv2_1"], weights=path)
    torch.testing.assert_close(fx.net.holder[0].bias, ours["0.bias"])
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="not VGG16 conv weights"):
        FeatureExtractor("vgg16", weights=bad)
    with pytest.raises(WeightsError, match="not found"):
        FeatureExtractor("vgg16", weights=tmp_path / "nope.pth")


def test_every_backbone_is_registered_with_layers():
    assert {"vgg16", "mobilenet_v2", "efficientnet_lite0"} <= set(BACKBONES)
    for spec in BACKBONES.values():
        assert set(spec.default_layers) <= set(spec.layers)
