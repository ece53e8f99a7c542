"""The recipe's parts: phases, freezing, per-group LRs, schedule, loss weights, augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.augment import augment, mixup
from models.backbones import create_backbone
from models.finetune import (
    class_weights,
    epoch_order,
    make_optimizer,
    make_scheduler,
    plan_phases,
    set_trainable,
    trainable_groups,
)
from models.network import Classifier, build_head
from models.spec import AugmentSpec, PhaseSpec


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False, in_chans=1)
    return Classifier(backbone, build_head(backbone.num_features, 2, [], 0.2))


def test_default_phases_train_the_head_first(spec_factory) -> None:
    phases = plan_phases(spec_factory(epochs=6))
    assert [(p.epochs, p.unfreeze_from) for p in phases] == [(1, None), (5, "stage3")]
    assert plan_phases(spec_factory(epochs=1))[0].unfreeze_from is None


def test_explicit_phases_win(spec_factory) -> None:
    spec = spec_factory(recipe={"phases": [{"epochs": 2, "unfreeze_from": "stage6", "lr": 1e-4}]})
    assert [(p.epochs, p.unfreeze_from, p.lr) for p in plan_phases(spec)] == [(2, "stage6", 1e-4)]


def test_trainable_groups_respect_freeze_until(model: Classifier) -> None:
    head_only = PhaseSpec(epochs=1)
    assert trainable_groups(model, head_only, None) == ["classifier"]
    late = PhaseSpec(epochs=1, unfreeze_from="stage5")
    assert trainable_groups(model, late, None) == [
        "stage5",
        "stage6",
        "stage7",
        "head",
        "classifier",
    ]
    assert trainable_groups(model, late, "stage6") == ["stage7", "head", "classifier"]
    with pytest.raises(ValueError, match="no layer group 'stage9'"):
        trainable_groups(model, PhaseSpec(epochs=1, unfreeze_from="stage9"), None)


def test_frozen_groups_keep_batchnorm_in_eval(model: Classifier) -> None:
    set_trainable(model, ["stage7", "head", "classifier"])
    groups = model.group_modules()
    frozen_bn = [m for m in groups["stage2"].modules() if isinstance(m, nn.BatchNorm2d)]
    live_bn = [m for m in groups["stage7"].modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert live_bn and all(m.training for m in live_bn)
    assert not any(p.requires_grad for p in groups["stem"].parameters())
    assert all(p.requires_grad for p in groups["classifier"].parameters())
    before = groups["stage2"][0].bn1.running_mean.clone()
    model(torch.rand(4, 1, 32, 32))
    assert torch.equal(groups["stage2"][0].bn1.running_mean, before)


def test_discriminative_learning_rates(model: Classifier) -> None:
    trainable = ["stage7", "head", "classifier"]
    set_trainable(model, trainable)
    phase = PhaseSpec(epochs=1, unfreeze_from="stage7", lr=1e-3, lr_decay=0.5)
    opt = make_optimizer(model, trainable, phase, weight_decay=0.01)
    lrs = {(g["group"], g["weight_decay"]): g["lr"] for g in opt.param_groups}
    assert lrs[("classifier", 0.01)] == pytest.approx(1e-3)
    assert lrs[("head", 0.01)] == pytest.approx(5e-4)
    assert lrs[("stage7", 0.0)] == pytest.approx(2.5e-4)  # BN/bias parameters: no decay
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in model.group_modules()["stage6"].parameters()}


def test_warmup_then_cosine() -> None:
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == sorted(lrs[:4]) and lrs[0] < 0.3
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] < 0.01


def test_class_weights_balance_the_loss() -> None:
    w = class_weights(np.array([0, 1, 1, 1]), 2)
    assert w.tolist() == pytest.approx([2.0, 2 / 3])


def test_balanced_sampler_draws_classes_evenly() -> None:
    labels = np.array([0] * 100 + [1] * 900)
    order = epoch_order(labels, True, torch.Generator().manual_seed(0))
    assert abs(float((labels[order.numpy()] == 0).mean()) - 0.5) < 0.05
    plain = epoch_order(labels, False, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(1000))


def test_augment_is_seeded_bounded_and_small() -> None:
    ramp = torch.linspace(0.2, 0.8, 32)
    x = (ramp[:, None] * ramp[None, :]).expand(8, 1, 32, 32).contiguous()  # smooth, like a scan
    spec = AugmentSpec()
    a = augment(x, spec, torch.Generator().manual_seed(3))
    b = augment(x, spec, torch.Generator().manual_seed(3))
    c = augment(x, spec, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert 0.001 < (a - x).abs().mean() < 0.1


def test_augment_without_strength_is_identity_and_flip_mirrors() -> None:
    x = torch.rand(4, 1, 16, 16)
    still = AugmentSpec(rotate_degrees=0, translate=0, scale=(1, 1), brightness=0, contrast=0)
    assert torch.allclose(augment(x, still, torch.Generator()), x, atol=1e-5)
    flip = still.model_copy(update={"hflip": True})
    out = augment(x, flip, torch.Generator().manual_seed(0))
    for i in range(4):
        assert torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(
            out[i], x[i].flip(-1), atol=1e-5
        )


def test_mixup_blends_each_scan_with_one_partner_by_a_seeded_weight() -> None:
    x = torch.rand(16, 1, 8, 8)
    out, partner, lam = mixup(x, 0.4, torch.Generator().manual_seed(5))
    again = mixup(x, 0.4, torch.Generator().manual_seed(5))
    assert torch.equal(out, again[0]) and torch.equal(partner, again[1]) and lam == again[2]
    assert 0.0 < lam < 1.0 and sorted(partner.tolist()) == list(range(16))
    assert torch.allclose(out, lam * x + (1 - lam) * x[partner])
    other = mixup(x, 0.4, torch.Generator().manual_seed(6))
    assert other[2] != lam


def test_a_mixup_run_trains_reproducibly_and_differs_from_one_without(
    spec_factory: Any, tmp_path: Path
) -> None:
    from models.runner import run_training

    spec = spec_factory(epochs=2, image_size=24, dataset={"limit": 64})
    mixed = spec_factory(
        epochs=2, image_size=24, dataset={"limit": 64}, recipe={"mixup_alpha": 0.4}
    )
    plain = run_training(spec, tmp_path / "plain").history[-1]["train_loss"]
    first = run_training(mixed, tmp_path / "a").history[-1]["train_loss"]
    second = run_training(mixed, tmp_path / "b").history[-1]["train_loss"]
    assert first == second and first != plain


def test_a_per_scan_norm_job_exports_a_model_blind_to_exposure(
    spec_factory: Any, tmp_path: Path
) -> None:
    from models.export import onnx_outputs
    from models.runner import run_training

    spec = spec_factory(
        epochs=1, image_size=24, dataset={"limit": 64}, recipe={"input_norm": "per_scan"}
    )
    run_training(spec, tmp_path)
    scans = np.random.default_rng(2).random((8, 1, 24, 24), dtype=np.float32)
    logits = onnx_outputs(tmp_path / "model.onnx", scans)["logits"]
    darker = onnx_outputs(tmp_path / "model.onnx", 0.5 * scans - 0.2)["logits"]
    assert np.allclose(logits, darker, atol=1e-3)
    assert not np.allclose(logits[0], logits[1], atol=1e-4)  # it still tells scans apart


def test_cam_averages_to_the_logits_for_a_linear_head(model: Classifier) -> None:
    model.eval()
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        logits, cam = model.forward_all(x)
    assert cam.shape == (3, 2, 3, 3)
    assert torch.allclose(cam.mean(dim=(2, 3)), logits, atol=1e-5)
    assert torch.allclose(model(x), logits)
