"""The job spec: what to fine-tune, on which data, how, and what to do with the result.

One pydantic model shared by `scantune train` (YAML), the training API (JSON) and the job
runner. Every field but `model_name` and `dataset.uri` has a default that trains well.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from models.card import MODEL_NAME_PATTERN, ClassCode, IntendedUse, ModelNotes
from models.promote import PromoteSpec
from models.uri import absolute_uri


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassSpec(_Spec):
    """A class with the code hospital formats name it by (DICOM SR, FHIR)."""

    name: str = Field(min_length=1)
    code: ClassCode | None = None


class DatasetSpec(_Spec):
    uri: str = Field(min_length=1, description="A path, file:// or s3://bucket/prefix URI.")
    format: Literal["imagefolder", "npz", "csv"] = Field(
        default="npz",
        description=(
            "npz: train_images (N,H,W) or (N,H,W,3) of uint8, uint16 or floats in [0, 1] and"
            " train_labels, whole numbers 0..K-1 (val_* optional; train_patients and"
            " val_patients, an ID per scan, optional). imagefolder:"
            " root/<class>/* or root/{train,val}/<class>/*. csv: a manifest with path and"
            " label columns (split and patient optional)."
        ),
    )
    val_uri: str | None = Field(
        default=None, description="Separate validation data; default: the source's own split."
    )
    val_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.9, description="Stratified split when there is no val split."
    )
    classes: list[str | ClassSpec] | None = Field(
        default=None,
        description=(
            "Class names in label order; npz labels 0..K-1 map onto these. An entry may be"
            " {name, code: {scheme, value, meaning}} to name the class by a code in reports."
        ),
    )
    intended_use: IntendedUse | None = Field(
        default=None,
        description="Modality (body part, view) of the scans; default: read from DICOM data.",
    )
    limit: int | None = Field(
        default=None, gt=0, description="Use at most this many training images (stratified)."
    )
    split_by: Literal["patient", "scan"] = Field(
        default="patient",
        description=(
            "patient: where the data names patients (a CSV manifest's patient column, else each"
            " DICOM file's Patient ID), the validation split, limit's subsample and"
            " cross-validation folds keep each patient's scans on one side. scan: split scan"
            " by scan."
        ),
    )

    @property
    def class_names(self) -> list[str] | None:
        """The classes' names, in label order (None: the data's own classes)."""
        if self.classes is None:
            return None
        return [c if isinstance(c, str) else c.name for c in self.classes]

    def class_codes(self, names: list[str]) -> tuple[ClassCode | None, ...] | None:
        """The code of each class of `names` (None where the spec gives none), or None when
        the spec codes no class at all."""
        coded = {c.name: c.code for c in self.classes or [] if isinstance(c, ClassSpec) and c.code}
        return tuple(coded.get(n) for n in names) if coded else None


class HeadSpec(_Spec):
    hidden: list[int] = Field(default_factory=list, description="Hidden dense layer widths.")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)


class PhaseSpec(_Spec):
    """One fine-tuning phase: which layer groups train, for how many epochs, at what LR."""

    epochs: int = Field(ge=1)
    unfreeze_from: str | None = Field(
        default=None, description="First trainable group; None trains the head only."
    )
    lr: float = Field(default=1e-3, gt=0.0)
    lr_decay: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Per-group LR multiplier going towards the stem."
    )


class AugmentSpec(_Spec):
    hflip: bool = False
    rotate_degrees: float = Field(default=7.0, ge=0.0, le=45.0)
    translate: float = Field(default=0.05, ge=0.0, le=0.3)
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = Field(default=0.1, ge=0.0, le=0.5)
    contrast: float = Field(default=0.1, ge=0.0, le=0.5)


class ThresholdSpec(_Spec):
    rule: Literal["youden", "sensitivity", "specificity"] = "youden"
    target: float | None = Field(default=None, gt=0.0, lt=1.0)
    positive_class: str | None = Field(default=None, description="Default: the last class.")


class SearchSpec(_Spec):
    """A budgeted hyper-parameter search (issue 21): Optuna TPE with pruning, on OOF AUC."""

    budget_minutes: float = Field(
        gt=0.0, le=1440.0, description="Wall time for the search; the final training is extra."
    )
    folds: int = Field(
        default=3, ge=2, le=10, description="Stratified folds each trial is judged on."
    )
    max_trials: int | None = Field(
        default=None, ge=1, description="Stop after this many trials even within the budget."
    )


class RecipeSpec(_Spec):
    """The transfer-learning recipe; defaults are tuned for small grayscale scan sets."""

    freeze_until: str | None = Field(
        default=None, description="Groups up to and including this one never train."
    )
    head: HeadSpec = HeadSpec()
    phases: list[PhaseSpec] | None = Field(
        default=None, description="Explicit phases; default derives them from `epochs`."
    )
    batch_size: int = Field(default=64, ge=1, le=4096)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    warmup_epochs: float = Field(default=0.5, ge=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)
    mixup_alpha: float = Field(
        default=0.0,
        ge=0.0,
        le=2.0,
        description="Mixup: blend each batch with a shuffled copy by a Beta(alpha, alpha) weight"
        " (e.g. 0.2); 0 turns it off.",
    )
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    augment: AugmentSpec = AugmentSpec()
    channels: Literal[1, 3] = 1
    input_norm: Literal["dataset", "per_scan"] = Field(
        default="dataset",
        description=(
            "dataset: pixels scaled by the backbone's pretraining mean and std only. per_scan:"
            " also standardize each scan to zero mean and unit variance inside the model (and"
            " its ONNX graph), so a site's exposure and contrast settings do not move its inputs."
        ),
    )
    monitor: Literal["val_auc", "val_accuracy", "val_balanced_accuracy", "val_loss"] = "val_auc"
    early_stopping_patience: int = Field(
        default=3,
        ge=0,
        description=(
            "Stop after this many epochs without improvement on a validation split of 50+"
            " scans per class; an epoch of fewer than 64 optimizer steps counts as part of one."
            " 0 disables it."
        ),
    )
    amp: bool = Field(default=True, description="Mixed precision on CUDA (ignored on CPU).")
    threshold: ThresholdSpec = ThresholdSpec()
    num_workers: int = Field(default=0, ge=0)
    # issue 21: cross-validated ensembles, TTA in the graph, a schedule sized in steps
    cv_folds: int = Field(
        default=0,
        ge=0,
        le=10,
        description=(
            "k >= 2: pool train + validation, train one model per stratified fold and export"
            " their average as one ONNX model; figures, calibration and the threshold come from"
            " out-of-fold predictions. 0: one model, judged on the validation split."
        ),
    )
    tta_hflip: bool = Field(
        default=False,
        description="Average each model's outputs over the scan and its mirror, in the graph.",
    )
    schedule_steps: int | None = Field(
        default=400,
        ge=1,
        le=1_000_000,
        description=(
            "With `epochs` unset: train for at least this many optimizer steps, so small sets"
            " get more passes (at least 6 epochs, at most 500). null: 6 epochs whatever the"
            " size. An explicit `epochs` wins."
        ),
    )
    search: SearchSpec | None = Field(
        default=None,
        description=(
            "Search lr, weight decay, label smoothing, augmentation strength and epochs for"
            " this many minutes on out-of-fold AUC, then train the best configuration."
        ),
    )
    ema_decay: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description=(
            "Keep an exponential moving average of the weights, updated every step with this"
            " decay (e.g. 0.99); validate, select and export the average."
        ),
    )
    small_val: Literal["select_best", "last_epoch"] = Field(
        default="last_epoch",
        description=(
            "With fewer than 50 validation scans of some class: run the whole schedule and keep"
            " the last weights (default; bench/quality.py: better and steadier at 500 and 1,000"
            " scans), or still stop early and keep the best epoch on them."
        ),
    )


class WebhookSpec(_Spec):
    url: HttpUrl


class ResourcesSpec(_Spec):
    gpus: int = Field(default=0, ge=0, le=8)
    memory: str = Field(default="8Gi", pattern=r"^[0-9]+(Mi|Gi)$")
    cpu: str = Field(default="2", pattern=r"^[0-9]+(\.[0-9]+)?m?$")


class AccessSpec(_Spec):
    """Who may see and use the published version besides admin keys (default: the training
    service's `models_private`, shared unless a deployment sets it)."""

    private: bool = Field(
        description="Only the job's client and `clients` may list, read or use the version."
    )
    clients: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Other clients (as API keys name them) who may use a private version.",
    )

    @field_validator("clients")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        if any(not 1 <= len(c) <= 255 for c in value):
            raise ValueError("a client name has 1 to 255 characters")
        return sorted(set(value))

    @model_validator(mode="after")
    def _clients_of_private(self) -> AccessSpec:
        if self.clients and not self.private:
            raise ValueError("`clients` applies to a private version only: shared is everyone's")
        return self


