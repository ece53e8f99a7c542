"""The IHE IOCM Rejection Note that voids a recalled model's results in a PACS: a Key Object
Selection Document (highdicom's `KeyObjectSelectionDocument`, TID 2010) titled (113037, DCM,
"Rejected for Patient Safety Reasons"), in the SR's study, referencing the SR and its attention
maps in the Current Requested Procedure Evidence Sequence and in the content tree. An archive
that implements IOCM hides (or deletes) what such a note references; viewers suppress both.

Its UIDs derive from the SR's SOP Instance UID, so a note built again for a resend is the same
instance: an archive that has it already answers so (dcm4chee: 0xA770, duplicate rejection note)
rather than keeping two.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from service.hospital.results import ReportSettings
from service.hospital.sr import COPIED, STUDY_REQUIRED, TYPE2, new_uid
from service.hospital.sr_findings import NotReportable

if TYPE_CHECKING:
    from pydicom import Dataset

TITLE = ("113037", "DCM", "Rejected for Patient Safety Reasons")
"""CID 7010/7031's title for instances withdrawn because using them could harm a patient."""
SERIES_OFFSET = 2
"""The note's Series Number: the SR's plus this (the maps' series is the SR's plus one)."""
UT_MAX = 2**32 - 2
"""Text Value (UT) holds at most this many bytes; a reason is cut to it (UTF-8, 4 bytes a
character at most, so a quarter of it in characters is always safe)."""


def build_rejection_note(
    sr: Dataset, maps: Sequence[Dataset] = (), reason: str = "", uid_root: str | None = None
) -> bytes:
    """The IOCM rejection note of `sr` and `maps` as DICOM Part 10 bytes (Explicit VR Little
    Endian). Patient and Study are the SR's; `reason` (free text, no patient data) becomes the
    Key Object Description, an optional row of TID 2010 (dcm4che's `mkkos`, which makes rejection
    notes, writes one too). Built again, only the instance's timestamps differ. Raises
    NotReportable when the SR or a map lacks the UIDs a reference needs, or a map is of another
    study."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    header = _header(sr)
    _check_maps(maps, str(header.StudyInstanceUID))
    series_uid, instance_uid = rejection_uids(sr, uid_root)
    text = reason.strip()[: UT_MAX // 4] or None
    now = datetime.now(UTC)
    note = hd.ko.KeyObjectSelectionDocument(
        evidence=[header, *maps],
        content=hd.ko.KeyObjectSelection(
            document_title=Code(*TITLE),
            referenced_objects=[header, *maps],
            description=text,
        ),
        series_instance_uid=series_uid,
        series_number=int(sr.get("SeriesNumber") or ReportSettings().series_number) + SERIES_OFFSET,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=sr.get("Manufacturer"),
        content_date=now.date(),
        content_time=now.time(),
        specific_character_set=_charset(header, text),
    )
    # highdicom copies only the type 1/2 Patient and Study attributes; the SR's others too
    # (issuer, other IDs, study description), so the PACS files the note where the SR is
    for element in header:
        if element.keyword in COPIED and element.keyword != "SpecificCharacterSet":
            note[element.tag] = element
    _stamp(note, now)
    note.SeriesDescription = TITLE[2]
    out = io.BytesIO()
    note.save_as(out, enforce_file_format=True)
    return out.getvalue()


def rejection_uids(sr: Dataset, uid_root: str | None = None) -> tuple[str, str]:
    """(series, instance) UIDs of the note, derived from the SR's SOP Instance UID: built again,
    the same note (a resend is the same instance to a PACS)."""
    sop_uid = sr.get("SOPInstanceUID")
    if not sop_uid:
        raise NotReportable("the SR has no SOPInstanceUID: no rejection note can name it")
    return (
        _uid(uid_root, "iocm-rejection-series", str(sop_uid)),
        _uid(uid_root, "iocm-rejection-instance", str(sop_uid)),
    )


def _stamp(note: Dataset, now: datetime) -> None:
    """One instant (UTC) for every timestamp: highdicom takes local time for some of them."""
    note.InstanceCreationDate, note.InstanceCreationTime = note.ContentDate, note.ContentTime
    for item in note.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S.%f+0000")


def _uid(uid_root: str | None, *entropy: str) -> str:
    """A UID that `entropy` determines (the same note, built again, is the same instance)."""
    return new_uid(ReportSettings(uid_root=uid_root), *entropy)


def _header(sr: Dataset) -> Dataset:
    """The SR's UIDs, Patient and Study attributes: the note's evidence and header source.
    Type 2 attributes the SR lacks are present and empty, as in the SR `sr.build_sr` writes."""
    from pydicom import Dataset

    missing = [k for k in STUDY_REQUIRED if not sr.get(k)]
    if missing:
        raise NotReportable(f"the SR has no {', '.join(missing)}: a rejection note must name it")
    header = Dataset()
    for keyword in (*STUDY_REQUIRED, *COPIED):
        if keyword in sr:
            header[keyword] = sr[keyword]
        elif keyword in TYPE2:
            setattr(header, keyword, None)
    return header


def _check_maps(maps: Sequence[Dataset], study_uid: str) -> None:
    """Every map names itself and sits in the SR's study: a rejection note covers one study
    (highdicom would leave a map of another study out of the evidence without a word)."""
    for i, image in enumerate(maps):
        missing = [k for k in STUDY_REQUIRED if not image.get(k)]
        if missing:
            raise NotReportable(f"map {i + 1} has no {', '.join(missing)}")
        if str(image.StudyInstanceUID) != study_uid:
            raise NotReportable(f"map {i + 1} is of another study than the SR")


def _charset(header: Dataset, text: str | None) -> str | Sequence[str] | None:
    """The SR's character set; UTF-8 when the reason needs more than ASCII and the SR declares
    none (its values are then ASCII, which UTF-8 holds as they are). A reason outside a declared
    set is written with replacement characters (pydicom warns)."""
    declared = header.get("SpecificCharacterSet")
    if declared or text is None or text.isascii():
        return declared  # type: ignore[no-any-return]
    return "ISO_IR 192"
