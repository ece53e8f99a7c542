"""The per-scan input check's profile (`models.input_profile`) on the real PneumoniaMNIST
scans: the share of scans like the training ones it flags, what it catches, the card field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from models import scans
from models.card import (
    Calibration,
    DatasetInfo,
    InputSpec,
    ModelCard,
    Parity,
    TrainingInfo,
)
from models.input_profile import PROFILE_VERSION, QUANTILE, Checker, colourfulness, profile, usable


@dataclass
class Scans:
    images: np.ndarray
    colour: np.ndarray | None = None


@pytest.fixture(scope="module")
def decoded(pneumonia_npz: Path) -> dict[str, np.ndarray]:
    """The scans as decoded (N, 28, 28) in [0, 1], by split."""
    with np.load(pneumonia_npz) as data:
        return {s: data[f"{s}_images"].astype(np.float32) / 255 for s in ("train", "val")}


def prepared(images: np.ndarray | list[np.ndarray], size: int = 32, channels: int = 1) -> Scans:
    """Scans prepared as the trainer and the service prepare them, with their colour."""
    return Scans(
        np.stack([scans.prepare(im, size, channels) for im in images]),
        np.array([colourfulness(im) for im in images], np.float32),
    )


@pytest.fixture(scope="module")
def halves(decoded: dict[str, np.ndarray]) -> tuple[Scans, Scans]:
    """The training split in two random halves: one to profile, one held out."""
    order = np.random.default_rng(0).permutation(len(decoded["train"]))
    half = len(order) // 2
    train = decoded["train"]
    return prepared(train[order[:half]]), prepared(train[order[half:]])


def test_the_limit_flags_about_half_a_percent_of_scans_like_the_training_ones(
    halves: tuple[Scans, Scans], decoded: dict[str, np.ndarray]
) -> None:
    fitted, held_out = halves
    found = profile(fitted, prepared(decoded["val"]))
    assert found is not None and found.version == PROFILE_VERSION
    assert found.images == len(fitted.images) and found.quantile == QUANTILE
    assert found.flagged_train == pytest.approx(1 - QUANTILE, abs=0.002)
    checker = Checker(found)
    share = float(np.mean(checker.scores_of(held_out.images, held_out.colour) > found.limit))
    assert 0.001 <= share <= 0.015, share  # ~2,350 scans the profile never saw
    assert found.flagged_val is not None and found.flagged_val <= 0.02


def test_inverted_rotated_blank_noise_colour_and_text_are_flagged(
    halves: tuple[Scans, Scans], decoded: dict[str, np.ndarray]
) -> None:
    found = profile(halves[0])
    assert found is not None
    checker = Checker(found)
    val = decoded["val"][:200]
    rng = np.random.default_rng(0)
    unlike = {
        "inverted": [1.0 - im for im in val],
        "rotated": [np.rot90(im).copy() for im in val],
        "blank": [np.full((256, 256), v, np.float32) for v in np.linspace(0, 1, 20)],
        "noise": [rng.random((256, 256), np.float32) for _ in range(20)],
        "tinted": [np.stack([im, im * 0.8, im * 0.6], axis=-1) for im in val],
    }
    for name, images in unlike.items():
        foreign = prepared(images)
        share = np.mean(checker.scores_of(foreign.images, foreign.colour) > found.limit)
        assert share >= 0.95, (name, share)
    typical = prepared(val)
    assert np.mean(checker.scores_of(typical.images, typical.colour) > found.limit) < 0.03


def test_a_colour_photo_is_caught_by_its_colour_even_for_a_gray_model(
    halves: tuple[Scans, Scans], decoded: dict[str, np.ndarray]
) -> None:
    scan = decoded["val"][0]
    assert colourfulness(scan) == 0.0
    assert colourfulness(np.stack([scan] * 3, axis=-1)) == 0.0  # gray saved as RGB
    photo = np.zeros((600, 500, 3), np.float32)
    photo[..., 0], photo[..., 1], photo[..., 2] = 0.9, 0.5, 0.2
    assert colourfulness(photo) == pytest.approx(0.7, abs=1e-6)
    # The scan in colour: a gray model sees the same luminance, and its colour is flagged.
    found = profile(halves[0])
    assert found is not None
    tinted = np.stack([scan * 1.1, scan, scan * 0.8], axis=-1).clip(0, 1)
    as_fed = scans.prepare(tinted, 32, 1)
    assert Checker(found).score(as_fed, 0.0) <= found.limit
    assert Checker(found).score(as_fed, colourfulness(tinted)) > found.limit


def test_gray_replicated_to_three_channels_scores_as_one_channel(
    decoded: dict[str, np.ndarray],
) -> None:
    gray, rgb = prepared(decoded["train"][:300]), prepared(decoded["train"][:300], channels=3)
    one, three = profile(gray), profile(rgb)
    assert one is not None and three is not None
    assert one.limit == pytest.approx(three.limit, rel=1e-4)
    scan = scans.prepare(decoded["val"][0], 32, 3)
    assert Checker(three).score(scan) == pytest.approx(Checker(one).score(scan[:1]), rel=1e-4)


def test_sizes_that_the_thumbnail_does_not_divide(decoded: dict[str, np.ndarray]) -> None:
    """The thumbnail averages unequal areas (28 and 50 px) and shrinks below 16 px."""
    for size, side in ((28, 16), (50, 16), (12, 12)):
        found = profile(prepared(decoded["train"][:100], size=size))
        assert found is not None and len(found.thumbnail_mean) == side
        assert 0.0 < Checker(found).score(scans.prepare(decoded["val"][0], size, 1)) < 10


def test_scans_all_alike_give_a_limit_a_card_can_hold(decoded: dict[str, np.ndarray]) -> None:
    same = prepared([decoded["train"][0]] * 20)
    found = profile(same)
    assert found is not None and found.limit >= 1.0
    assert type(found).model_validate_json(found.model_dump_json()) == found  # limit > 0 holds
    assert Checker(found).score(same.images[0]) <= found.limit
    assert Checker(found).score(1.0 - same.images[0]) > found.limit


def test_the_card_round_trips_its_profile_and_older_cards_have_none(
    halves: tuple[Scans, Scans],
) -> None:
    plain = ModelCard(
        name="chest",
        classes=("normal", "pneumonia"),
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="efficientnet_lite0",
        dataset=DatasetInfo(uri="/data/x.npz", format="npz", sha256="0" * 64),
        calibration=Calibration(temperature=1.3, applied_in_graph=True),
        parity=Parity(max_abs_diff=1e-6, images=32, tolerance=1e-4),
        training=TrainingInfo(
            seconds=1.0, device="cpu", hardware="test", epochs_run=1, best_epoch=1, seed=0
        ),
        onnx_sha256="0" * 64,
    )
    found = profile(halves[0])
    card = plain.model_copy(update={"input_profile": found})
    again = ModelCard.from_json(card.to_json())
    assert again == card and again.input_profile == found
    older = json.loads(plain.to_json())
    del older["input_profile"]  # as cards were written before the field
    assert ModelCard.from_json(json.dumps(older)).input_profile is None
    assert usable(None) is None
    assert found is not None
    assert usable(found.model_copy(update={"version": PROFILE_VERSION + 1})) is None
