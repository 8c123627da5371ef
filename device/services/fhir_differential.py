"""The differential and the review record in the FHIR export (``device/services/fhir.py`` assembles them).

One Observation per class of the differential, each a percentage of the counted white cells (UCUM ``%``) with
the class's count as a component. The LOINC codes are those of the LOINC "Manual Differential panel - Blood"
(24318-8): Blasts/100 leukocytes in Blood 26446-5 (the existing ``blast-percentage`` Observation),
Neutrophils 26511-6, Lymphocytes 26478-8, Monocytes 26485-3, Eosinophils 26450-7, Basophils 30180-4; the
"other" white cells have the manual-count code 51586-6 (Other cells/Leukocytes in Blood by Manual count).
"normal" (a normal white cell whose class nobody gave) has no LOINC code: it is coded in the device's own
system (``urn:allscope:observation#unclassified-white-cells``). The percentages are over white cells counted
partly by the AI (blast / not blast) and partly by a reviewer: the Observations' method and the report's
``urn:allscope:fhir:review`` extension say exactly which.
"""

from __future__ import annotations

from device.services.differential import summary_differential, summary_review

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:allscope:observation"

# class -> (system, code, display); blasts are the report's "blast-percentage" Observation (26446-5)
DIFFERENTIAL_CODES = {
    "neutrophil": (LOINC, "26511-6", "Neutrophils/100 leukocytes in Blood"),
    "lymphocyte": (LOINC, "26478-8", "Lymphocytes/100 leukocytes in Blood"),
    "monocyte": (LOINC, "26485-3", "Monocytes/100 leukocytes in Blood"),
    "eosinophil": (LOINC, "26450-7", "Eosinophils/100 leukocytes in Blood"),
    "basophil": (LOINC, "30180-4", "Basophils/100 leukocytes in Blood"),
    "other": (LOINC, "51586-6", "Other cells/Leukocytes in Blood by Manual count"),
    "normal": (LOCAL, "unclassified-white-cells", "Normal white cells, class not given /100 white cells counted"),
}
COUNT_CODE = {"coding": [{"system": LOCAL, "code": "cells-counted", "display": "Cells of this class counted"}],
              "text": "Cells of this class counted"}


def count_component(count: int) -> dict:
    return {"code": COUNT_CODE, "valueInteger": int(count)}


def percentage_value(percentage: float | None) -> dict:
    if percentage is None:
        return {"dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                 "code": "not-a-number"}],
                                     "text": "no white cell was counted"}}
    return {"valueQuantity": {"value": percentage, "unit": "%", "system": UCUM, "code": "%"}}


def differential_observations(summary: dict, observation) -> list[dict]:
    """One Observation per class but blasts (see the module docstring); ``observation(id, code, value)`` makes
    one with the report's common members."""
    out = []
    for row in summary_differential(summary)["rows"]:
        if row["label"] not in DIFFERENTIAL_CODES:
            continue
        system, code, display = DIFFERENTIAL_CODES[row["label"]]
        out.append(observation(f"differential-{row['label']}",
                               {"coding": [{"system": system, "code": code, "display": display}],
                                "text": f"{row['name']} / 100 white cells counted"},
                               {**percentage_value(row["percentage"]), "component": [count_component(row["count"])]}))
    return out


def method_text(summary: dict) -> str:
    """What produced the figures and exactly what a person reviewed."""
    return ("Automated cell finding and CNN classification (allscope, decision support: the AI answers blast or "
            "not); white cell classes from the reviewer. " + summary_review(summary)["statement"])