class JobSpec(_Spec):
    model_name: str = Field(pattern=MODEL_NAME_PATTERN)
    dataset: DatasetSpec
    base_model: str = "efficientnet_lite0"
    pretrained: bool = True
    weights_uri: str | None = Field(
        default=None, description="Pretrained weights file or s3:// URI (torchvision state dict)."
    )
    image_size: int = Field(default=64, ge=16, le=1024)
    epochs: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description=(
            "Passes over the training scans. Default: sized by `recipe.schedule_steps` for the"
            " data (6 for about 5,000 scans, more for small sets)."
        ),
    )
    seed: int = 0
    recipe: RecipeSpec = RecipeSpec()
    promote: PromoteSpec | None = None
    webhook: WebhookSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    access: AccessSpec | None = None
    notes: ModelNotes | None = Field(
        default=None,
        description="What the team says of the model (purpose, limitations, contact): kept in"
        " its card and shown on its facts page.",
    )

    def with_absolute_paths(self) -> JobSpec:
        """This spec with relative local `dataset.uri`, `dataset.val_uri` and `weights_uri`
        made absolute against the current directory: resolved once, where written."""
        dataset = self.dataset.model_copy(
            update={
                "uri": absolute_uri(self.dataset.uri),
                "val_uri": self.dataset.val_uri and absolute_uri(self.dataset.val_uri),
            }
        )
        weights = self.weights_uri and absolute_uri(self.weights_uri)
        return self.model_copy(update={"dataset": dataset, "weights_uri": weights})

    @model_validator(mode="after")
    def _binary_gate(self) -> JobSpec:
        """A gate on the threshold's figures needs two classes, when the spec names them."""
        names = self.dataset.class_names
        if self.promote is None or names is None or len(names) == 2:
            return self
        asked = [f"min_lower.{k}" for k in self.promote.min_lower] + [
            f"min.{k}" for k in self.promote.min if k.endswith("accuracy_at_threshold")
        ]
        if asked:
            raise ValueError(
                f"promote {', '.join(asked)}: the card has a decision threshold, and its"
                f" figures, for two classes only; this dataset names {len(names)}"
            )
        return self

    @field_validator("base_model")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from models.backbones import BACKBONES  # torch-free registry of names

        if value not in BACKBONES:
            raise ValueError(f"unknown base model {value!r}; choose one of {sorted(BACKBONES)}")
        return value
