"""The fine-tuned network: a backbone, global average pooling and a custom head.

The head is position-wise (dense layers on the channel axis), so applying it at every cell of
the last feature map gives class activation maps whose spatial mean equals the logits when the
head is linear (Zhou et al., 2016).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn


class Backbone(nn.Module):
    """A feature extractor as ordered, named layer groups; forward gives the last feature map."""

    def __init__(self, name: str, groups: list[tuple[str, nn.Module]], num_features: int) -> None:
        super().__init__()
        self.name = name
        self.groups = nn.ModuleDict(dict(groups))
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for group in self.groups.values():
            x = group(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


def build_head(
    in_features: int, num_classes: int, hidden: Sequence[int], dropout: float
) -> nn.Module:
    """Dropout + dense layers (ReLU between) ending in one output per class."""
    layers: list[nn.Module] = []
    width = in_features
    for units in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, units), nn.ReLU(inplace=True)]
        width = units
    layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def standardize_scans(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each scan to zero mean and unit variance over its pixels and channels.

    Undoes a site's exposure and contrast (any affine map of the pixel values, clipping
    aside) before the network sees the scan; a blank scan becomes all zeros.
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return (x - mean) / (std + eps)


class Classifier(nn.Module):
    """[per-scan standardization →] backbone features → average pool → head; `forward`
    returns logits."""

    def __init__(self, backbone: Backbone, head: nn.Module, per_scan_norm: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.per_scan_norm = per_scan_norm

    @property
    def group_names(self) -> list[str]:
        return [*self.backbone.groups.keys(), "classifier"]

    def group_modules(self) -> dict[str, nn.Module]:
        """Ordered layer groups, the backbone's then the new head ("classifier")."""
        return {**dict(self.backbone.groups.items()), "classifier": self.head}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map, of the standardized scans when `per_scan_norm`."""
        return self.backbone(standardize_scans(x) if self.per_scan_norm else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, K) and class activation maps (N, K, h, w) from one backbone pass."""
        features = self.forward_features(x)
        logits = self.head(features.mean(dim=(2, 3)))
        cam = self.head(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return logits, cam


class Ensemble(nn.Module):
    """Several classifiers (k fold models), and optionally each one's view of the mirrored
    scan, averaged into one: mean logits and mean CAMs (a mirrored view's CAM mirrored back).

    Logits are averaged rather than probabilities so that the graph keeps one `logits` output
    whose softmax is `probabilities`, exactly as for a single model.
    """

    def __init__(self, members: Sequence[Classifier], hflip: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.hflip = hflip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        views = torch.cat([x, x.flip(3)]) if self.hflip else x
        logits, cams = [], []
        for member in self.members:
            member_logits, cam = cast(Classifier, member).forward_all(views)
            if self.hflip:  # one pass over both views, split and mirrored back
                member_logits = (member_logits[:n] + member_logits[n:]) / 2
                cam = (cam[:n] + cam[n:].flip(3)) / 2
            logits.append(member_logits)
            cams.append(cam)
        return torch.stack(logits).mean(dim=0), torch.stack(cams).mean(dim=0)


class ExportModule(nn.Module):
    """What goes into the ONNX graph: calibrated probabilities, logits and CAM."""

    def __init__(self, classifier: Classifier | Ensemble, temperature: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.temperature: torch.Tensor
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, cam = self.classifier.forward_all(image)
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        return probabilities, logits, cam
