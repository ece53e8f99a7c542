"""What to keep in mind about a version, drawn from recorded facts: its card, whether it is
withdrawn, and the figures of the outcomes reported for it. Each caveat is a code a pipeline
can gate on (`GET …/caveats`, and a job's promotion gate `promote.refuse` for those of the
card alone) and a plain sentence the people who decide whether it is used can read.

No clinical judgement is made here beyond "a clinician reads every scan", which is always
said.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from models.card import ModelCard

FEW_SCANS = 200  # below this, a 95% interval of a figure near 0.9 is about 0.1 wide or more
# The caveats the card alone gives, known as the job publishes it (a promotion gate may refuse
# them); the others need the registry (withdrawn) or reported outcomes.
CardCaveat = Literal["no_patients", "patients_in_both", "few_scans", "untuned_threshold",
                     "no_modality"]  # fmt: skip
CARD_CODES = frozenset(get_args(CardCaveat))


def card_caveats(card: ModelCard) -> list[tuple[str, str]]:
    """(code, sentence) for each caveat of the card alone."""
    found = caveats(card, None, {"reports": 0})
    return [(code, text) for code, text in found if code in CARD_CODES]


def caveats(
    card: ModelCard, withdrawn: dict[str, Any] | None, figures: dict[str, Any]
) -> list[tuple[str, str]]:
    """(code, sentence) for each thing to keep in mind, the gravest first."""
    found: list[tuple[str, str]] = []
    if withdrawn:
        found.append(
            ("withdrawn", f"Withdrawn: {withdrawn['reason']}. No service answers with it.")
        )
    data = card.dataset
    if data.split_by == "scan":
        found.append(("no_patients", "Its data named no patients, so one patient's scans may be"
                      " in both training and validation: the figures may be better than on new"
                      " patients."))  # fmt: skip
    if data.patients_in_both:
        found.append(("patients_in_both", f"{data.patients_in_both} patients have scans in both"
                      " training and validation: the figures may be optimistic."))  # fmt: skip
    scans = next((e.images for e in card.estimates.values()), None)
    if scans is not None and scans < FEW_SCANS:
        found.append(("few_scans", f"Its figures rest on {scans} scans: the intervals are wide,"
                      " and the true value may lie anywhere in them."))  # fmt: skip
    if card.threshold is not None and card.threshold.chosen_on == "prior":
        found.append(("untuned_threshold", "Its decision threshold was not tuned: there were too"
                      " few validation scans of a class."))  # fmt: skip
    use = card.intended_use
    if use is None or use.modality is None:
        found.append(("no_modality", "No modality is recorded: scans of any kind are accepted,"
                      " though it learnt from one kind."))  # fmt: skip
    below = figures.get("below_validation") or []
    if below:
        found.append(
            (
                "below_validation",
                f"In service it does worse than its card said"
                f" ({', '.join(below)}): look for a changed scanner or population.",
            )
        )
    if not figures.get("reports"):
        found.append(("nothing_confirmed", "Nothing confirms yet how it does on this site's"
                      " patients: no outcome is reported for its answers."))  # fmt: skip
    found.append(("decision_aid", "It is a decision aid: a clinician reads every scan it"
                  " classifies."))  # fmt: skip
    return found
