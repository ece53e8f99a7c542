"""ONNX export: names, dynamic batch, temperature in the graph, CAM, parity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.backbones import create_backbone
from models.evaluate import softmax
from models.export import ExportError, check_parity, export_onnx, onnx_outputs
from models.network import Classifier, build_head


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Classifier, Path]:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", pretrained=False, in_chans=1)
    model = Classifier(backbone, build_head(backbone.num_features, 3, [16], 0.3)).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path, size=64, channels=1, temperature=2.0)
    return model, path


def test_graph_names_and_dynamic_batch(exported: tuple[Classifier, Path]) -> None:
    import onnx

    _, path = exported
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["probabilities", "logits", "cam"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 5):
        out = onnx_outputs(path, np.random.rand(n, 1, 64, 64).astype(np.float32))
        assert out["probabilities"].shape == (n, 3)
        assert out["cam"].shape == (n, 3, 2, 2)


def test_temperature_is_applied_inside_the_graph(exported: tuple[Classifier, Path]) -> None:
    _, path = exported
    out = onnx_outputs(path, np.random.rand(4, 1, 64, 64).astype(np.float32))
    assert np.allclose(out["probabilities"], softmax(out["logits"], 2.0), atol=1e-6)
    assert not np.allclose(out["probabilities"], softmax(out["logits"]), atol=1e-3)


def test_parity_is_measured_and_enforced(exported: tuple[Classifier, Path]) -> None:
    model, path = exported
    images = np.random.default_rng(0).random((32, 1, 64, 64), dtype=np.float32)
    parity = check_parity(path, model, images, temperature=2.0)
    assert parity.images == 32 and parity.max_abs_diff < 1e-5
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_parity(path, model, images, temperature=0.5)
    with pytest.raises(ExportError, match="at least 32"):
        check_parity(path, model, images[:8], temperature=2.0)


def test_per_scan_standardization_is_in_the_graph_and_undoes_exposure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", pretrained=False, in_chans=1)
    head = build_head(backbone.num_features, 2, [], 0.0)
    model = Classifier(backbone, head, per_scan_norm=True).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, size=32, channels=1, temperature=1.0)
    images = np.random.default_rng(1).random((32, 1, 32, 32), dtype=np.float32)
    assert check_parity(path, model, images, temperature=1.0).max_abs_diff < 1e-5
    # another site's exposure and contrast: an affine map of the same scans' pixels
    exposed = 0.4 * images + 0.3
    base = onnx_outputs(path, images)["logits"]
    assert np.allclose(onnx_outputs(path, exposed)["logits"], base, atol=1e-3)
    plain = Classifier(backbone, head).eval()  # the same weights without it do see the change
    with torch.no_grad():
        before, after = (plain(torch.from_numpy(x)).numpy() for x in (images, exposed))
    assert not np.allclose(before, after, atol=1e-2)
