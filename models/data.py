"""Datasets for fine-tuning: image folders, MedMNIST-style npz, CSV manifests; local or s3://.

`load_dataset` reads and checks everything before training starts: every problem found (missing
or unreadable file, unknown label, empty class, fewer than two classes, missing split arrays)
is reported together in one `DataError`, each with the file or array it concerns. Images are
decoded and prepared with `models.scans`, exactly as the inference service will.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from models import scans, splits
from models.card import DatasetInfo, IntendedUse
from models.input_profile import colourfulness
from models.intended_use import from_dicom_files
from models.listing import DataError, Item, Listing
from models.npz import read_npz
from models.spec import DatasetSpec
from models.uri import UriError, fetch, is_s3, sha256_file, sha256_tree


@dataclass
class Split:
    """Prepared images (N, C, size, size) float32 in [0, 1], labels and file names."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    groups: np.ndarray | None = None  # each scan's patient (`models.splits`); None: unnamed
    colour: np.ndarray | None = None  # each scan's `input_profile.colourfulness`; None: unmeasured


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split
    uri: str
    format: str
    sha256: str
    intended_use: IntendedUse | None = None  # read from DICOM training files
    split_by: Literal["patient", "scan"] = "scan"  # patient: splits keep patients whole
    patients: int | None = None  # how many, in training and validation
    patients_in_both: int = 0  # with scans in both (a split given so, or no clean deal)

    def class_counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {c: int((s.labels == i).sum()) for i, c in enumerate(self.classes)}
            for split, s in (("train", self.train), ("val", self.val))
        }

    def info(self) -> DatasetInfo:
        """What the card records of it."""
        return DatasetInfo(
            uri=self.uri,
            format=self.format,
            sha256=self.sha256,
            class_counts=self.class_counts(),
            split_by=self.split_by,
            patients=self.patients,
            patients_in_both=self.patients_in_both if self.patients else None,
        )


def load_dataset(
    spec: DatasetSpec,
    *,
    size: int,
    channels: int,
    seed: int = 0,
    cache_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
) -> Dataset:
    """Read, check, split and prepare the dataset named by `spec`; raise `DataError` if bad."""
    scans.configure()  # one GDCM helper: the loader decodes one scan at a time
    cache = cache_dir or Path.cwd() / ".data-cache"
    listing = _read(spec.uri, spec, cache, s3_endpoint_url)
    sha = listing.sha256
    if spec.val_uri:
        val_listing = _read(spec.val_uri, spec, cache, s3_endpoint_url)
        listing = _merge_val(listing, val_listing)
        sha = hashlib.sha256((listing.sha256 + val_listing.sha256).encode()).hexdigest()
    problems = list(listing.problems)
    by_patient = _patients_named(listing, spec.split_by == "patient")
    train, val = _splits(listing, spec, seed, by_patient)
    problems += _class_problems(listing.classes, train, problems)
    train_split = _prepare(train, size, channels, problems)
    val_split = _prepare(val, size, channels, problems)
    if not problems and len(val_split.labels) == 0:
        problems.append("validation split: no images")
    if problems:
        raise DataError(problems)
    use = from_dicom_files(it.path for it in train if it.path)
    found = Dataset(listing.classes, train_split, val_split, spec.uri, spec.format, sha, use)
    if by_patient and train_split.groups is not None and val_split.groups is not None:
        every = np.concatenate([train_split.groups, val_split.groups])
        found.split_by, found.patients = "patient", len(np.unique(every))
        found.patients_in_both = splits.same_groups(train_split.groups, val_split.groups)
    return found


def _read(uri: str, spec: DatasetSpec, cache: Path, endpoint: str | None) -> Listing:
    try:
        path = _fetch(uri, spec.format, cache, endpoint)
    except (UriError, OSError) as exc:
        raise DataError([f"{uri}: cannot read dataset ({exc})"]) from exc
    reader = {"npz": read_npz, "imagefolder": read_imagefolder, "csv": read_csv}[spec.format]
    return reader(path, spec.class_names)


def _fetch(uri: str, fmt: str, cache: Path, endpoint: str | None) -> Path:
    if fmt == "csv" and is_s3(uri) and uri.endswith(".csv"):
        # The manifest's images sit next to it: fetch the whole prefix.
        parent, name = uri.rsplit("/", 1)
        return fetch(parent, cache, endpoint_url=endpoint) / name
    return fetch(uri, cache, endpoint_url=endpoint)


def _merge_val(main: Listing, extra: Listing) -> Listing:
    problems = main.problems + extra.problems
    if extra.classes != main.classes:
        problems.append(
            f"val_uri classes {extra.classes} differ from training classes {main.classes}"
        )
    val = extra.train + (extra.val or [])
    return Listing(main.classes, main.train, val, problems, main.sha256)


def _patients_named(listing: Listing, wanted: bool) -> bool:
    """Whether the data names patients: a CSV `patient` column, else the DICOM files' Patient
    ID (read here, kept only as `splits.group_id`); a scan naming none stands alone. Not
    `wanted` (`split_by: scan`): none are kept."""
    items = listing.train + (listing.val or [])
    if not wanted:
        for it in items:
            it.group = None
        return False
    if not any(it.group is not None for it in items):
        for it in items:
            patient = splits.patient_in_dicom(it.path) if it.path else None
            it.group = None if patient is None else splits.group_id("patient", patient)
    named = any(it.group is not None for it in items)
    for it in items if named else ():
        if it.group is None:
            it.group = splits.group_id("scan", it.name)
    return named


