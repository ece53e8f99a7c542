"""Stratified splits that keep each patient's scans on one side.

A hospital's set holds several scans of many patients (both lungs' views, a follow-up). Split
scan by scan, the same patient's scans land in training and validation, and the validation
figures, the threshold and the card's intervals measure how well the model recognises a
patient it has seen, not a new one. Where the data names patients (`models.data`: a CSV
manifest's `patient` column, else each DICOM file's Patient ID), every split here, the
validation split, `dataset.limit`'s subsample, cross-validation and search folds, deals whole
patients, keeping each class's share about even (the greedy deal of scikit-learn's
StratifiedGroupKFold, written here for the few lines it takes rather than adding scikit-learn
for it). Patients are numbers here, never their IDs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np


class Labelled(Protocol):
    @property
    def label(self) -> int: ...

    @property
    def group(self) -> int | None: ...


T = TypeVar("T", bound=Labelled)


def group_id(kind: str, value: str) -> int:
    """A number standing for a patient (`kind` "patient") or a lone scan ("scan"): the same
    for the same value wherever it is read, and no way back to it."""
    digest = hashlib.sha256(f"{kind}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def patient_in_dicom(path: Path) -> str | None:
    """The Patient ID of a DICOM file (None: not DICOM, unreadable, or none given)."""
    import pydicom

    try:
        with path.open("rb") as fh:
            if fh.read(132)[128:] != b"DICM":
                return None
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # unreadable: the data check reports it, with its reason
        return None
    return str(ds.get("PatientID") or "").strip() or None


def split_items(
    items: Sequence[T], fraction: float, seed: int, by_patient: bool
) -> tuple[list[T], list[T]]:
    """About `fraction` of each class (at least one) second; whole patients when
    `by_patient` (each item's `group`), else scan by scan."""
    if by_patient:
        labels = np.array([it.label for it in items])
        groups = np.array([it.group for it in items], dtype=np.int64)
        kept, held = holdout(labels, groups, fraction, seed)
        return [items[i] for i in kept], [items[i] for i in held]
    rng = np.random.default_rng(seed)
    first: list[T] = []
    second: list[T] = []
    for label in sorted({it.label for it in items}):
        members = [it for it in items if it.label == label]
        order = rng.permutation(len(members))
        n_second = min(len(members) - 1, max(1, round(len(members) * fraction)))
        second += [members[i] for i in order[:n_second]]
        first += [members[i] for i in order[n_second:]]
    return first, second


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number 0..k-1 per scan; each class is dealt round-robin in a seeded order."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # continue the deal, so fold sizes differ by at most one
    return folds


def folds(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """A fold number per scan: whole patients per fold when `groups` names them."""
    if groups is None:
        return stratified_folds(labels, k, seed)
    return group_folds(labels, groups, k, seed)


def group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number 0..k-1 per scan, each group (patient) wholly in one fold: groups in a
    seeded order, the most lopsided first, each to the fold where the classes' shares across
    folds then spread least (the smaller fold on a tie)."""
    classes, label_index = np.unique(labels, return_inverse=True)
    ids, group_index = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(ids), len(classes)))
    np.add.at(counts, (group_index, label_index), 1)
    totals = counts.sum(axis=0)
    order = np.random.default_rng(seed).permutation(len(ids))
    order = order[np.argsort(-counts[order].std(axis=1), kind="stable")]
    dealt = np.zeros((k, len(classes)))
    fold_of = np.empty(len(ids), dtype=np.int64)
    for group in order:
        spreads = []
        for fold in range(k):
            dealt[fold] += counts[group]
            spreads.append((float((dealt / totals).std(axis=0).mean()), dealt[fold].sum(), fold))
            dealt[fold] -= counts[group]
        best = min(spreads)[2]
        dealt[best] += counts[group]
        fold_of[group] = best
    return fold_of[group_index]


def holdout(
    labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept and held out: about `fraction` of each class held out (at least one).
    With `groups`, whole patients; when no deal of whole patients leaves every class on both
    sides (a class of one patient), scan by scan. Returns sorted index arrays."""
    if groups is not None:
        found = _group_holdout(labels, groups, fraction, seed)
        if found is not None:
            return found
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[: min(len(members) - 1, max(1, round(len(members) * fraction)))])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), out), out


def _group_holdout(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    k = max(2, round(1 / min(fraction, 1 - fraction)))  # one fold held, or one kept
    fold = group_folds(labels, groups, k, seed)
    every = set(np.unique(labels).tolist())
    for one in range(k):  # the first fold that leaves each class on both sides
        held = fold == one if fraction <= 0.5 else fold != one
        if set(labels[held].tolist()) == every == set(labels[~held].tolist()):
            return np.flatnonzero(~held), np.flatnonzero(held)
    return None


def same_groups(first: np.ndarray | None, second: np.ndarray | None) -> int:
    """How many groups (patients) have scans on both sides of a split given as is."""
    if first is None or second is None:
        return 0
    return len(np.intersect1d(first, second))
