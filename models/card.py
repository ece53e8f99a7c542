"""The model card: everything needed to preprocess, run and judge an exported model.

Torch-free on purpose: the inference service reads cards to preprocess exactly as training
did, and must never import torch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FILE = "card.json"
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# An alias (production, staging...): the one definition the registry, both APIs and specs use.
ALIAS_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
"""What a published model may be called (a path segment in the artifact store)."""
ONNX_FILE = "model.onnx"
PRIVATE_CODING_SCHEME = "99SCANTUNE"
"""Where a class the job spec gives no code for is coded: its name, in a private scheme."""
CARD_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How a decoded scan becomes the network's input tensor (N, C, size, size)."""

    size: int = Field(gt=0, description="Square side the scan is resized to, in pixels.")
    channels: Literal[1, 3] = Field(description="1: grayscale input; 3: gray replicated to RGB.")
    mean: tuple[float, ...] = Field(
        description="Per-channel mean subtracted after scaling to [0, 1]."
    )
    std: tuple[float, ...] = Field(description="Per-channel std divided by after the mean.")
    resize: Literal["bilinear"] = "bilinear"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    preprocessing_version: int | None = Field(
        default=None,
        ge=1,
        description=(
            "The version of the decoding and preprocessing the model was trained with"
            " (models.scans.PREPROCESSING_VERSION); none for cards written before it was"
            " recorded."
        ),
    )


class OutputSpec(_Strict):
    """Names of the ONNX graph's inputs and outputs."""

    input: str = "image"
    probabilities: str = "probabilities"
    logits: str = "logits"
    cam: str | None = Field(
        default="cam",
        description=(
            "Class activation maps (N, classes, h, w): the head applied at every position of the"
            " last feature map, before pooling. None when the graph has no such output."
        ),
    )


class DecisionThreshold(_Strict):
    """Operating point for binary tasks, chosen on validation."""

    positive_class: str
    value: float = Field(ge=0.0, le=1.0, description="Predict positive when P(positive) >= value.")
    rule: Literal["youden", "sensitivity", "specificity"] = "youden"
    target: float | None = Field(default=None, description="Target for sensitivity/specificity.")
    sensitivity: float | None = None
    specificity: float | None = None
    # issue 21: how the operating point was chosen
    chosen_on: Literal["out_of_fold", "validation", "prior"] | None = Field(
        default=None,
        description=(
            "out_of_fold: on cross-validated predictions; validation: on the validation split;"
            " prior: too few validation scans to pick one, so 0.5 corrected for the class prior"
            " the model was trained under. None on cards written before it was recorded."
        ),
    )
    chosen_on_images: int | None = Field(
        default=None, ge=0, description="Scans the threshold was chosen on (0 for prior)."
    )


class Estimate(_Strict):
    """A figure with its bootstrap confidence interval (issue 21: honest figures)."""

    value: float
    low: float
    high: float
    level: float = Field(default=0.95, gt=0.0, lt=1.0)
    images: int = Field(ge=0, description="Scans the figure was measured on.")
    source: Literal["out_of_fold", "validation", "reported"] = Field(
        description="out_of_fold: cross-validated predictions; validation: the validation split;"
        " reported: outcomes clients reported for scans the version classified in service."
    )


class Calibration(_Strict):
    temperature: float = Field(gt=0.0)
    applied_in_graph: bool = Field(
        description="True when `probabilities` already divides logits by the temperature."
    )
    ece_before: float | None = None
    ece_after: float | None = None


class Parity(_Strict):
    max_abs_diff: float
    images: int
    tolerance: float


class DatasetInfo(_Strict):
    uri: str
    format: str
    sha256: str
    class_counts: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Per split ('train', 'val'), images per class."
    )
    split_by: Literal["patient", "scan"] | None = Field(
        default=None,
        description="patient: each patient's scans kept on one side of the splits; scan: the"
        " data named no patients (or the job asked for scan by scan). None on older cards.",
    )
    patients: int | None = Field(default=None, ge=0, description="Patients in train + val.")
    patients_in_both: int | None = Field(
        default=None,
        ge=0,
        description="Patients with scans in both train and val: a split the data gave so, or"
        " no deal of whole patients left each class on both sides. 0: none.",
    )


class TrainingInfo(_Strict):
    seconds: float
    device: str
    hardware: str
    epochs_run: int
    best_epoch: int
    seed: int


class ClassCode(_Strict):
    """A class as a coded concept, as DICOM SR and FHIR name findings (e.g. SCT 233604007)."""

    scheme: str = Field(
        min_length=1,
        max_length=16,
        description="Coding scheme designator: SCT, DCM, LN, RADLEX, or 99-prefixed private.",
    )
    value: str = Field(min_length=1, max_length=64, description="Code value in that scheme.")
    meaning: str = Field(min_length=1, max_length=64, description="Human-readable meaning.")


class IntendedUse(_Strict):
    """What the model was trained on: DICOM scans of other modalities are refused."""

    modality: str | None = Field(
        default=None, pattern=r"^[A-Z]{2,16}$", description="DICOM Modality, e.g. CR, DX, CT."
    )
    body_part: str | None = Field(
        default=None, max_length=16, description="DICOM Body Part Examined, e.g. CHEST."
    )
    view: str | None = Field(
        default=None, max_length=16, description="DICOM View Position, e.g. PA, AP."
    )