def _splits(
    listing: Listing, spec: DatasetSpec, seed: int, by_patient: bool
) -> tuple[list[Item], list[Item]]:
    train, val = listing.train, listing.val
    if val is None:
        train, val = splits.split_items(train, spec.val_fraction, seed, by_patient)
    if spec.limit is not None and spec.limit < len(train):
        train, _ = splits.split_items(train, 1 - spec.limit / len(train), seed, by_patient)
    return train, val


def _class_problems(classes: list[str], train: list[Item], known: list[str]) -> list[str]:
    if len(classes) < 2:
        return [f"fewer than 2 classes: found {classes}"]
    seen = {it.label for it in train}
    reported = "\n".join(known)  # an empty class folder is already named with its path
    return [
        f"class {c!r}: empty class (no training images)"
        for i, c in enumerate(classes)
        if i not in seen and f"{c}/: empty class" not in reported
    ]


def _prepare(items: list[Item], size: int, channels: int, problems: list[str]) -> Split:
    images = np.zeros((len(items), channels, size, size), dtype=np.float32)
    colour = np.zeros(len(items), dtype=np.float32)
    ok = np.ones(len(items), dtype=bool)
    for i, item in enumerate(items):
        try:
            decoded = item.load()
        except scans.ImageDecodeError as exc:
            problems.append(f"{item.name}: unreadable file ({exc.reason})")
            ok[i] = False
            continue
        images[i], colour[i] = scans.prepare(decoded, size, channels), colourfulness(decoded)
    labels = np.array([it.label for it in items], dtype=np.int64)
    named = [it.name for it, good in zip(items, ok, strict=True) if good]
    if not items or items[0].group is None:
        return Split(images[ok], labels[ok], named, colour=colour[ok])
    groups = np.array([it.group for it in items], dtype=np.int64)
    return Split(images[ok], labels[ok], named, groups[ok], colour[ok])


# --- image folders -------------------------------------------------------------------------


def read_imagefolder(path: Path, classes: list[str] | None) -> Listing:
    """root/<class>/*, or root/train/<class>/* with optional root/val/<class>/*."""
    if not path.is_dir():
        raise DataError([f"{path}: not a folder"])
    train_root = path / "train" if (path / "train").is_dir() else path
    val_root = path / "val" if train_root != path and (path / "val").is_dir() else None
    problems: list[str] = []
    names = classes or sorted(d.name for d in _class_dirs(train_root))
    train = _folder_items(train_root, path, names, problems)
    val = None if val_root is None else _folder_items(val_root, path, names, problems)
    return Listing(names, train, val, problems, sha256_tree(path))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_items(root: Path, base: Path, names: list[str], problems: list[str]) -> list[Item]:
    items: list[Item] = []
    for folder in _class_dirs(root):
        rel = folder.relative_to(base).as_posix()
        if folder.name not in names:
            problems.append(f"{rel}/: unknown label {folder.name!r} (classes {names})")
            continue
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            problems.append(f"{rel}/: empty class (no images)")
        label = names.index(folder.name)
        items += [Item(f.relative_to(base).as_posix(), label, _file_loader(f), f) for f in files]
    return items


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: scans.read_file(path)


# --- CSV manifest -------------------------------------------------------------------------


def read_csv(path: Path, classes: list[str] | None) -> Listing:
    """`path,label[,split][,patient]` rows; paths relative to the CSV; split is train or
    val; patient names whose scan it is (any ID: only its hash is kept)."""
    if path.is_dir():
        path = path / "manifest.csv"
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError([f"{path.name}: unreadable CSV manifest ({exc})"]) from exc
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError([f"{path.name}: needs a header with 'path' and 'label' columns"])
    names = classes or sorted({r["label"] for r in rows})
    problems: list[str] = []
    by_split: dict[str, list[Item]] = {"train": [], "val": []}
    digest = hashlib.sha256(path.read_bytes())
    for line, row in enumerate(rows, start=2):
        item = _csv_item(path, line, row, names, problems)
        if item is not None:
            digest.update(bytes.fromhex(sha256_file(path.parent / row["path"])))
            by_split[(row.get("split") or "train").strip()].append(item)
    val = by_split["val"] if any(r.get("split") for r in rows) else None
    return Listing(names, by_split["train"], val, problems, digest.hexdigest())


def _csv_item(
    path: Path, line: int, row: dict[str, str], names: list[str], problems: list[str]
) -> Item | None:
    where = f"{path.name} line {line} ({row['path']})"
    if row["path"] is None or row["label"] is None:
        problems.append(f"{path.name} line {line}: fewer fields than the header names")
        return None
    relative = PurePosixPath(row["path"])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        problems.append(f"{where}: paths must be relative and stay inside the manifest's folder")
        return None
    file = path.parent / relative
    split = (row.get("split") or "train").strip()
    if split not in ("train", "val"):
        problems.append(f"{where}: unknown split {split!r} (train or val)")
    elif row["label"] not in names:
        problems.append(f"{where}: unknown label {row['label']!r} (classes {names})")
    elif not file.is_file():
        problems.append(f"{where}: missing file")
    else:
        patient = (row.get("patient") or "").strip()  # optional: whose scan it is
        group = splits.group_id("patient", patient) if patient else None
        return Item(row["path"], names.index(row["label"]), _file_loader(file), file, group)
    return None