class ModelNotes(_Strict):
    """What the team that trained the model says of it, in its own words, for the people who
    decide whether it is used (shown on the version's facts page beside the figures): the
    job spec's `notes`, copied into the card unchanged."""

    purpose: str | None = Field(
        default=None, min_length=1, max_length=1000,
        description="What it is for, e.g. 'a second read of adult PA chest films for pneumonia'.",
    )  # fmt: skip
    limitations: tuple[Annotated[str, Field(min_length=1, max_length=300)], ...] = Field(
        default=(), max_length=10,
        description="What it is known not to do well, one point each, e.g. 'not tested on"
        " children'.",
    )  # fmt: skip
    contact: str | None = Field(
        default=None, min_length=1, max_length=255, description="Whom to ask about it."
    )


class ModelAccess(_Strict):
    """Who may see and use a version: everyone with a key (shared), or, when private, only
    the client whose job published it, the clients it names, and admin keys."""

    owner: str = Field(max_length=255, description="The client whose job published it.")
    private: bool = False
    clients: tuple[str, ...] = Field(
        default=(), max_length=50, description="Other clients who may use a private version."
    )

    def allows(self, client: str) -> bool:
        return not self.private or client == self.owner or client in self.clients


class InputProfile(_Strict):
    """What the training scans' pixels look like, for the per-scan check that a scan is
    unlike them (`models.input_profile`): a statistic on pixels, not a guarantee."""

    version: int = Field(
        ge=1,
        description="The statistic's definition (models.input_profile.PROFILE_VERSION); a"
        " service that does not know it skips the check.",
    )
    limit: float = Field(
        gt=0, description="Scans scoring above it are atypical: the training scans' `quantile`."
    )
    quantile: float = Field(gt=0, lt=1, description="The training quantile the limit is.")
    scales: dict[str, float] = Field(
        description="Each distance's divisor (layout, structure, histogram, texture, colour):"
        " its own `quantile` over the training scans, or a floor."
    )
    thumbnail_mean: tuple[tuple[float, ...], ...] = Field(
        description="Per cell of the area-averaged gray thumbnail, the training scans' mean."
    )
    thumbnail_std: tuple[tuple[float, ...], ...] = Field(description="And their std.")
    histogram_mean: tuple[float, ...] = Field(
        description="Per bin of the [0, 1] intensity histogram, the training scans' mean share."
    )
    histogram_std: tuple[float, ...] = Field(description="And its std.")
    texture_mean: float = Field(
        description="Mean of the log mean difference between neighbouring pixels."
    )
    texture_std: float = Field(gt=0, description="And its std.")
    images: int = Field(ge=1, description="Training scans profiled.")
    flagged_train: float = Field(ge=0, le=1, description="Share of training scans over the limit.")
    flagged_val: float | None = Field(
        default=None, ge=0, le=1, description="Share of validation scans over the limit."
    )


class ModelCard(_Strict):
    """Typed card written next to model.onnx; written last when a version is published."""

    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    version: int | None = Field(default=None, description="Set by the registry on publish.")
    task: Literal["classification"] = "classification"
    classes: tuple[str, ...] = Field(min_length=2)
    input: InputSpec
    outputs: OutputSpec = OutputSpec()
    base_model: str
    recipe: dict[str, Any] = Field(default_factory=dict)
    dataset: DatasetInfo
    metrics: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration
    threshold: DecisionThreshold | None = None
    estimates: dict[str, Estimate] = Field(
        default_factory=dict,
        description="auc, sensitivity, specificity (at the threshold) with bootstrap 95% CIs.",
    )
    parity: Parity
    training: TrainingInfo
    packages: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    onnx_file: str = ONNX_FILE
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    lineage: dict[str, Any] = Field(
        default_factory=dict, description="Job id, parent version, source of pretrained weights."
    )
    # Hospital formats (issue 22): coded classes and intended use; none on older cards.
    class_codes: tuple[ClassCode | None, ...] | None = Field(
        default=None,
        description="A code per class, in class order, from the job spec; None: a private code.",
    )
    intended_use: IntendedUse | None = Field(
        default=None, description="Modality, body part and view the model was trained on."
    )
    access: ModelAccess | None = Field(
        default=None, description="Its owner and who may use it; none on older cards: shared."
    )
    input_profile: InputProfile | None = Field(
        default=None,
        description="The training scans' pixels, for flagging a scan unlike them; none on"
        " older cards: no check.",
    )
    notes: ModelNotes | None = Field(
        default=None, description="The training team's own words: purpose, limitations, contact."
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.model_validate_json(text)

    def coded_classes(self) -> tuple[ClassCode, ...]:
        """Each class's code: the job spec's, else its name in the private coding scheme."""
        given = self.class_codes or ()
        return tuple(
            (given[i] if i < len(given) else None)
            or ClassCode(scheme=PRIVATE_CODING_SCHEME, value=name[:64], meaning=name[:64])
            for i, name in enumerate(self.classes)
        )

    def with_version(self, version: int) -> ModelCard:
        return self.model_copy(update={"version": version})
